#!/usr/bin/python3
"""Opens N connections to 127.0.0.1:PORT, sends one request on each and reads
its response (so each is an idle keep-alive connection), prints "ready", then
holds them until stdin closes. Usage: [IDLE_HEADERS=browser] idle_clients.py PORT N [tls|h2c]

h2c: HTTP/2 with prior knowledge, one GET on stream 1 (HPACK literals, no
Huffman), read until that stream ends; the connection then stays open."""
import asyncio
import os
import ssl
import sys


# IDLE_HEADERS=browser: each request carries the fields a browser sends
# (about 700 bytes, as Chromium's navigation request), not Host alone.
BROWSER = [
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                    b"Chrome/131.0.0.0 Safari/537.36"),
    (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
                b"image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"),
    (b"accept-encoding", b"gzip, deflate, br, zstd"),
    (b"accept-language", b"en-US,en;q=0.9,de;q=0.8"),
    (b"cache-control", b"max-age=0"),
    (b"cookie", b"session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; theme=dark; consent=1"),
    (b"sec-ch-ua", b'"Chromium";v="131", "Not_A Brand";v="24"'),
    (b"sec-ch-ua-mobile", b"?0"),
    (b"sec-ch-ua-platform", b'"Linux"'),
    (b"sec-fetch-dest", b"document"),
    (b"sec-fetch-mode", b"navigate"),
    (b"sec-fetch-site", b"none"),
    (b"sec-fetch-user", b"?1"),
    (b"upgrade-insecure-requests", b"1"),
] if os.environ.get("IDLE_HEADERS") == "browser" else []


def frame(kind, flags, stream, payload):
    return (len(payload).to_bytes(3, "big") + bytes([kind, flags]) +
            stream.to_bytes(4, "big") + payload)


def length(n):
    # A string length: 7-bit prefix integer, no Huffman (RFC 7541 5.1, 5.2).
    if n < 127:
        return bytes([n])
    out, n = [127], n - 127
    while n >= 128:
        out.append(n % 128 + 128)
        n //= 128
    return bytes(out + [n])


def literal(name, value):
    # Literal header field without indexing, new name (RFC 7541 6.2.2).
    return bytes([0x00]) + length(len(name)) + name + length(len(value)) + value


async def one_h2c(port, sem, conns):
    async with sem:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        block = (literal(b":method", b"GET") + literal(b":scheme", b"http") +
                 literal(b":path", b"/idle") + literal(b":authority", b"localhost") +
                 b"".join(literal(name, value) for name, value in BROWSER))
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
        writer.write(b"GET /idle HTTP/1.1\r\nhost: localhost\r\n" +
                     b"".join(name + b": " + value + b"\r\n" for name, value in BROWSER) + b"\r\n")
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
