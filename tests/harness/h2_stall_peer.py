"""An HTTP/2 (h2c, prior knowledge) upstream that answers the first N
requests on each connection (200, body "ok") and then hangs: it reads on but
answers nothing more, not even a PING. For tests of how a proxy notices a
peer that stopped answering without closing. Standard library only; frames
are written by hand.

Usage: h2_stall_peer.py N [hold]
With "hold" the peer stays alive after its N answers: it acknowledges
SETTINGS and PINGs but answers no further request (a slow, healthy server).
Prints "listening on PORT", then one line per event, flushed:
"connection C" (the C-th accepted), "headers C STREAM", "ping C",
"goaway C", "closed C" (the proxy closed connection C).
"""
import os
import sys

# The frame helpers of the reset peer, which sits beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from h2_reset_peer import frame, frames, listen_and_serve  # noqa: E402


# HPACK: ":status: 200" (static index 8), content-length (static index 28,
# literal without indexing) "2".
OK_HEAD = b"\x88\x0f\x0d\x012"


def say(lock, line):
    with lock:
        print(line, flush=True)


def serve(conn, number, answers, hold, lock):
    answered = 0
    try:
        for kind, flags, stream, payload in frames(conn):
            live = answered < answers
            if kind == 0x4 and not flags & 0x1 and (live or hold):
                conn.sendall(frame(0x4, 0x1, 0))  # SETTINGS ACK
            elif kind == 0x6 and not flags & 0x1:
                say(lock, f"ping {number}")
                if live or hold:
                    conn.sendall(frame(0x6, 0x1, 0, payload))  # PING ACK
            elif kind == 0x7:
                say(lock, f"goaway {number}")
            elif kind == 0x1:
                say(lock, f"headers {number} {stream}")
                if live:
                    answered += 1
                    conn.sendall(frame(0x1, 0x4, stream, OK_HEAD) +
                                 frame(0x0, 0x1, stream, b"ok"))
    except OSError:
        pass
    finally:
        say(lock, f"closed {number}")
        conn.close()


def main():
    answers = int(sys.argv[1])
    hold = len(sys.argv) > 2 and sys.argv[2] == "hold"

    def serve_one(conn, number, lock):
        say(lock, f"connection {number}")
        serve(conn, number, answers, hold, lock)

    listen_and_serve(serve_one)


if __name__ == "__main__":
    main()
