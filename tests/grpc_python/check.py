#!/usr/bin/env python3
"""A gRPC client in another language, made from the proto alone.

Generates Python stubs from proto/headcount/v1/headcount.proto at run time
(grpc_tools.protoc, into a temporary directory), then calls every RPC of the
public API of a running headcount node and discovers its services by gRPC
server reflection. Prints one line per check; exits non-zero with a clear
message on the first failure.

    python3 check.py GRPC_HOST:PORT [--ws HTTP_HOST:PORT] [--members N]

--ws opens a websocket on that node (it may be another node of the cluster)
while WatchCount runs, so the stream must deliver the new cluster-wide count.
--members is how many ALIVE members ListMembers must report.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
DEFAULT_PROTO_ROOT = HERE.parent.parent / "proto"
PROTO = "headcount/v1/headcount.proto"
TIMEOUT = 10.0


class CheckFailed(Exception):
    pass


def ok(what: str, detail: str) -> None:
    print(f"ok   {what:<22} {detail}", flush=True)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def generate_stubs(proto_root: Path, out: Path):
    """Runs protoc on the public proto; returns (headcount_pb2, headcount_pb2_grpc)."""
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        PROTO,
    ]
    if protoc.main(args) != 0:
        raise CheckFailed(f"protoc could not compile {proto_root / PROTO}")
    sys.path.insert(0, str(out))
    pb2 = importlib.import_module("headcount.v1.headcount_pb2")
    pb2_grpc = importlib.import_module("headcount.v1.headcount_pb2_grpc")
    return pb2, pb2_grpc


class WebSocket:
    """Just enough of a websocket client (RFC 6455) to hold a counted connection."""

    def __init__(self, http_addr: str, topic: str):
        host, port = http_addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws/{topic} HTTP/1.1\r\nHost: {http_addr}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise CheckFailed(f"websocket on {http_addr}: connection closed during the upgrade")
            head += chunk
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        expect(" 101 " in status, f"websocket on {http_addr}/ws/{topic}: {status}")

    def close(self) -> None:
        self.sock.close()


def check_get_count(stub, pb2, topic: str) -> None:
    reply = stub.GetCount(pb2.GetCountRequest(topic=topic), timeout=TIMEOUT)
    expect(reply.topic == topic, f"GetCount: topic {reply.topic!r}, expected {topic!r}")
    expect(reply.count == 0 and reply.local == 0, f"GetCount of an unknown topic: {reply}")
    expect(reply.nodes >= 1, f"GetCount: nodes {reply.nodes} does not include the answering node")
    ok("GetCount", f"topic={reply.topic} count={reply.count} local={reply.local} nodes={reply.nodes}")
    try:
        stub.GetCount(pb2.GetCountRequest(topic=""), timeout=TIMEOUT)
    except grpc.RpcError as error:
        expect(
            error.code() == grpc.StatusCode.INVALID_ARGUMENT,
            f"GetCount of an empty topic: {error.code()} {error.details()}, expected INVALID_ARGUMENT",
        )
        ok("GetCount(invalid)", f"{error.code().name}: {error.details()}")
    else:
        raise CheckFailed("GetCount of an empty topic was answered; expected INVALID_ARGUMENT")


def check_list_topics(stub, pb2) -> None:
    reply = stub.ListTopics(pb2.ListTopicsRequest(prefix="", limit=0), timeout=TIMEOUT)
    counts = [t.count for t in reply.topics]
    expect(counts == sorted(counts, reverse=True), f"ListTopics: not biggest first: {counts}")
    expect(reply.total >= sum(counts), f"ListTopics: total {reply.total} < sum of listed {sum(counts)}")
    expect(len(reply.topics) <= 100, f"ListTopics: limit 0 returned {len(reply.topics)} topics, default is 100")
    ok("ListTopics", f"total={reply.total} topics={len(reply.topics)}")


def check_list_members(stub, pb2, members: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        reply = stub.ListMembers(pb2.ListMembersRequest(), timeout=TIMEOUT)
        alive = [m for m in reply.members if m.state == pb2.MEMBER_STATE_ALIVE]
        if len(alive) >= members or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    expect(bool(reply.self), "ListMembers: empty self")
    expect(
        reply.members and reply.members[0].name == reply.self,
        f"ListMembers: the answering node {reply.self!r} is not listed first",
    )
    expect(len(alive) >= members, f"ListMembers: {len(alive)} ALIVE members, expected {members}: {reply}")
    listed = ", ".join(
        f"{m.name}@{m.addr} {pb2.MemberState.Name(m.state)} connections={m.connections}" for m in reply.members
    )
    ok("ListMembers", f"self={reply.self} members=[{listed}]")


def check_watch_count(stub, pb2, topic: str, ws_addr: str | None) -> None:
    stream = stub.WatchCount(pb2.WatchCountRequest(topic=topic), timeout=TIMEOUT + 5)
    socket_ = None
    try:
        first = next(stream)
        expect(first.topic == topic and first.count == 0, f"WatchCount: first message {first}")
        detail = f"first: count={first.count} nodes={first.nodes}"
        if ws_addr:
            socket_ = WebSocket(ws_addr, topic)
            for update in stream:
                if update.count == 1:
                    detail += f"; after a websocket on {ws_addr}: count={update.count} local={update.local}"
                    break
            else:
                raise CheckFailed("WatchCount: the stream ended before the websocket was counted")
        ok("WatchCount", detail)
    except grpc.RpcError as error:
        raise CheckFailed(f"WatchCount: {error.code().name}: {error.details()}") from error
    finally:
        stream.cancel()
        if socket_:
            socket_.close()


def reflection_call(channel, version: str, requests):
    """ServerReflectionInfo over grpc.reflection.{version}; the v1 and v1alpha
    messages are the same on the wire, so grpcio-reflection's classes serve both."""
    from grpc_reflection.v1alpha import reflection_pb2

    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return list(call(iter(requests), timeout=TIMEOUT))


def check_reflection(channel, address: str, topic: str) -> None:
    from grpc_reflection.v1alpha import reflection_pb2

    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="headcount.v1.Counter"),
    ]
    try:
        listed, described = reflection_call(channel, "v1", requests)
    except grpc.RpcError as error:
        raise CheckFailed(f"reflection v1: {error.code().name}: {error.details()}") from error
    services = sorted(s.name for s in listed.list_services_response.service)
    for wanted in ("headcount.v1.Counter", "headcount.v1.Cluster"):
        expect(wanted in services, f"reflection: {wanted} not listed: {services}")
    ok("reflection v1", "services: " + ", ".join(services))

    # Discovery without the proto: build message classes from the served
    # descriptors alone and call GetCount with them.
    pool = descriptor_pool.DescriptorPool()
    pending = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in
               described.file_descriptor_response.file_descriptor_proto]
    while pending:
        progressed = False
        for file in list(pending):
            try:
                pool.Add(file)
            except TypeError:
                continue
            pending.remove(file)
            progressed = True
        expect(progressed or not pending, "reflection: served descriptors have missing dependencies")
    counter = pool.FindServiceByName("headcount.v1.Counter")
    methods = [m.name for m in counter.methods]
    expect({"GetCount", "ListTopics", "WatchCount"} <= set(methods), f"reflection: Counter methods {methods}")
    method = counter.methods_by_name["GetCount"]
    request_class = message_factory.GetMessageClass(method.input_type)
    reply_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        "/headcount.v1.Counter/GetCount",
        request_serializer=request_class.SerializeToString,
        response_deserializer=reply_class.FromString,
    )
    reply = call(request_class(topic=topic), timeout=TIMEOUT)
    ok("reflection describe", f"Counter methods {methods}; dynamic GetCount count={reply.count}")

    # The older v1alpha protocol, still the only one some clients speak
    # (grpcio-reflection's ProtoReflectionDescriptorDatabase, grpcurl < 1.8.8).
    try:
        reflection_call(channel, "v1alpha", requests[:1])
        ok("reflection v1alpha", "served too")
    except grpc.RpcError as error:
        print(f"note reflection v1alpha     not served ({error.code().name}): clients that only speak v1alpha "
              f"cannot discover {address}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("address", help="gRPC address of a node, host:port")
    parser.add_argument("--ws", metavar="HTTP_ADDR", help="open a websocket on this node during WatchCount")
    parser.add_argument("--members", type=int, default=1, help="ALIVE members ListMembers must report")
    parser.add_argument("--proto-root", type=Path, default=Path(os.environ.get("HEADCOUNT_PROTO_ROOT",
                                                                                DEFAULT_PROTO_ROOT)))
    args = parser.parse_args()
    topic = f"python-check-{uuid.uuid4().hex[:8]}"
    try:
        with tempfile.TemporaryDirectory(prefix="headcount-stubs-") as out:
            pb2, pb2_grpc = generate_stubs(args.proto_root, Path(out))
            ok("protoc", f"stubs for {PROTO} generated in {out}")
            with grpc.insecure_channel(args.address) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
                except grpc.FutureTimeoutError as error:
                    raise CheckFailed(f"cannot connect to {args.address} within {TIMEOUT}s") from error
                counter = pb2_grpc.CounterStub(channel)
                cluster = pb2_grpc.ClusterStub(channel)
                check_get_count(counter, pb2, topic)
                check_list_topics(counter, pb2)
                check_list_members(cluster, pb2, args.members)
                check_watch_count(counter, pb2, topic, args.ws)
                check_reflection(channel, args.address, topic)
    except CheckFailed as failure:
        print(f"FAIL {failure}", file=sys.stderr, flush=True)
        return 1
    except grpc.RpcError as error:
        print(f"FAIL unexpected gRPC error: {error.code().name}: {error.details()}", file=sys.stderr, flush=True)
        return 1
    print("all gRPC checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
