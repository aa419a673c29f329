//! `headcount-probe`: a tiny HTTP health probe for the headcount container image.
//!
//! The runtime image is built FROM scratch (or distroless) and has no shell,
//! curl or wget, so Docker/compose healthchecks run this instead. It uses only
//! the Rust standard library and is compiled with plain `rustc` (it is not a
//! workspace crate): see deploy/build-image.sh and deploy/Dockerfile.
//!
//! Usage: `headcount-probe [PATH]` (default `/readyz`). It sends `GET PATH` to
//! this container's own HTTP listener and exits 0 on a 2xx answer, 1 otherwise.
//! The address is `HEADCOUNT_PROBE_ADDR` if set, else the node's own
//! `HEADCOUNT_HTTP` (an all-interfaces address such as `0.0.0.0:8080` is probed
//! on loopback), else `127.0.0.1:8080`.

use std::{
    env,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs},
    process::ExitCode,
    time::Duration,
};

const TIMEOUT: Duration = Duration::from_secs(3);

fn target() -> Result<SocketAddr, String> {
    let raw = env::var("HEADCOUNT_PROBE_ADDR")
        .or_else(|_| env::var("HEADCOUNT_HTTP"))
        .unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let mut addr = raw
        .to_socket_addrs()
        .map_err(|error| format!("{raw}: {error}"))?
        .next()
        .ok_or_else(|| format!("{raw}: no address"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(addr)
}

fn probe(path: &str) -> Result<String, String> {
    let addr = target()?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|error| format!("{addr}: {error}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|error| error.to_string())?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(|error| error.to_string())?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: headcount-probe\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|error| format!("{addr}: {error}"))?;
    let mut response = Vec::new();
    let _ = stream.take(64 * 1024).read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default().to_owned();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok());
    match code {
        Some(200..=299) => Ok(format!("{addr}{path}: {status_line}")),
        _ => Err(format!(
            "{addr}{path}: {}",
            if status_line.is_empty() {
                "no answer"
            } else {
                &status_line
            }
        )),
    }
}

fn main() -> ExitCode {
    let path = env::args().nth(1).unwrap_or_else(|| "/readyz".to_owned());
    if path == "-h" || path == "--help" {
        println!("usage: headcount-probe [PATH]   (GET PATH on HEADCOUNT_PROBE_ADDR or HEADCOUNT_HTTP; exit 0 on 2xx)");
        return ExitCode::SUCCESS;
    }
    match probe(&path) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(line) => {
            eprintln!("unhealthy: {line}");
            ExitCode::FAILURE
        }
    }
}
