"""An HTTP/2 (h2c, prior knowledge) upstream that answers no request: it
resets every stream the client opens with RST_STREAM and the error code given
(2 INTERNAL_ERROR, 7 REFUSED_STREAM), for tests of what a proxy does with
streams its upstream reset. Standard library only; frames are written by hand.

Usage: h2_reset_peer.py CODE [after-response | after-grpc-web-response]
       h2_reset_peer.py head STATUS [NAME=VALUE ...]
       h2_reset_peer.py close
       h2_reset_peer.py respond STATUS BODY [NAME=VALUE ...]
With "after-response", each stream first gets a response head (200,
content-length 2000) and 1000 body bytes, then the RST_STREAM, all in one
write: a response cut after it began. With "after-grpc-web-response", the
head is a gRPC-Web one (200, content-type application/grpc-web+proto, no
length) and the body one gRPC-Web message frame ("hello"), then the reset. With "head", each stream is answered
with one HEADERS frame that ends it (:status STATUS and the fields given), and
no reset: a trailers-only gRPC answer, or a 1xx that illegally ends a stream.
With "respond", each stream is answered with a HEADERS frame (:status
STATUS and the fields given, whose values may carry Python escapes such as
\\x00) and one DATA frame with BODY that ends the stream, in one write:
whatever the fields say (an upstream that breaks the rules of RFC 9113 8.2,
a content-length the body does not match). With "close", the connection is
closed (TCP, no GOAWAY) at the first HEADERS frame, as by an upstream that
crashed while it had the request. Prints "listening on PORT", then "headers
STREAM" for every HEADERS frame received (one line each, flushed), so a test
can count the sends.
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


# HPACK: ":status: 200" (static index 8), then content-length (static
# index 28, literal without indexing) "2000".
CUT_HEAD = b"\x88\x0f\x0d\x042000"


def frames(conn):
    """Reads the client preface and answers with our SETTINGS (defaults),
    then yields each frame the client sends as (type, flags, stream,
    payload) until it closes."""
    if read_exact(conn, len(PREFACE)) != PREFACE:
        return
    conn.sendall(frame(0x4, 0, 0))
    while True:
        header = read_exact(conn, 9)
        if header is None:
            return
        length = int.from_bytes(header[0:3], "big")
        stream = int.from_bytes(header[5:9], "big") & 0x7fffffff
        payload = read_exact(conn, length)
        if payload is None:
            return
        yield header[3], header[4], stream, payload


def literal(name, value):
    """One HPACK field, literal without indexing with a new name (lengths
    under 127, no Huffman coding)."""
    name, value = name.encode(), value.encode()
    return bytes([0, len(name)]) + name + bytes([len(value)]) + value


def head_block(status, fields):
    # ":status" by its static-table name (index 8), then the fields.
    block = bytes([0x08, len(status)]) + status.encode()
    for field in fields:
        name, value = field.split("=", 1)
        block += literal(name, value)
    return block


def serve(conn, code, lock, after_response, head=None, body=None):
    try:
        for kind, flags, stream, payload in frames(conn):
            if kind == 0x4 and not flags & 0x1:
                conn.sendall(frame(0x4, 0x1, 0))  # SETTINGS ACK
            elif kind == 0x6 and not flags & 0x1:
                conn.sendall(frame(0x6, 0x1, 0, payload))  # PING ACK
            elif kind == 0x1:
                with lock:
                    print(f"headers {stream}", flush=True)
                if code == "close":
                    return
                if head is not None and body is not None:  # END_HEADERS, DATA END_STREAM
                    conn.sendall(frame(0x1, 0x4, stream, head) + frame(0x0, 0x1, stream, body))
                    continue
                if head is not None:  # END_STREAM | END_HEADERS
                    conn.sendall(frame(0x1, 0x5, stream, head))
                    continue
                reset = frame(0x3, 0, stream, struct.pack(">I", code))
                if after_response == "grpc-web":
                    web_head = head_block("200", ["content-type=application/grpc-web+proto"])
                    reset = frame(0x1, 0x4, stream, web_head) + \
                        frame(0x0, 0, stream, b"\x00\x00\x00\x00\x05hello") + reset
                elif after_response:
                    reset = frame(0x1, 0x4, stream, CUT_HEAD) + \
                        frame(0x0, 0, stream, b"x" * 1000) + reset
                conn.sendall(reset)
    except OSError:
        pass
    finally:
        conn.close()


def listen_and_serve(serve_one):
    """Listens on a free loopback port, prints "listening on PORT", then
    runs serve_one(conn, number, lock) on a thread for each connection
    accepted (number: 1 for the first), for ever."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print(f"listening on {listener.getsockname()[1]}", flush=True)
    lock = threading.Lock()
    number = 0
    while True:
        conn, _ = listener.accept()
        number += 1
        threading.Thread(target=serve_one, args=(conn, number, lock), daemon=True).start()


def main():
    if sys.argv[1] == "close":
        listen_and_serve(lambda conn, _, lock: serve(conn, "close", lock, False))
        return
    if sys.argv[1] == "respond":
        fields = [f.encode("latin-1").decode("unicode_escape") for f in sys.argv[4:]]
        block = head_block(sys.argv[2], fields)
        body = sys.argv[3].encode()
        listen_and_serve(lambda conn, _, lock: serve(conn, 0, lock, False, block, body))
        return
    if sys.argv[1] == "head":
        block = head_block(sys.argv[2], sys.argv[3:])
        listen_and_serve(lambda conn, _, lock: serve(conn, 0, lock, False, block))
        return
    code = int(sys.argv[1])
    after_response = len(sys.argv) > 2 and sys.argv[2] == "after-response"
    if len(sys.argv) > 2 and sys.argv[2] == "after-grpc-web-response":
        after_response = "grpc-web"
    listen_and_serve(lambda conn, _, lock: serve(conn, code, lock, after_response))


if __name__ == "__main__":
    main()
