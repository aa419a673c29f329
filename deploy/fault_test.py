#!/usr/bin/env python3
"""Fault test of a real headcount cluster in Docker (run by deploy/fault-test.sh).

Brings up docker-compose.yml under a unique project name, holds real websocket
clients on every node, injects faults with the Docker CLI and measures how long
the nodes take to show the right counts, then prints a table and exits non-zero
if any limit was missed. The limits are the cluster contract (docs/protocol.md), with
X the gossip interval (HC_GOSSIP_INTERVAL, default 1s):

  partition  `docker network disconnect` of one node: each side counts only
             what it reaches, within 5 s of the cut (what a crash gets);
             `docker network connect`: every node agrees within 2·X, measured
             from when the connect command returned
  kill       `docker kill` of one node: the survivors drop its share within
             5 s of the kill
  restart    the killed node started again (same name, new incarnation): its
             new clients count everywhere within 2·X, its old ones never
  fast restart  kill and start again before the others declare it down, with
             new clients: the new incarnation replaces the old one
  stop       `compose stop` of one node: its clients get close code 1001; the
             others drop its share within 1 s of that close
  scale      `compose up --scale node=4` (3 -> 5 nodes): the new nodes join and
             their clients count on every node within 2·X of the last connect
  down       `compose down` leaves no container and no network of the project
  always     no node ever answers a count above the number of open clients

"The cut" and "the kill" are the last answer of the victim's /healthz over the
path being cut (asked every 20 ms): Docker commands take 0.3 to 2 s and the
fault lands somewhere inside them. The time from the command is shown too.

How the test reaches the nodes: every container is also attached to a second
network of the test's own (`<project>_probe`) after it has started, and the
clients and the HTTP polls go to the containers' addresses on that network,
straight from this host. So a node cut off the `cluster` network with
`docker network disconnect` is still reachable, keeps its own clients and can
be asked what it counts. The probe network is attached only after the node
started, so the address the node advertises (its host name's) stays on
`cluster`; Docker's bridge isolation keeps the probe network from carrying
gossip between the two sides. This needs a Linux Docker engine (container
addresses routable from the host).

Environment: HC_IMAGE (default headcount:local, built by fault-test.sh),
HC_GOSSIP_INTERVAL (default 1s), FAULT_KEEP=1 to leave the cluster up on
failure for inspection.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
TOPIC = "fault-test"
POLL = 0.05  # seconds between polls of every node


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)\s*", text)
    if not match:
        raise SystemExit(f"fault-test: cannot parse duration {text!r} (use 500ms, 1s, 2m)")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "ms" else value * 60 if unit == "m" else value


X_TEXT = os.environ.get("HC_GOSSIP_INTERVAL", "1s")
X = parse_duration(X_TEXT)
IMAGE = os.environ.get("HC_IMAGE", "headcount:local")
PROJECT = f"hcfault{os.getpid()}{random.randrange(1000):03d}"
PROBE_NET = f"{PROJECT}_probe"
T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - T0:7.2f}s] {message}", flush=True)


def compose_tool() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise SystemExit("fault-test: neither `docker compose` nor `docker-compose` is installed")


COMPOSE = compose_tool()
COMPOSE_ENV = {
    **os.environ,
    "HC_IMAGE": IMAGE,
    "HC_GOSSIP_INTERVAL": X_TEXT,
    "HC_PUBLISH_IP": "127.0.0.1",
    # Ephemeral host ports: nothing here may collide with the host's 8080/9090.
    "HC_HTTP_PORT": "0",
    "HC_GRPC_PORT": "0",
    "COMPOSE_PROJECT_NAME": PROJECT,
}


class CommandFailed(Exception):
    pass


async def run(*args: str, check: bool = True, quiet: bool = False) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=COMPOSE_ENV, cwd=ROOT)
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if check and proc.returncode != 0:
        raise CommandFailed(f"`{' '.join(args)}` exited {proc.returncode}:\n{text}")
    if not quiet and text.strip() and proc.returncode != 0:
        log(text.strip())
    return text


async def compose(*args: str, check: bool = True) -> str:
    return await run(*COMPOSE, "-p", PROJECT, "-f", str(COMPOSE_FILE), *args, check=check)


# --- nodes and clients -------------------------------------------------------------


@dataclass
class Client:
    node: str
    ws: object = None
    task: asyncio.Task | None = None
    last_count: int | None = None
    close_code: int | None = None
    closed_at: float | None = None

    async def start(self, ip: str) -> None:
        self.ws = await websockets.connect(f"ws://{ip}:8080/ws/{TOPIC}", open_timeout=5, close_timeout=2,
                                           ping_interval=None, max_size=2**16)
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self.last_count = json.loads(message).get("count")
        except websockets.ConnectionClosed:
            pass
        except Exception:  # noqa: BLE001 -- a reset socket is a close too
            pass
        finally:
            self.closed_at = time.monotonic()
            self.close_code = int(getattr(self.ws, "close_code", None) or 1006)

    async def stop(self) -> None:
        if self.ws is not None and self.closed_at is None:
            try:
                await asyncio.wait_for(self.ws.close(), 2)
            except Exception:  # noqa: BLE001
                pass
        if self.task:
            self.task.cancel()


@dataclass
class Node:
    key: str  # "seed-1", "node-2"
    service: str
    cid: str
    ip: str = ""
    clients: list[Client] = field(default_factory=list)

    @property
    def alive_clients(self) -> list[Client]:
        return [c for c in self.clients if c.closed_at is None]


nodes: dict[str, Node] = {}


async def containers() -> dict[str, tuple[str, str, bool]]:
    """key -> (container id, service, running) for this project's containers."""
    out = await run("docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}", "--format",
                    '{{.ID}} {{.Label "com.docker.compose.service"}} {{.Label "com.docker.compose.container-number"}} {{.State}}')
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            cid, service, number, state = parts
            found[f"{service}-{number}"] = (cid, service, state == "running")
    return found


async def probe_ip(cid: str) -> str:
    out = await run("docker", "inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{PROBE_NET}").IPAddress}}}}', cid)
    return out.strip()


async def cluster_ip(cid: str) -> str:
    out = await run("docker", "inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{PROJECT}_cluster").IPAddress}}}}', cid)
    return out.strip()


async def attach_probe(node: Node) -> None:
    await run("docker", "network", "connect", PROBE_NET, node.cid)
    node.ip = await probe_ip(node.cid)


async def detach_probe(node: Node) -> None:
    await run("docker", "network", "disconnect", "--force", PROBE_NET, node.cid, check=False)
    node.ip = ""


async def refresh_nodes() -> None:
    """Adds containers that appeared (scale) and attaches them to the probe net."""
    for key, (cid, service, running) in sorted((await containers()).items()):
        if key not in nodes:
            nodes[key] = Node(key=key, service=service, cid=cid)
        if running and not nodes[key].ip:
            await attach_probe(nodes[key])


async def connect_clients(node: Node, n: int) -> None:
    new = [Client(node=node.key) for _ in range(n)]
    await asyncio.gather(*(client.start(node.ip) for client in new))
    node.clients.extend(new)


async def http_get(ip: str, path: str, timeout: float = 1.0) -> tuple[int, dict]:
    async def fetch() -> tuple[int, dict]:
        reader, writer = await asyncio.open_connection(ip, 8080)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        if b"transfer-encoding: chunked" in head.lower():
            decoded, rest = b"", body
            while rest:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    break
                decoded, rest = decoded + rest[:size], rest[size + 2:]
            body = decoded
        return status, json.loads(body) if body.strip() else {}

    return await asyncio.wait_for(fetch(), timeout)


# The highest count any node answered during each phase: a node must never
# count more clients than were open (e.g. a restarted node's old incarnation
# added to its new one). Every poll feeds it; a background poller keeps polling
# between the phases' own waits.
phase = "start"
max_seen: dict[str, tuple[int, str]] = {}


async def count(node: Node) -> tuple[int, int] | None:
    """(count, nodes) of the topic as `node` sees it; None if it does not answer."""
    try:
        status, body = await http_get(node.ip, f"/count/{TOPIC}")
        answer = (body["count"], body["nodes"]) if status == 200 else None
    except Exception:  # noqa: BLE001
        return None
    if answer and answer[0] > max_seen.get(phase, (-1, ""))[0]:
        max_seen[phase] = (answer[0], node.key)
    return answer


async def background_poller() -> None:
    while True:
        await asyncio.gather(*(count(node) for node in list(nodes.values()) if node.ip))
        await asyncio.sleep(0.1)


def begin(name: str) -> None:
    global phase
    phase = name
    log(f"---- {name}")


def record_bound(bound: int) -> None:
    top, key = max_seen.get(phase, (0, "-"))
    record(phase, f"no node ever counted more than the {bound} open clients", None, None, ok=top <= bound,
           text=f"max seen {top}" + (f" (on {key})" if top > bound else ""))


async def wait_for(expect: dict[str, tuple[int, int]], since: float, timeout: float) -> tuple[float | None, dict]:
    """Polls every node in `expect` until each shows its (count, nodes), all at
    once. Returns (seconds since `since` or None on timeout, last seen)."""
    deadline = time.monotonic() + timeout
    seen: dict = {}
    while True:
        keys = list(expect)
        answers = await asyncio.gather(*(count(nodes[key]) for key in keys))
        now = time.monotonic()
        seen = dict(zip(keys, answers))
        if all(seen[key] == expect[key] for key in keys):
            return now - since, seen
        if now > deadline:
            return None, seen
        await asyncio.sleep(POLL)


class CutWatcher:
    """Asks a node's /healthz over one path every 20 ms until it stops
    answering: the last answer bounds the moment a fault took effect (Docker
    commands take 0.3 to 1 s, and the cut happens somewhere inside them)."""

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.last_ok: float | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                status, _ = await http_get(self.ip, "/healthz", timeout=0.3)
            except Exception:  # noqa: BLE001
                status = 0
            if status != 200:
                return
            self.last_ok = time.monotonic()
            await asyncio.sleep(0.02)

    async def cut(self, fallback: float) -> float:
        try:
            await asyncio.wait_for(self.task, 10)
        except asyncio.TimeoutError:
            return fallback
        return self.last_ok or fallback


def share(*keys: str) -> int:
    return sum(len(nodes[key].alive_clients) for key in keys)


def running_keys() -> list[str]:
    return [key for key, node in nodes.items() if node.ip]


# --- results -------------------------------------------------------------------------

results: list[tuple[str, str, str, str, bool]] = []  # fault, what, limit, seen, ok


def record(fault: str, what: str, limit: float | None, seen: float | None, ok: bool | None = None,
           detail: str = "", text: str | None = None) -> bool:
    """One row: `seen` seconds against `limit` (None: no time limit), or
    `text` instead of a time; `detail` is appended (e.g. the last answers)."""
    if ok is None:
        ok = seen is not None and (limit is None or seen <= limit)
    limit_text = "-" if limit is None else f"<= {limit:.2f} s"
    seen_text = text if text is not None else "timed out" if seen is None else f"{seen:.2f} s"
    if detail:
        seen_text = f"{seen_text} ({detail})"
    results.append((fault, what, limit_text, seen_text, ok))
    log(f"{'PASS' if ok else 'FAIL'} {fault}: {what}: {seen_text} (limit {limit_text})")
    return ok


def print_table() -> None:
    headers = ("fault", "what was measured", "limit", "seen", "result")
    rows = [(f, w, lim, s, "pass" if ok else "FAIL") for f, w, lim, s, ok in results]
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(5)]
    line = lambda row: "| " + " | ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)) + " |"  # noqa: E731
    print()
    print(f"headcount fault test: X = {X_TEXT}, {' '.join(COMPOSE)}, image {IMAGE}, project {PROJECT}")
    print(line(headers))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
    passed = sum(1 for r in results if r[4])
    print(f"fault-test: {passed} of {len(results)} checks passed" + (f", {len(results) - passed} FAILED" if passed < len(results) else ""))


def expect_all(keys: list[str], total: int) -> dict[str, tuple[int, int]]:
    return {key: (total, len(keys)) for key in keys}


# --- the scenario --------------------------------------------------------------------


async def scenario() -> None:
    await run("docker", "network", "create", "--label", f"headcount.fault-test={PROJECT}", PROBE_NET)
    log(f"compose up ({' '.join(COMPOSE)}, project {PROJECT}, X={X_TEXT})")
    started = time.monotonic()
    await compose("up", "-d")
    await refresh_nodes()
    poller = asyncio.create_task(background_poller())
    keys = sorted(nodes)
    assert keys == ["node-1", "node-2", "seed-1"], f"unexpected containers {keys}"

    # Every container healthy: the image's probe answers /readyz (joined).
    deadline = time.monotonic() + 60
    while True:
        health = {key: (await run("docker", "inspect", "-f", "{{.State.Health.Status}}", nodes[key].cid)).strip()
                  for key in keys}
        if all(h == "healthy" for h in health.values()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    record("start", "3 containers healthy (healthcheck = headcount-probe /readyz)", 60,
           time.monotonic() - started if all(h == "healthy" for h in health.values()) else None,
           detail="" if all(h == "healthy" for h in health.values()) else str(health))

    # Distinct shares, so that every count tells whose clients it includes.
    shares = {"seed-1": 2, "node-1": 3, "node-2": 4}
    for key, n in shares.items():
        await connect_clients(nodes[key], n)
    connected = time.monotonic()
    seen, last = await wait_for(expect_all(keys, 9), connected, 10)
    record("start", "9 clients on 3 nodes counted everywhere", 2 * X, seen, detail="" if seen else str(last))

    record_bound(9)

    # -- partition --------------------------------------------------------------------
    begin("partition")
    victim, rest = "node-2", ["seed-1", "node-1"]
    old_ip = await cluster_ip(nodes[victim].cid)
    watcher = CutWatcher(old_ip)  # over the cluster network, from this host
    await asyncio.sleep(0.2)
    command = time.monotonic()
    majority = asyncio.create_task(wait_for({key: (share(*rest), len(rest)) for key in rest}, command, 15))
    isolated = asyncio.create_task(wait_for({victim: (share(victim), 1)}, command, 15))
    await run("docker", "network", "disconnect", f"{PROJECT}_cluster", nodes[victim].cid)
    took = time.monotonic() - command
    cut = await watcher.cut(command)
    log(f"partition: {victim} ({shares[victim]} clients) disconnected from {PROJECT}_cluster "
        f"(command took {took:.2f} s, cut {cut - command:.2f} s into it)")
    (seen, last), (seen_isolated, last_isolated) = await majority, await isolated
    for side, seen_side, last_side, total, members in (
            ("majority", seen, last, share(*rest), 2), ("isolated", seen_isolated, last_isolated, share(victim), 1)):
        record("partition", f"{side} side counts only its own {total} ({members} node{'s' * (members > 1)}), "
               "from the cut", 5, None if seen_side is None else seen_side - (cut - command),
               detail=(f"{seen_side:.2f} s from the command" if seen_side is not None else str(last_side)))
    record("partition", "isolated node kept its own clients", None, None,
           ok=len(nodes[victim].alive_clients) == shares[victim],
           text=f"{len(nodes[victim].alive_clients)}/{shares[victim]} open")
    await asyncio.sleep(1)  # a moment of steady partition
    healed = time.monotonic()
    await run("docker", "network", "connect", "--alias", "node", f"{PROJECT}_cluster", nodes[victim].cid)
    connected = time.monotonic() - healed
    new_ip = await cluster_ip(nodes[victim].cid)
    log(f"partition healed: {victim} reconnected ({old_ip} -> {new_ip}; command took {connected:.2f} s)")
    # The node advertises the address it had; a new one would be Docker's doing
    # (it reuses the freed address here) and would make the heal checks fail.
    record("partition", "reconnected with its old address (test precondition)", None, None,
           ok=new_ip == old_ip, text=f"{old_ip} -> {new_ip}")
    members = asyncio.create_task(wait_for(expect_all(keys, 9), healed, 15))
    rejoin_task = asyncio.create_task(wait_membership(keys, 3, healed, 15))
    seen, last = await members
    rejoined = await rejoin_task
    record("partition", "rejoin: every node sees 3 members again, from the reconnect command", None, rejoined)
    # Docker's connect takes 0.3 to 2 s and the path comes up somewhere inside it;
    # the contract's 2·X runs from the rejoin, so it is measured from when the
    # command returned (the time from its start is in the detail).
    record("partition", "heal: every node agrees on 9, from the reconnect", 2 * X,
           None if seen is None else max(0.0, seen - connected),
           detail=f"{seen:.2f} s from the command" if seen is not None else str(last))
    record_bound(9)

    # -- kill ---------------------------------------------------------------------------
    begin("kill")
    victim, rest = "node-1", ["seed-1", "node-2"]
    watcher = CutWatcher(nodes[victim].ip)
    await asyncio.sleep(0.2)
    before = time.monotonic()
    expect = {key: (share(*rest), len(rest)) for key in rest}
    survivors = asyncio.create_task(wait_for(expect, before, 15))
    await run("docker", "kill", nodes[victim].cid)
    took = time.monotonic() - before
    cut = await watcher.cut(before)
    log(f"kill: {victim} ({shares[victim]} clients) killed (command took {took:.2f} s, "
        f"dead {cut - before:.2f} s into it)")
    seen, last = await survivors
    record("kill", f"survivors drop its share (9 -> {share(*rest)}), from the kill", 5,
           None if seen is None else seen - (cut - before),
           detail=f"{seen:.2f} s from the command" if seen is not None else str(last))
    codes = sorted({c.close_code for c in nodes[victim].clients})
    record("kill", "its clients saw the connection drop", None, None,
           ok=not nodes[victim].alive_clients, text=f"close codes {codes}")

    record_bound(9)

    # -- restart of the killed node (same name, new incarnation) ------------------------
    begin("restart")
    before = time.monotonic()
    await restart(victim)
    seen, last = await wait_for(expect_all(keys, share(*keys)), before, 15)
    record("restart", "killed node back under its name and counted (6, old clients gone), "
           "from `compose up`", None, seen, detail="" if seen else str(last))
    await connect_clients(nodes[victim], shares[victim])
    connected = time.monotonic()
    seen, last = await wait_for(expect_all(keys, 9), connected, 10)
    record("restart", "its new clients counted everywhere (9)", 2 * X, seen, detail="" if seen else str(last))
    record_bound(9)

    # -- fast restart: kill and start again before the others declare it down ------------
    begin("fast restart")
    before = time.monotonic()
    await run("docker", "kill", nodes[victim].cid)
    await restart(victim, direct=True)
    await connect_clients(nodes[victim], shares[victim])
    connected = time.monotonic()
    log(f"{victim} killed, started and given {shares[victim]} new clients in {connected - before:.2f} s")
    seen, last = await wait_for(expect_all(keys, 9), connected, 15)
    record("fast restart", f"kill + start ({connected - before:.1f} s): new incarnation's clients counted, "
           "the old ones not (9)", 5, seen, detail="" if seen else str(last))
    record_bound(9)

    # -- graceful stop ---------------------------------------------------------------------
    begin("stop")
    victim, rest = "seed-1", ["node-1", "node-2"]
    stopping = asyncio.create_task(compose("stop", "seed"))
    commanded = time.monotonic()
    first_close = None
    deadline = time.monotonic() + 20
    while first_close is None and time.monotonic() < deadline:
        closed = [c.closed_at for c in nodes[victim].clients if c.closed_at is not None]
        first_close = min(closed) if closed else None
        await asyncio.sleep(0.01)
    expect = {key: (share(*rest), len(rest)) for key in rest}
    seen, last = await wait_for(expect, first_close or commanded, 15)
    await stopping
    stopped = time.monotonic()
    for _ in range(100):
        if not nodes[victim].alive_clients:
            break
        await asyncio.sleep(0.05)
    codes = sorted({c.close_code for c in nodes[victim].clients})
    record("stop", f"its {shares[victim]} clients got close code 1001", None,
           (first_close - commanded) if first_close else None,
           ok=codes == [1001], detail=f"after the command; codes {codes}")
    record("stop", f"the others drop its share (9 -> {share(*rest)}), from the 1001", 1, seen,
           detail="" if seen else str(last))
    record("stop", "`compose stop` returned (container exited)", 15, stopped - commanded)

    await restart(victim, service="seed")
    await connect_clients(nodes[victim], shares[victim])
    seen, last = await wait_for(expect_all(keys, 9), time.monotonic(), 15)
    record("stop", "seed back, 9 counted everywhere", None, seen, detail="" if seen else str(last))
    record_bound(9)

    # -- scale 3 -> 5 -----------------------------------------------------------------------
    begin("scale")
    before = time.monotonic()
    await compose("up", "-d", "--scale", "node=4")
    returned = time.monotonic()
    await refresh_nodes()
    keys = sorted(running_keys())
    new = [key for key in keys if key not in shares]
    record("scale", f"`compose up --scale node=4` started {', '.join(new)}", None, returned - before,
           ok=len(keys) == 5 and len(new) == 2, detail="command time")
    joined = await wait_membership(keys, 5, before, 20)
    record("scale", "every node sees 5 members, from the command", None, joined)
    for key, n in zip(new, (5, 6)):
        shares[key] = n
        await connect_clients(nodes[key], n)
    connected = time.monotonic()
    seen, last = await wait_for(expect_all(keys, 20), connected, 10)
    record("scale", "new nodes' clients counted everywhere (20 on 5 nodes)", 2 * X, seen,
           detail="" if seen else str(last))
    push_deadline = time.monotonic() + 2 * X + 2
    while time.monotonic() < push_deadline:
        if all(c.last_count == 20 for key in keys for c in nodes[key].alive_clients):
            break
        await asyncio.sleep(0.05)
    pushed = sorted({c.last_count for key in keys for c in nodes[key].alive_clients})
    record("scale", "every client was pushed count 20", None, time.monotonic() - connected,
           ok=pushed == [20], detail=f"last pushed {pushed}")
    record_bound(20)

    # -- down ----------------------------------------------------------------------------------
    begin("down")
    poller.cancel()
    before = time.monotonic()
    await compose("down", "--remove-orphans", "--timeout", "15")
    took = time.monotonic() - before
    for _ in range(100):
        if not any(n.alive_clients for n in nodes.values()):
            break
        await asyncio.sleep(0.05)
    codes = sorted({c.close_code for n in nodes.values() for c in n.clients if c.closed_at and c.closed_at >= before})
    await run("docker", "network", "rm", PROBE_NET, check=False)
    left = await leftovers()
    record("down", "`compose down`: no container or network of the project left", 30, took,
           ok=not left and took <= 30, detail=f"left: {left or 'nothing'}; clients' close codes {codes}")


async def wait_membership(keys: list[str], members: int, since: float, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answers = await asyncio.gather(*(count(nodes[key]) for key in keys))
        if all(a is not None and a[1] == members for a in answers):
            return time.monotonic() - since
        await asyncio.sleep(POLL)
    return None


async def restart(key: str, service: str | None = None, direct: bool = False) -> None:
    """Starts a stopped or killed node again with `compose up -d` (or, direct,
    `docker start`, quicker). The probe network is detached first so that, at
    start, the container's host name resolves to its `cluster` address only
    (what it advertises)."""
    node = nodes[key]
    await detach_probe(node)
    if not direct:
        await compose("up", "-d", *([service] if service else []))
    await run("docker", "start", node.cid)  # no-op when compose already started it
    await attach_probe(node)
    for client in node.clients:
        await client.stop()
    node.clients = []
    log(f"{key} started again")


async def leftovers() -> list[str]:
    left = []
    out = await run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}")
    left += [f"container {cid}" for cid in out.split()]
    out = await run("docker", "network", "ls", "-q", "--filter", f"name={PROJECT}")
    left += [f"network {nid}" for nid in out.split()]
    return left


async def cleanup() -> None:
    for node in nodes.values():
        for client in node.clients:
            if client.task:
                client.task.cancel()
    await compose("down", "--remove-orphans", "--timeout", "2", check=False)
    await run("docker", "network", "rm", PROBE_NET, check=False, quiet=True)


async def main() -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    failed_hard = None
    try:
        await scenario()
    except (Exception, asyncio.CancelledError) as error:  # noqa: BLE001
        failed_hard = error
        log(f"error: {type(error).__name__}: {error}")
    if failed_hard is not None or not all(r[4] for r in results):
        logs = await compose("logs", "--no-color", "--tail", "40", check=False)
        print("---- compose logs (last lines of each node) ----")
        print(logs)
        if os.environ.get("FAULT_KEEP") == "1":
            log(f"FAULT_KEEP=1: leaving project {PROJECT} up")
            print_table()
            return 1
    await cleanup()
    left = await leftovers()
    if left:
        log(f"cleanup left {left}")
    print_table()
    if failed_hard is not None:
        print(f"fault-test: aborted: {type(failed_hard).__name__}: {failed_hard}")
        return 1
    return 0 if all(r[4] for r in results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
