#!/usr/bin/python3
"""gRPC peers for integration tests (Debian's python3-grpcio, no stubs).

  grpc_tool.py server [--port N] [--tls CERT KEY] [--health-file PATH]
      Serves on 127.0.0.1, port N (default: an ephemeral one), h2c (prior knowledge) or TLS
      (ALPN h2 required, as every gRPC server does); prints "listening on
      PORT" and serves until SIGTERM.
      sluice.test.Echo/Unary         echoes the request. "fail:CODE:MESSAGE"
                                     aborts with that status number and
                                     message; "flaky:CODE:N:TAG": the first N
                                     calls with this payload abort with
                                     that status trailers-only (no
                                     metadata), later ones echo;
                                     "sleep:MS" answers after MS
                                     milliseconds, or ends on cancellation;
                                     "hang:MS" the same with no response
                                     head before it.
      sluice.test.Echo/ServerStream  "N:SIZE[:DELAY_MS]": N messages,
                                     message i is pattern(i, SIZE).
      sluice.test.Echo/ClientStream  answers "count=N bytes=TOTAL".
      sluice.test.Echo/Bidi          echoes each message as it arrives.
      sluice.test.Echo/Stats         JSON {"/service/Method": calls}; Stats
                                     calls themselves are not counted.
      grpc.health.v1.Health/Check    the status for the service in the
                                     health file, re-read on every call:
                                     lines "SERVICE=STATUS", "" being the
                                     whole server ("=SERVING"); no file: ""
                                     is SERVING; unlisted service: NOT_FOUND.
      The Echo methods send as initial metadata the request's x-test-*
      entries and x-seen-authority (the :authority the server saw). Unary
      trails x-trailer: unary, ServerStream x-trailer: server-stream. The
      te header never reaches a handler: gRPC's core rejects a request
      without "te: trailers" (grpc-status 2, "Missing :te header").

  grpc_tool.py call TARGET KIND [--tls CA] [--authority NAME] [--payload P]
      [--count N] [--size BYTES] [--timeout SECONDS] [--metadata K=V]...
      [--service NAME]
      KIND is unary (sends --payload, default "hello"), server-stream
      (--payload, default "COUNT:SIZE"), client-stream and bidi (COUNT
      messages, each --payload or else pattern(i, SIZE); bidi sends message
      i+1 only once echo i arrived), health (--service), stats. Defaults:
      --count 3, --size 16, no deadline. --metadata values for -bin keys are
      base64. --authority sets :authority and, with --tls, the SNI and the
      name checked in the certificate. No HTTP proxy, no retries.
      Prints one JSON object: ok, code (grpc.StatusCode name), details,
      initial_metadata and trailing_metadata ({key: value}, repeated keys
      joined with ", ", -bin values base64), responses (messages received),
      bytes, payload (first response if printable text up to 4 KiB, else
      null), verified (status OK and the responses are what the server
      should send), status (health: UNKNOWN, SERVING, NOT_SERVING,
      SERVICE_UNKNOWN), stats (stats: the counts), elapsed_ms.
      Exits 0 once the call completed, whatever its status; 1 when the
      tool itself failed (unreadable file); 2 on usage errors.

Echo messages are raw bytes (no protobuf inside the gRPC message); only the
health messages are protobuf, encoded by hand below. pattern(i, SIZE) is
SIZE bytes counting up from i, modulo 256.
"""
import argparse
import base64
import json
import os
import queue
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

MAX_MESSAGE = 64 << 20
HEALTH_STATUS = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]
CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def pattern(index, size):
    start = index % 256
    block = bytes(range(256)) * (size // 256 + 2)
    return block[start:start + size]


# Protobuf wire format, just enough for the health messages.
def encode_varint(value):
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data, pos):
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def encode_fields(fields):
    """fields: [(number, int | bytes)]; ints as varints, bytes length-delimited."""
    out = b""
    for number, value in fields:
        if isinstance(value, int):
            out += encode_varint(number << 3) + encode_varint(value)
        else:
            out += encode_varint(number << 3 | 2) + encode_varint(len(value)) + value
    return out


def decode_fields(data):
    """Returns {number: last value}; skips fixed32/fixed64 fields."""
    fields, pos = {}, 0
    while pos < len(data):
        key, pos = decode_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            fields[number], pos = decode_varint(data, pos)
        elif wire_type == 2:
            length, pos = decode_varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            fields[number], pos = data[pos:pos + length], pos + length
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
    return fields


# ---------------------------------------------------------------- server


class EchoServer:
    """Handlers run on the gRPC thread pool; `counts` is guarded by `lock`."""

    def __init__(self, health_file):
        self.health_file = health_file
        self.lock = threading.Lock()
        self.counts = {}
        self.flaky_calls = {}  # payload -> calls seen

    def count(self, method):
        with self.lock:
            self.counts[method] = self.counts.get(method, 0) + 1

    @staticmethod
    def echo_metadata(context):
        metadata = [(k, v) for k, v in context.invocation_metadata()
                    if k.startswith("x-test-")]
        # HandlerCallDetails has no authority; the core's call details do.
        details = getattr(getattr(context, "_rpc_event", None), "call_details", None)
        host = getattr(details, "host", None)
        if host is not None:
            metadata.append(("x-seen-authority", host.decode(errors="replace")))
        context.send_initial_metadata(metadata)

    def unary(self, request, context):
        self.count("/sluice.test.Echo/Unary")
        if request.startswith(b"hang:"):  # no response head either, until the client goes
            deadline = time.monotonic() + int(request[5:]) / 1000
            while context.is_active() and time.monotonic() < deadline:
                time.sleep(min(0.01, max(0, deadline - time.monotonic())))
            return request
        if request.startswith(b"flaky:"):
            _, code, failures, _ = request.decode(errors="replace").split(":", 3)
            with self.lock:
                seen = self.flaky_calls.get(request, 0)
                self.flaky_calls[request] = seen + 1
            if seen < int(failures):
                context.abort(CODE_BY_NUMBER.get(int(code), grpc.StatusCode.UNKNOWN),
                              f"flaky call {seen + 1}")
            return request
        self.echo_metadata(context)
        context.set_trailing_metadata([("x-trailer", "unary")])
        if request.startswith(b"fail:"):
            _, code, message = request.decode(errors="replace").split(":", 2)
            context.abort(CODE_BY_NUMBER.get(int(code), grpc.StatusCode.UNKNOWN),
                          message)
        if request.startswith(b"sleep:"):
            deadline = time.monotonic() + int(request[6:]) / 1000
            while context.is_active() and time.monotonic() < deadline:
                time.sleep(min(0.01, max(0, deadline - time.monotonic())))
        return request

    def server_stream(self, request, context):
        self.count("/sluice.test.Echo/ServerStream")
        self.echo_metadata(context)
        context.set_trailing_metadata([("x-trailer", "server-stream")])
        parts = [int(p) for p in request.decode().split(":")]
        count, size, delay_ms = (parts + [0])[:3]
        for i in range(count):
            if not context.is_active():
                return
            if delay_ms and i:
                time.sleep(delay_ms / 1000)
            yield pattern(i, size)

    def client_stream(self, request_iterator, context):
        self.count("/sluice.test.Echo/ClientStream")
        self.echo_metadata(context)
        count = total = 0
        for message in request_iterator:
            count += 1
            total += len(message)
        return f"count={count} bytes={total}".encode()

    def bidi(self, request_iterator, context):
        self.count("/sluice.test.Echo/Bidi")
        self.echo_metadata(context)
        for message in request_iterator:
            yield message

    def stats(self, request, context):
        with self.lock:
            return json.dumps(self.counts, sort_keys=True).encode()

    def health_check(self, request, context):
        self.count("/grpc.health.v1.Health/Check")
        service = decode_fields(request).get(1, b"").decode()
        statuses = {"": "SERVING"}
        if self.health_file and os.path.exists(self.health_file):
            statuses = {}
            with open(self.health_file) as f:
                for line in f:
                    if "=" in line:
                        name, status = line.strip().split("=", 1)
                        statuses[name.strip()] = status.strip()
        if service not in statuses:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        status = statuses[service]
        number = HEALTH_STATUS.index(status) if status in HEALTH_STATUS else int(status)
        return encode_fields([(1, number)] if number else [])


def serve(args):
    echo = EchoServer(args.health_file)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                 ("grpc.max_send_message_length", MAX_MESSAGE)])
    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler("sluice.test.Echo", {
            "Unary": grpc.unary_unary_rpc_method_handler(echo.unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(echo.server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(echo.client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(echo.bidi),
            "Stats": grpc.unary_unary_rpc_method_handler(echo.stats),
        }),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(echo.health_check),
        }),
    ])
    if args.tls:
        with open(args.tls[0], "rb") as cert, open(args.tls[1], "rb") as key:
            pair = (key.read(), cert.read())
        if args.client_ca:
            with open(args.client_ca, "rb") as ca:
                credentials = grpc.ssl_server_credentials(
                    [pair], root_certificates=ca.read(), require_client_auth=True)
        else:
            credentials = grpc.ssl_server_credentials([pair])
        port = server.add_secure_port(f"127.0.0.1:{args.port}", credentials)
    else:
        port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    if port == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    server.start()
    print(f"listening on {port}", flush=True)
    while not stopped.wait(0.2):
        pass
    server.stop(0).wait()
    return 0


# ---------------------------------------------------------------- client


def metadata_dict(metadata):
    out = {}
    for key, value in metadata or ():
        if isinstance(value, bytes):  # -bin keys
            value = base64.b64encode(value).decode()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def call(args):
    options = [("grpc.enable_http_proxy", 0),
               ("grpc.enable_retries", 0),  # every attempt is the test's
               ("grpc.max_receive_message_length", MAX_MESSAGE),
               ("grpc.max_send_message_length", MAX_MESSAGE)]
    if args.authority:
        options.append(("grpc.default_authority", args.authority))
    if args.tls:
        if args.authority:
            options.append(("grpc.ssl_target_name_override", args.authority))
        with open(args.tls, "rb") as ca:
            credentials = grpc.ssl_channel_credentials(root_certificates=ca.read())
        channel = grpc.secure_channel(args.target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(args.target, options=options)

    metadata = []
    for item in args.metadata:
        if "=" not in item:
            print(f"--metadata wants K=V, got {item!r}", file=sys.stderr)
            return 2
        key, value = item.split("=", 1)
        key = key.lower()
        metadata.append((key, base64.b64decode(value) if key.endswith("-bin") else value))
    kwargs = {"timeout": args.timeout, "metadata": metadata}
    payload = args.payload.encode() if args.payload is not None else None
    report = {"ok": False, "code": None, "details": "", "initial_metadata": {},
              "trailing_metadata": {}, "responses": 0, "bytes": 0, "payload": None,
              "verified": False, "status": None, "stats": None, "elapsed_ms": 0}
    responses = []
    sent = []  # what was sent, for the echo checks
    rpc = None
    start = time.monotonic()
    # Beside the call, on its connection: waves of unary calls the upstream
    # answers too late, each ending at its deadline (the client resets it).
    expiring = {}
    expiring_thread = None
    if args.expiring:
        def expire():
            for _ in range(args.expiring_waves):
                calls = [channel.unary_unary("/sluice.test.Echo/Unary").future(
                    b"hang:5000", timeout=args.expiring_timeout) for _ in range(args.expiring)]
                for future in calls:
                    name = future.code().name
                    expiring[name] = expiring.get(name, 0) + 1
        expiring_thread = threading.Thread(target=expire)
        expiring_thread.start()

    try:
        if args.kind == "unary":
            sent = [payload if payload is not None else b"hello"]
            response, rpc = channel.unary_unary("/sluice.test.Echo/Unary").with_call(
                sent[0], **kwargs)
            responses = [response]
        elif args.kind == "stats":
            response, rpc = channel.unary_unary("/sluice.test.Echo/Stats").with_call(b"", **kwargs)
            responses = [response]
            report["stats"] = json.loads(response)
        elif args.kind == "health":
            request = encode_fields([(1, args.service.encode())] if args.service else [])
            response, rpc = channel.unary_unary(
                "/grpc.health.v1.Health/Check").with_call(request, **kwargs)
            responses = [response]
            status = decode_fields(response).get(1, 0)
            report["status"] = (HEALTH_STATUS[status] if status < len(HEALTH_STATUS)
                                else str(status))
        elif args.kind == "server-stream":
            request = payload if payload is not None else f"{args.count}:{args.size}".encode()
            rpc = channel.unary_stream("/sluice.test.Echo/ServerStream")(request, **kwargs)
            for response in rpc:
                responses.append(response)
        elif args.kind == "client-stream":
            sent = [payload if payload is not None else pattern(i, args.size)
                    for i in range(args.count)]
            response, rpc = channel.stream_unary("/sluice.test.Echo/ClientStream").with_call(
                iter(sent), **kwargs)
            responses = [response]
        elif args.kind == "bidi":
            # Ping-pong: message i+1 goes out only after echo i came back, so a
            # peer that buffers the request stream shows up as a stall.
            turns = queue.Queue()

            def requests():
                for i in range(args.count):
                    if i and not turns.get():
                        return
                    message = payload if payload is not None else pattern(i, args.size)
                    sent.append(message)
                    yield message

            rpc = channel.stream_stream("/sluice.test.Echo/Bidi")(requests(), **kwargs)
            try:
                for response in rpc:
                    responses.append(response)
                    turns.put(True)
            finally:
                turns.put(False)  # unblocks requests() if the call ended
    except grpc.RpcError as error:
        rpc = error  # for unary calls the error is the call
    report["elapsed_ms"] = round((time.monotonic() - start) * 1000)
    if expiring_thread is not None:
        expiring_thread.join()
        report["expiring"] = expiring

    code = rpc.code()
    report.update(
        ok=code == grpc.StatusCode.OK, code=code.name, details=rpc.details() or "",
        initial_metadata=metadata_dict(rpc.initial_metadata()),
        trailing_metadata=metadata_dict(rpc.trailing_metadata()),
        responses=len(responses), bytes=sum(len(r) for r in responses))
    if responses and len(responses[0]) <= 4096:
        try:
            text = responses[0].decode()
            report["payload"] = text if text.isprintable() else None
        except UnicodeDecodeError:
            pass
    if report["ok"]:
        if args.kind == "unary":
            report["verified"] = responses == sent
        elif args.kind == "server-stream":
            count, size = (int(p) for p in request.decode().split(":")[:2])
            report["verified"] = responses == [pattern(i, size) for i in range(count)]
        elif args.kind == "client-stream":
            report["verified"] = responses[0] == (
                f"count={len(sent)} bytes={sum(len(m) for m in sent)}".encode())
        elif args.kind == "bidi":
            report["verified"] = responses == sent and len(sent) == args.count
        else:
            report["verified"] = True
    print(json.dumps(report, sort_keys=True), flush=True)
    channel.close()
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    server = modes.add_parser("server")
    server.add_argument("--port", type=int, default=0)
    server.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    server.add_argument("--client-ca", metavar="CA",
                        help="with --tls: require a client certificate from this CA")
    server.add_argument("--health-file")
    client = modes.add_parser("call")
    client.add_argument("target")
    client.add_argument("kind", choices=["unary", "server-stream", "client-stream",
                                         "bidi", "health", "stats"])
    client.add_argument("--tls", metavar="CA")
    client.add_argument("--authority")
    client.add_argument("--payload")
    client.add_argument("--count", type=int, default=3)
    client.add_argument("--size", type=int, default=16)
    client.add_argument("--timeout", type=float)
    client.add_argument("--metadata", action="append", default=[])
    client.add_argument("--service", default="")
    client.add_argument("--expiring", type=int, default=0,
                        help="unary calls per wave that outlive their deadline, beside the call")
    client.add_argument("--expiring-timeout", type=float, default=0.3)
    client.add_argument("--expiring-waves", type=int, default=1)
    args = parser.parse_args()
    try:
        sys.exit(serve(args) if args.mode == "server" else call(args))
    except (OSError, ValueError) as e:  # the test prints what went wrong
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
