#!/usr/bin/python3
"""Opens N connections to 127.0.0.1:PORT, sends one request on each and reads
its response (so each is an idle keep-alive connection), prints "ready", then
holds them until stdin closes. Usage: idle_clients.py PORT N [tls|h2c]

h2c: HTTP/2 with prior knowledge, one GET on stream 1 (HPACK literals, no
Huffman), read until that stream ends; the connection then stays open."""
import asyncio
import ssl
import sys


def frame(kind, flags, stream, payload):
    return (len(payload).to_bytes(3, "big") + bytes([kind, flags]) +
            stream.to_bytes(4, "big") + payload)


def literal(name, value):
    # Literal header field without indexing, new name (RFC 7541 6.2.2).
    return bytes([0x00, len(name)]) + name + bytes([len(value)]) + value


async def one_h2c(port, sem, conns):
    async with sem:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        block = (literal(b":method", b"GET") + literal(b":scheme", b"http") +
                 literal(b":path", b"/idle") + literal(b":authority", b"localhost"))
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") +
                     frame(1, 0x5, 1, block))  # HEADERS, END_STREAM | END_HEADERS
        await writer.drain()
        done = False
        while not done:
            head = await reader.readexactly(9)
            length = int.from_bytes(head[:3], "big")
            kind, flags = head[3], head[4]
            stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            await reader.readexactly(length)
            if kind == 4 and not flags & 1:  # SETTINGS: acknowledge
                writer.write(frame(4, 1, 0, b""))
            if stream == 1 and kind in (0, 1) and flags & 1:
                done = True
        await writer.drain()
        conns.append(writer)


async def one(port, context, sem, conns):
    async with sem:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                       server_hostname="localhost" if context else None)
        writer.write(b"GET /idle HTTP/1.1\r\nhost: localhost\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        conns.append(writer)


async def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    context = None
    if len(sys.argv) > 3 and sys.argv[3] == "tls":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    sem = asyncio.Semaphore(200)
    conns = []
    if len(sys.argv) > 3 and sys.argv[3] == "h2c":
        await asyncio.gather(*(one_h2c(port, sem, conns) for _ in range(n)))
    else:
        await asyncio.gather(*(one(port, context, sem, conns) for _ in range(n)))
    print(f"ready {len(conns)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


asyncio.run(main())
