//! Deployment tests: the static checks of `deploy/k8s` and `docker-compose.yml`
//! (`deploy/check-static.sh`: Kubernetes schemas offline, every flag and env name
//! the manifests use exists in `headcount --help`, the wiring), then the fault
//! test of a real three-node cluster in Docker (`deploy/fault-test.sh`: kill,
//! partition, restart, graceful stop, scale, down). The scripts' output streams
//! straight to the terminal; the fault test prints a table of what it measured.
//!
//! Both use the debug `headcount` binary next to this test (built with
//! `cargo build -p headcount` first, a no-op when it is up to date), so no
//! release build is needed. Without a Docker engine the fault test prints
//! "skipped: no Docker engine" and passes. Needs bash and python3 (the scripts
//! pip-install what they need into target/deploy-venv).

use std::{path::Path, process::Command, time::Instant};

use headcount_tests::{headcount_binary, repo_root};

fn run_script(script: &str, binary: &Path) {
    let started = Instant::now();
    eprintln!("==> {script} (HEADCOUNT_BINARY={})", binary.display());
    let status = Command::new("bash")
        .arg(repo_root().join(script))
        .current_dir(repo_root())
        .env("HEADCOUNT_BINARY", binary)
        .status()
        .unwrap_or_else(|error| panic!("cannot run {script}: {error}"));
    eprintln!("==> {script}: {status} after {:.1} s", started.elapsed().as_secs_f64());
    assert!(status.success(), "{script} failed ({status}); its output is above");
}

#[test]
fn deploy_files_check_and_cluster_survives_faults_in_docker() {
    let binary = headcount_binary();
    run_script("deploy/check-static.sh", &binary);
    run_script("deploy/fault-test.sh", &binary);
}
