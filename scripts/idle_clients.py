#!/usr/bin/python3
"""Opens N connections to 127.0.0.1:PORT, sends one request on each and reads
its response (so each is an idle keep-alive connection), prints "ready", then
holds them until stdin closes. Usage: idle_clients.py PORT N [tls]"""
import asyncio
import ssl
import sys


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
    await asyncio.gather(*(one(port, context, sem, conns) for _ in range(n)))
    print(f"ready {len(conns)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


asyncio.run(main())
