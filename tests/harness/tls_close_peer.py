"""An HTTPS upstream whose responses are delimited by the close of the
connection (no Content-Length, no chunked coding), for tests of what a proxy
makes of how that close comes: GET /clean... ends with the TLS close_notify
(the response is whole; any path holding "/clean"), anything else closes TCP without it (the response
may have been cut, RFC 9112 9.8). Standard library only.

Usage: tls_close_peer.py CERT KEY
Prints "listening on PORT" (flushed), then serves until killed.
"""
import socket
import ssl
import sys
import threading


def serve(conn):
    try:
        conn.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        path = head.split(b" ", 2)[1]
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                     b"connection: close\r\n\r\nthe body, up to the close\n")
        if b"/clean" in path:
            try:
                conn.unwrap()  # close_notify, then the close
            except (OSError, ssl.SSLError):
                pass
    except (OSError, ssl.SSLError):
        pass
    finally:
        conn.close()  # no close_notify of its own: Python closes the socket only


def main():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[1], sys.argv[2])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print("listening on", listener.getsockname()[1], flush=True)
    while True:
        raw, _ = listener.accept()
        try:
            conn = context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            continue
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
