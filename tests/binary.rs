//! The `headcount` binary as an operator runs it: a bad flag value exits at
//! once with one line naming the flag, and a secret given on the command
//! line (visible to every local user in the process list) draws a warning,
//! while the same secret from the environment does not.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use headcount_tests::headcount_binary;

const SECRET: &str = "a-cluster-secret-for-the-binary";

/// Runs the binary on ephemeral loopback ports with `args` and `env`.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
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

/// The node's log lines up to and including "node started"; kills it.
fn log_until_started(mut child: Child) -> Vec<String> {
    let stderr = child.stderr.take().expect("stderr piped");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) {
        let started = line.contains("node started");
        seen.push(line);
        if started {
            break;
        }
    }
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
