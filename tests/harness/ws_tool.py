#!/usr/bin/python3
"""WebSocket peers for integration tests (Debian's python3-websockets).

  ws_tool.py server [PORT]    echo server on 127.0.0.1, PORT or an ephemeral
                              one; prints "listening on PORT", serves until
                              killed
  ws_tool.py raw101           a plain TCP server that answers every request
                              with "101 Switching Protocols" (upgrade:
                              websocket; none for a path with "none", h2c for
                              one with "h2c"); for a path with "slow", after
                              1.5 s, then it keeps the connection 10 s, or
                              until the gateway closes it, and prints "after
                              101 got N bytes: ..." (what came); for one
                              with "rst", it resets the connection after the
                              101; prints the port
  ws_tool.py client URL [HOLD] connects, exchanges text and binary messages
                              (up to 1 MiB), keeps the connection HOLD seconds
                              (default 0) and exchanges one more; prints
                              "ok N" or an error
  ws_tool.py idle URL SECONDS connects, sends nothing, and prints
                              "closed after X" once the peer closes (at most
                              SECONDS), or "still open"
  ws_tool.py chat URL SECONDS connects, prints "open", then exchanges a
                              message every 0.2 s; prints "closed after X"
                              once the connection ends (at most SECONDS),
                              or "still open"
Exit status 0 when the check passed, 1 otherwise.
"""
import asyncio
import os
import socket
import struct
import sys
import threading
import time

import websockets


async def serve(port=0):
    async def echo(ws, path=None):
        async for message in ws:
            await ws.send(message)

    async with websockets.serve(echo, "127.0.0.1", port, max_size=4 << 20) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on {port}", flush=True)
        await asyncio.Future()


def raw101():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print(f"listening on {listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=answer101, args=(conn,), daemon=True).start()


def answer101(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\r\n", 1)[0]
    upgrade = b"upgrade: websocket\r\n"
    if b"none" in line:
        upgrade = b""
    elif b"h2c" in line:
        upgrade = b"upgrade: h2c\r\n"
    if b"slow" in line:
        time.sleep(1.5)
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\n" + upgrade +
                 b"connection: upgrade\r\n\r\n")
    if b"slow" in line:
        # Up to 10 s: what comes after the 101, until the gateway closes.
        conn.settimeout(10)
        got = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
        print(f"after 101 got {len(got)} bytes: {got!r}", flush=True)
    if b"rst" in line:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


async def client(url, hold):
    async with websockets.connect(url, open_timeout=10, max_size=4 << 20) as ws:
        messages = ["hello", "x" * 70000, os.urandom(1 << 20), b"\x00\xff" * 10]
        for m in messages:
            await ws.send(m)
            got = await asyncio.wait_for(ws.recv(), 10)
            if got != m:
                print(f"mismatch: sent {len(m)} got {len(got)}")
                return 1
        # Many small messages in flight at once.
        for i in range(200):
            await ws.send(f"m{i}")
        for i in range(200):
            got = await asyncio.wait_for(ws.recv(), 10)
            if got != f"m{i}":
                print(f"out of order: {got}")
                return 1
        if hold > 0:
            await asyncio.sleep(hold)  # outlive the route timeout
            await ws.send("after hold")
            if await asyncio.wait_for(ws.recv(), 10) != "after hold":
                print("no echo after hold")
                return 1
        print(f"ok {len(messages) + 200}")
        return 0


async def idle(url, seconds):
    async with websockets.connect(url, open_timeout=10, ping_interval=None) as ws:
        start = time.monotonic()
        try:
            await asyncio.wait_for(ws.wait_closed(), seconds)
        except asyncio.TimeoutError:
            print("still open")
            return 1
        print(f"closed after {time.monotonic() - start:.2f}")
        return 0


async def chat(url, seconds):
    async with websockets.connect(url, open_timeout=10, ping_interval=None) as ws:
        print("open", flush=True)
        start = time.monotonic()
        try:
            while time.monotonic() - start < seconds:
                await ws.send("tick")
                await asyncio.wait_for(ws.recv(), 5)
                await asyncio.sleep(0.2)
        except (websockets.ConnectionClosed, asyncio.TimeoutError):
            print(f"closed after {time.monotonic() - start:.2f}")
            return 0
        print("still open")
        return 1


def main():
    if len(sys.argv) < 2 or any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    mode = sys.argv[1]
    if mode == "server":
        asyncio.run(serve(int(sys.argv[2]) if len(sys.argv) > 2 else 0))
    elif mode == "raw101":
        raw101()
    elif mode == "client":
        try:
            hold = float(sys.argv[3]) if len(sys.argv) > 3 else 0
            sys.exit(asyncio.run(client(sys.argv[2], hold)))
        except Exception as e:  # the test prints what went wrong
            print(f"error: {type(e).__name__}: {e}")
            sys.exit(1)
    elif mode in ("idle", "chat"):
        try:
            run = idle if mode == "idle" else chat
            sys.exit(asyncio.run(run(sys.argv[2], float(sys.argv[3]))))
        except Exception as e:
            print(f"error: {type(e).__name__}: {e}")
            sys.exit(1)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
