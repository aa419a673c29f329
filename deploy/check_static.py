#!/usr/bin/env python3
"""Static checks of the deployment files (run by deploy/check-static.sh).

1. Every Kubernetes manifest in deploy/k8s validates against the Kubernetes
   OpenAPI schemas, offline and strict (kubernetes-validate), for an older and
   the newest bundled Kubernetes version.
2. Every flag (--foo) and HEADCOUNT_* environment name that docker-compose.yml,
   deploy/k8s/*.yaml and deploy/Dockerfile hand to the node exists in the
   output of `headcount --help`.
3. The wiring the issue asks for is there: headless peers Service with
   publishNotReadyAddresses as the seed list, probes on /readyz and /healthz,
   resource requests, a PDB and a client Service selecting the pods, compose
   healthchecks, graceful stop, a scalable service with no fixed host ports.
4. `docker compose config` (or docker-compose) accepts the compose file, when
   a compose tool is installed (it needs no engine).

Usage: check_static.py HEADCOUNT_BINARY
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
K8S = DEPLOY / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S_VERSIONS = ["1.29.0", "1.37.0"]

FLAG = re.compile(r"--[a-z][a-z0-9-]*")
ENV = re.compile(r"HEADCOUNT_[A-Z0-9_]+")

failures: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        failures.append(what)


def help_names(binary: str) -> tuple[set[str], set[str]]:
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    flags = set(FLAG.findall(out))
    envs = set(ENV.findall(out))
    if len(flags) < 10 or len(envs) < 10:
        raise SystemExit(f"`{binary} --help` lists too few flags/env names: {flags} {envs}")
    return flags, envs


def flag_names(args: list[str]) -> list[str]:
    """--foo=bar and --foo bar both name --foo; other words are values."""
    return [FLAG.match(arg).group(0) for arg in args if isinstance(arg, str) and FLAG.match(arg)]


def env_names(environment) -> list[str]:
    if isinstance(environment, dict):
        return list(environment)
    return [item.split("=", 1)[0] for item in environment or []]


def fixed_host_port(port) -> bool:
    """A compose port entry that binds a fixed host port (breaks --scale)."""
    if isinstance(port, dict):
        return bool(port.get("published"))
    parts = re.sub(r"\$\{[^}]*\}", "VAR", str(port)).split("/")[0].split(":")
    host = parts[-2] if len(parts) >= 2 else ""
    return host not in ("", "0")


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def check_k8s_schemas(validator: Path) -> None:
    print("Kubernetes schemas (kubernetes-validate --strict, offline):")
    files = [str(p) for p in k8s_manifests()]
    for version in K8S_VERSIONS:
        run = subprocess.run([str(validator), "--strict", "--quiet", "-k", version, *files],
                             capture_output=True, text=True)
        detail = (run.stdout + run.stderr).strip()
        check(run.returncode == 0, f"{len(files)} manifests valid for Kubernetes {version}"
              + (f"\n{detail}" if run.returncode else ""))
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization.get("resources", []))
    check(listed == {p.name for p in k8s_manifests()}, "kustomization.yaml lists every manifest")


def check_names(flags: set[str], envs: set[str]) -> None:
    print("Flag and env names against `headcount --help`:")
    used: list[tuple[str, str]] = []  # (name, where)

    compose = yaml.safe_load(COMPOSE.read_text())
    for name, service in compose["services"].items():
        where = f"docker-compose.yml services.{name}"
        used += [(env, where) for env in env_names(service.get("environment")) if env.startswith("HEADCOUNT_")]
        command = service.get("command") or []
        used += [(flag, where) for flag in flag_names(command if isinstance(command, list) else command.split())]

    for path in k8s_manifests():
        for doc in load_all(path):
            if doc.get("kind") not in ("StatefulSet", "Deployment", "DaemonSet"):
                continue
            pod = doc["spec"]["template"]["spec"]
            for container in pod.get("initContainers", []) + pod["containers"]:
                where = f"{path.name} container {container['name']}"
                env = container.get("env", [])
                defined = {item["name"] for item in env}
                referenced = set(re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(env) + str(container.get("args", []))))
                for item in env:
                    name = item["name"]
                    if name.startswith("HEADCOUNT_"):
                        used.append((name, where))
                    else:
                        # Helper variables only feed $(NAME) substitutions.
                        check(name in referenced, f"{where}: helper env {name} is used by a $(…) reference")
                check(referenced <= defined, f"{where}: every $(…) reference is defined")
                used += [(flag, where) for flag in flag_names(container.get("args", []) + container.get("command", []))]

    # ENV instructions (with their continuation lines) of the Dockerfile and of
    # the FROM-scratch Dockerfile that build-image.sh writes.
    for path in (DOCKERFILE, DEPLOY / "build-image.sh"):
        text = re.sub(r"\\\\?\n", " ", path.read_text())
        for line in text.splitlines():
            if line.strip().startswith("ENV "):
                used += [(env, f"{path.name} ENV") for env in ENV.findall(line)]

    known = flags | envs
    for name, where in used:
        check(name in known, f"{name} ({where})")
    check(len(used) >= 15, f"{len(used)} names checked")


def check_wiring() -> None:
    print("Kubernetes wiring:")
    docs = [doc for path in k8s_manifests() for doc in load_all(path)]
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    sts = (by_kind.get("StatefulSet") or by_kind.get("Deployment") or [None])[0]
    check(sts is not None, "a StatefulSet or Deployment")
    if sts is None:
        return
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    services = by_kind.get("Service", [])
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
    check(len(headless) == 1, "one headless Service")
    if headless:
        peers = headless[0]
        check(peers["spec"].get("publishNotReadyAddresses") is True, "headless Service publishes not-ready addresses")
        seeds = [seed.strip() for seed in (env.get("HEADCOUNT_SEEDS") or "").split(",")]
        check(any(seed.split(":")[0].split(".")[0] == peers["metadata"]["name"] for seed in seeds),
              f"HEADCOUNT_SEEDS {seeds} names the headless Service {peers['metadata']['name']}")
        check(any(seed.endswith(f":{ports.get('gossip')}") for seed in seeds), "seeds use the gossip port")
        check(sts["spec"].get("serviceName") == peers["metadata"]["name"] or sts["kind"] == "Deployment",
              "StatefulSet serviceName is the headless Service")
    if sts["kind"] == "StatefulSet":
        check(sts["spec"].get("podManagementPolicy") == "Parallel",
              "podManagementPolicy Parallel (readiness needs a peer; OrderedReady would deadlock)")
    client = [s for s in services if s["spec"].get("clusterIP") != "None"]
    check(len(client) == 1, "one client Service")
    if client:
        names = {port["name"] for port in client[0]["spec"]["ports"]}
        check({"http", "grpc"} <= names, "client Service has http and grpc ports")
    for service in services:
        selector = service["spec"].get("selector", {})
        check(selector and all(pod_labels.get(k) == v for k, v in selector.items()),
              f"Service {service['metadata']['name']} selects the pods")
    pdbs = by_kind.get("PodDisruptionBudget", [])
    check(len(pdbs) == 1 and all(pod_labels.get(k) == v for k, v in pdbs[0]["spec"]["selector"]["matchLabels"].items()),
          "a PodDisruptionBudget selecting the pods")
    check(container.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", "readiness probe on /readyz")
    check(container.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", "liveness probe on /healthz")
    check(bool(container.get("resources", {}).get("requests")), "resource requests")
    check(env.get("HEADCOUNT_HTTP", "").endswith(f":{ports.get('http')}"), "HEADCOUNT_HTTP matches the http port")
    check(env.get("HEADCOUNT_GRPC", "").endswith(f":{ports.get('grpc')}"), "HEADCOUNT_GRPC matches the grpc port")
    check(env.get("HEADCOUNT_GOSSIP", "").endswith(f":{ports.get('gossip')}"), "HEADCOUNT_GOSSIP matches the gossip port")
    check(not by_kind.get("Secret"), "no Secret committed (the operator creates headcount-cluster-secret)")
    volumes = sts["spec"]["template"]["spec"].get("volumes", [])
    check(any(v.get("secret", {}).get("secretName") == "headcount-cluster-secret" for v in volumes)
          and "HEADCOUNT_CLUSTER_SECRET_FILE" in env, "cluster secret mounted from headcount-cluster-secret")
    security = sts["spec"]["template"]["spec"].get("securityContext", {})
    check(security.get("runAsNonRoot") is True, "pods run as non-root")

    print("Compose wiring:")
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    check(len(services) >= 2, "a seed service and a scalable service")
    total = 0
    for name, service in services.items():
        env = service.get("environment", {})
        total += service.get("scale", service.get("deploy", {}).get("replicas", 1))
        seeds = [seed.split(":")[0] for seed in env.get("HEADCOUNT_SEEDS", "").split(",")]
        check(set(seeds) == set(services), f"{name}: seeds name every service ({seeds})")
        test = service.get("healthcheck", {}).get("test", [])
        check("/readyz" in test, f"{name}: healthcheck on /readyz")
        check(service.get("stop_grace_period") is not None and service.get("stop_signal", "SIGTERM") == "SIGTERM",
              f"{name}: graceful stop (SIGTERM, stop_grace_period)")
        check("cluster_secret" in str(service.get("secrets")) and "HEADCOUNT_CLUSTER_SECRET_FILE" in env,
              f"{name}: cluster secret from a compose secret")
        check(bool(service.get("ports")), f"{name}: HTTP published for the host")
        if service.get("scale", 1) > 1:
            fixed = [p for p in service["ports"] if fixed_host_port(p)]
            check(not fixed, f"{name}: scalable service publishes no fixed host port")
    check(total == 3, f"three nodes by default ({total})")

    tool = None
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        tool = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        tool = ["docker-compose"]
    if tool:
        run = subprocess.run([*tool, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=ROOT)
        check(run.returncode == 0, f"`{' '.join(tool)} config` accepts docker-compose.yml" + (f"\n{run.stderr}" if run.returncode else ""))
    else:
        print("  skip no compose tool: `compose config` not run")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    flags, envs = help_names(sys.argv[1])
    validator = Path(sys.executable).parent / "kubernetes-validate"
    check_k8s_schemas(validator)
    check_names(flags, envs)
    check_wiring()
    if failures:
        print(f"check-static: {len(failures)} check(s) failed:")
        for failure in failures:
            print(f"  - {failure.splitlines()[0]}")
        return 1
    print("check-static: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
