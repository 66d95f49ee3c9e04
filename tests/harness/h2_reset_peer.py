"""An HTTP/2 (h2c, prior knowledge) upstream that answers no request: it
resets every stream the client opens with RST_STREAM and the error code given
(2 INTERNAL_ERROR, 7 REFUSED_STREAM), for tests of what a proxy does with
streams its upstream reset. Standard library only; frames are written by hand.

Usage: h2_reset_peer.py CODE
Prints "listening on PORT", then "headers STREAM" for every HEADERS frame
received (one line each, flushed), so a test can count the sends.
"""
import socket
import struct
import sys
import threading

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve(conn, code, lock):
    try:
        if read_exact(conn, len(PREFACE)) != PREFACE:
            return
        conn.sendall(frame(0x4, 0, 0))  # our SETTINGS (defaults)
        while True:
            header = read_exact(conn, 9)
            if header is None:
                return
            length = int.from_bytes(header[0:3], "big")
            kind, flags = header[3], header[4]
            stream = int.from_bytes(header[5:9], "big") & 0x7fffffff
            if read_exact(conn, length) is None:
                return
            if kind == 0x4 and not flags & 0x1:
                conn.sendall(frame(0x4, 0x1, 0))  # SETTINGS ACK
            elif kind == 0x6 and not flags & 0x1:
                conn.sendall(frame(0x6, 0x1, 0, b"\0" * 8))  # PING ACK
            elif kind == 0x1:
                with lock:
                    print(f"headers {stream}", flush=True)
                conn.sendall(frame(0x3, 0, stream, struct.pack(">I", code)))
    except OSError:
        pass
    finally:
        conn.close()


def main():
    code = int(sys.argv[1])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print(f"listening on {listener.getsockname()[1]}", flush=True)
    lock = threading.Lock()
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, code, lock), daemon=True).start()


if __name__ == "__main__":
    main()
