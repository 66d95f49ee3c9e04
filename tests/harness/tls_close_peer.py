"""An HTTPS upstream whose responses are delimited by the close of the
connection (no Content-Length, no chunked coding), for tests of what a proxy
makes of how that close comes: GET /clean... ends with the TLS close_notify
(the response is whole; any path holding "/clean"), anything else closes TCP without it (the response
may have been cut, RFC 9112 9.8). Standard library only.

With CLIENT_CA it requires a client certificate issued by it (TLS 1.3: a
client without one learns it from an alert after its side of the handshake).

Usage: tls_close_peer.py CERT KEY [CLIENT_CA]
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


def linger(raw):
    try:
        raw.settimeout(5)
        while raw.recv(4096):
            pass
    except OSError:
        pass
    finally:
        raw.close()


def main():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[1], sys.argv[2])
    if len(sys.argv) > 3:
        context.load_verify_locations(sys.argv[3])
        context.verify_mode = ssl.CERT_REQUIRED
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print("listening on", listener.getsockname()[1], flush=True)
    while True:
        raw, _ = listener.accept()
        conn = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        try:
            conn.do_handshake()
        except (OSError, ssl.SSLError):
            # The alert is out; wait for the peer's close (at most 5 s) so that
            # a request it sends meanwhile is not answered with a TCP reset,
            # which would discard the alert before the peer reads it. (The TLS
            # object owns the descriptor: take it back as a plain socket.)
            plain = socket.socket(fileno=conn.detach())
            threading.Thread(target=linger, args=(plain,), daemon=True).start()
            continue
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
