//! The `headcount` binary as an operator runs it: a bad flag value exits at
//! once with one line naming the flag, and a secret given on the command
//! line (visible to every local user in the process list) draws a warning,
//! while the same secret from the environment does not. Visit history
//! survives `kill -9` once flushed, and neither the store nor the log ever
//! holds a client's IP or User-Agent.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use headcount_tests::{eventually, get_json, headcount_binary};
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};

const SECRET: &str = "a-cluster-secret-for-the-binary";

/// Runs the binary on ephemeral loopback ports with `args` and `env`,
/// keeping no history.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut args = args.to_vec();
    args.push("--no-history");
    spawn_keeping_history(&args, env)
}

/// Runs the binary on ephemeral loopback ports with `args` and `env`.
fn spawn_keeping_history(args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(headcount_binary())
        .args([
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
        ])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("headcount starts")
}

/// The log lines of `child`, as they come.
fn log_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr piped");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    lines
}

/// The lines of `lines` up to and including "node started".
fn until_started(lines: &mpsc::Receiver<String>) -> Vec<String> {
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) {
        let started = line.contains("node started");
        seen.push(line);
        if started {
            break;
        }
    }
    seen
}

/// The node's log lines up to and including "node started"; kills it.
fn log_until_started(mut child: Child) -> Vec<String> {
    let seen = until_started(&log_lines(&mut child));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().any(|line| line.contains("node started")),
        "never started: {seen:#?}"
    );
    seen
}

#[test]
fn a_short_cluster_secret_exits_with_one_line_naming_the_flag() {
    let output = spawn(&["--cluster-secret", "short"], &[])
        .wait_with_output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("--cluster-secret"), "{stderr}");
}

#[test]
fn a_secret_on_the_command_line_is_warned_about_and_one_from_the_environment_is_not() {
    let warned = |lines: &[String]| lines.iter().any(|line| line.contains("visible to every local user"));
    let argv = log_until_started(spawn(&["--cluster-secret", SECRET], &[]));
    assert!(warned(&argv), "{argv:#?}");
    let env = log_until_started(spawn(&[], &[("HEADCOUNT_CLUSTER_SECRET", SECRET)]));
    assert!(!warned(&env), "{env:#?}");
    assert!(
        !argv.iter().chain(&env).any(|line| line.contains(SECRET)),
        "the secret itself is never logged"
    );
}

const CLIENT_IP: &str = "203.0.113.77";
const USER_AGENT: &str = "HeadcountPrivacyProbe/1.0";
const PAGE: &str = "example.com/private";

/// A node of the binary with its history in `dir`, trusting the loopback
/// proxy, logging everything; its log lines so far and its HTTP address.
fn history_node(dir: &TempDir) -> (Child, mpsc::Receiver<String>, Vec<String>, String) {
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let mut child = spawn_keeping_history(
        &[
            "--data-dir",
            data_dir,
            "--flush-interval",
            "300ms",
            "--trusted-proxies",
            "127.0.0.1",
        ],
        &[("RUST_LOG", "debug")],
    );
    let lines = log_lines(&mut child);
    let log = until_started(&lines);
    let http = log
        .iter()
        .find_map(|line| line.split("http_addr=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the start line names the HTTP address")
        .to_owned();
    (child, lines, log, http)
}

async fn visit(http: &str) {
    let mut request = format!("ws://{http}/ws/{PAGE}").into_client_request().expect("request");
    let headers = request.headers_mut();
    headers.insert("x-forwarded-for", HeaderValue::from_static(CLIENT_IP));
    headers.insert("user-agent", HeaderValue::from_static(USER_AGENT));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("upgrade");
    let _ = socket.close(None).await;
}

async fn views(http: &str) -> u64 {
    let (status, body) = get_json(http.parse().expect("addr"), &format!("/stats/{PAGE}")).await;
    assert_eq!(status, 200, "{body}");
    body["views"].as_u64().expect("views")
}

async fn pending_views(http: &str) -> Option<String> {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|line| line.starts_with("headcount_history_pending_views "))
        .map(str::to_owned)
}

/// Every file under `dir`, read whole.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").map_while(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push((path.clone(), std::fs::read(&path).expect("read file")));
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_views_survive_kill_9_and_nobody_is_written_down() {
    let dir = TempDir::new().expect("tempdir");
    let (mut child, lines, mut log, http) = history_node(&dir);
    for _ in 0..20 {
        visit(&http).await;
    }
    eventually(Duration::from_secs(10), "every view flushed", || async {
        views(&http).await == 20 && pending_views(&http).await.as_deref() == Some("headcount_history_pending_views 0")
    })
    .await;
    child.kill().expect("kill -9");
    child.wait().expect("exits");
    log.extend(lines.try_iter());

    let (mut child, lines, restarted_log, http) = history_node(&dir);
    log.extend(restarted_log);
    assert_eq!(views(&http).await, 20, "kill -9 lost flushed views");
    visit(&http).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    assert!(child.wait().expect("exits").success(), "SIGTERM is a clean exit");
    log.extend(lines.iter());

    let files = files_under(dir.path());
    assert!(!files.is_empty(), "the store is under --data-dir");
    let ip_bytes = CLIENT_IP.parse::<std::net::Ipv4Addr>().expect("ip").octets();
    for (path, bytes) in &files {
        for needle in [CLIENT_IP.as_bytes(), USER_AGENT.as_bytes(), &ip_bytes[..]] {
            assert!(!contains(bytes, needle), "{} holds {needle:?}", path.display());
        }
    }
    assert!(log.iter().any(|line| line.contains("DEBUG")), "the log was verbose");
    for line in &log {
        assert!(
            !line.contains(CLIENT_IP) && !line.contains(USER_AGENT),
            "logged: {line}"
        );
    }
}

#[test]
fn a_data_dir_in_use_exits_with_one_line_naming_the_flag() {
    let dir = TempDir::new().expect("tempdir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let mut first = spawn_keeping_history(&["--data-dir", data_dir], &[]);
    let lines = log_lines(&mut first);
    assert!(
        until_started(&lines).iter().any(|line| line.contains("node started")),
        "the first node starts"
    );
    let second = spawn_keeping_history(&["--data-dir", data_dir], &[])
        .wait_with_output()
        .expect("runs");
    let _ = first.kill();
    let _ = first.wait();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|line| line.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("--data-dir") && errors[0].contains("in use"),
        "{stderr}"
    );
}
