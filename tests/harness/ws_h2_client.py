#!/usr/bin/python3
"""A WebSocket client over HTTP/2 (RFC 8441 extended CONNECT), frames written
by hand (standard library only: Debian packages no HTTP/2 WebSocket client).

Usage: ws_h2_client.py --port PORT --path PATH [--tls] [--mode MODE]
  It opens h2c with prior knowledge (or TLS with ALPN h2), prints
  "enable_connect_protocol=N" from the server's SETTINGS, sends
  CONNECT :protocol websocket with Sec-WebSocket-Version 13 and prints
  "status N" (with the body, when it is no 200). On a 200, by MODE:
  echo        sends a text message and a 200 KB binary one, checks the echo,
              then a Close frame; prints "ok" once the Close frame came back
              and the stream ended (END_STREAM)
  half-close  sends a text message, checks the echo, then ends the stream
              with no Close frame; prints "ended" once the server ends its
              side too
  early       sends its text message in the same write as its HEADERS,
              before the 200, then checks the echo as `echo` does
  hold        sends a text message, checks the echo, then waits (10 s) for
              the server to end the stream: prints "ended after X" (its
              END_STREAM, X seconds after the echo) or "still open"
  reset       sends a text message, checks the echo, resets the stream
              (CANCEL), then sends a GET / on stream 3 of the same
              connection; prints "reset, then N" with that GET's status
Exit status 0 when the check passed, 1 otherwise.
"""
import argparse
import os
import socket
import ssl
import struct
import sys
import time

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'
STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}
WAIT = 10.0


def frame(kind, flags, stream, payload=b''):
    return struct.pack('>I', len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack('>I', stream) + payload


def literal(name, value):
    """A literal field line without indexing, new name, no Huffman (short strings)."""
    assert len(name) < 127 and len(value) < 127
    return b'\x00' + bytes([len(name)]) + name + bytes([len(value)]) + value


def integer(data, pos, prefix):
    """An HPACK integer with a `prefix`-bit prefix at data[pos]: (value, next pos)."""
    limit = (1 << prefix) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        value += (b & 0x7f) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def status_of(block):
    """The :status of a response header block (the first field, as RFC 9113 8.3
    puts pseudo-header fields first), or an error string."""
    pos = 0
    while pos < len(block) and block[pos] & 0xe0 == 0x20:  # dynamic table size update
        _, pos = integer(block, pos, 5)
    b = block[pos]
    if b & 0x80:
        index, _ = integer(block, pos, 7)
        return STATIC_STATUS.get(index, f'indexed field {index}')
    prefix = 6 if b & 0x40 else 4
    index, pos = integer(block, pos, prefix)
    if index != 8 and not 8 <= index <= 14:
        return f'first field has name index {index}'
    huffman = block[pos] & 0x80
    length, pos = integer(block, pos, 7)
    value = block[pos:pos + length]
    return int(digits_of_huffman(value) if huffman else value)


def digits_of_huffman(data):
    """Decimal digits in RFC 7541's Huffman code (Appendix B): '0'-'2' are
    00000-00010, '3'-'9' 011001-011111; the padding is ones."""
    bits = ''.join(f'{b:08b}' for b in data)
    out, pos = '', 0
    while pos + 5 <= len(bits) and bits[pos:pos + 5] != '11111':
        if bits[pos:pos + 4] == '0000' or bits[pos:pos + 5] == '00010':
            out += str(int(bits[pos:pos + 5], 2))
            pos += 5
        elif bits[pos:pos + 3] == '011' and pos + 6 <= len(bits):
            out += str(int(bits[pos:pos + 6], 2) - 0b011001 + 3)
            pos += 6
        else:
            raise ValueError(f'not a Huffman-coded number: {data.hex()}')
    return out


def ws_frame(opcode, payload):
    """A masked client frame (RFC 6455 5.2)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack('>H', n)
    else:
        head += bytes([0x80 | 127]) + struct.pack('>Q', n)
    mask = os.urandom(4)
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


def parse_ws(buf):
    """One whole server frame from buf: (opcode, payload, rest) or None."""
    if len(buf) < 2:
        return None
    opcode, n, pos = buf[0] & 0x0f, buf[1] & 0x7f, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, pos = struct.unpack('>H', buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, pos = struct.unpack('>Q', buf[2:10])[0], 10
    if len(buf) < pos + n:
        return None
    return opcode, bytes(buf[pos:pos + n]), buf[pos + n:]


class Conn:
    def __init__(self, port, tls):
        sock = socket.create_connection(('127.0.0.1', port), timeout=WAIT)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(['h2'])
            sock = ctx.wrap_socket(sock, server_hostname='localhost')
            if sock.selected_alpn_protocol() != 'h2':
                raise SystemExit(f'ALPN chose {sock.selected_alpn_protocol()}')
        self.sock = sock
        self.buf = b''
        self.ws = b''          # WebSocket bytes the stream's DATA carried
        self.ended = False     # the server's END_STREAM came
        self.status = None
        self.stream = 1        # the stream whose frames are read
        self.goaway = None     # the code of a GOAWAY received
        self.head_block = b''
        self.server_settings = {}

    def send(self, data):
        self.sock.sendall(data)

    def next_frame(self, deadline):
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], 'big'):
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                got = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLError):
                return None
            if not got:
                return None
            self.buf += got
        n = int.from_bytes(self.buf[:3], 'big')
        kind, flags = self.buf[3], self.buf[4]
        stream = struct.unpack('>I', self.buf[5:9])[0] & 0x7fffffff
        payload = self.buf[9:9 + n]
        self.buf = self.buf[9 + n:]
        return kind, flags, stream, payload

    def pump(self, until, timeout=WAIT):
        """Handles frames until until() holds; False at the deadline or a close."""
        deadline = time.monotonic() + timeout
        while not until():
            f = self.next_frame(deadline)
            if f is None:
                return False
            kind, flags, stream, payload = f
            if kind == SETTINGS and not flags & ACK:
                for i in range(0, len(payload), 6):
                    ident, value = struct.unpack('>HI', payload[i:i + 6])
                    self.server_settings[ident] = value
                self.send(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                self.send(frame(PING, ACK, 0, payload))
            elif kind == HEADERS and stream == self.stream:
                self.head_block += payload
                if flags & END_HEADERS and self.status is None:
                    self.status = status_of(self.head_block)
                if flags & END_STREAM:
                    self.ended = True
            elif kind == DATA and stream == self.stream:
                self.ws += payload
                if payload:  # credit back what was read, stream and connection
                    inc = struct.pack('>I', len(payload))
                    self.send(frame(WINDOW_UPDATE, 0, 0, inc) +
                              frame(WINDOW_UPDATE, 0, self.stream, inc))
                if flags & END_STREAM:
                    self.ended = True
            elif kind == RST_STREAM and stream == self.stream:
                print(f'stream reset, code {struct.unpack(">I", payload)[0]}')
                return False
            elif kind == GOAWAY:  # a drain: the streams it lets finish go on
                self.goaway = struct.unpack('>I', payload[4:8])[0]
        return True

    def ws_message(self):
        got = []

        def whole():
            parsed = parse_ws(self.ws)
            if parsed:
                got.append(parsed[:2])
                self.ws = parsed[2]
            return bool(got) or self.ended
        self.pump(whole)
        return got[0] if got else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--path', required=True)
    parser.add_argument('--tls', action='store_true')
    parser.add_argument('--mode', default='echo',
                        choices=['echo', 'half-close', 'early', 'reset', 'hold'])
    args = parser.parse_args()
    c = Conn(args.port, args.tls)
    c.send(PREFACE + frame(SETTINGS, 0, 0))
    if not c.pump(lambda: bool(c.server_settings)):
        print('no SETTINGS from the server')
        return 1
    print(f'enable_connect_protocol={c.server_settings.get(8, 0)}', flush=True)
    block = b''.join(literal(n, v) for n, v in [
        (b':method', b'CONNECT'), (b':protocol', b'websocket'),
        (b':scheme', b'https' if args.tls else b'http'), (b':path', args.path.encode()),
        (b':authority', b'localhost'), (b'sec-websocket-version', b'13')])
    hello = b'hello over h2'
    out = frame(HEADERS, END_HEADERS, 1, block)
    if args.mode == 'early':
        out += frame(DATA, 0, 1, ws_frame(1, hello))
    c.send(out)
    if not c.pump(lambda: c.status is not None):
        print('no response head')
        return 1
    print(f'status {c.status}', flush=True)
    if c.status != 200:
        c.pump(lambda: c.ended)
        print(f'body {c.ws.decode(errors="replace")}')
        return 0
    if args.mode != 'early':
        c.send(frame(DATA, 0, 1, ws_frame(1, hello)))
    if c.ws_message() != (1, hello):
        print('no echo of the text message')
        return 1
    if args.mode == 'hold':
        start = time.monotonic()
        if c.pump(lambda: c.ended):
            print(f'ended after {time.monotonic() - start:.1f}')
        else:
            print('still open')
        return 0
    if args.mode == 'reset':
        c.send(frame(RST_STREAM, 0, 1, struct.pack('>I', 8)))
        c.stream, c.status, c.head_block, c.ended = 3, None, b'', False
        get = b''.join(literal(n, v) for n, v in [
            (b':method', b'GET'), (b':scheme', b'https' if args.tls else b'http'),
            (b':path', b'/direct'), (b':authority', b'localhost')])
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, get))
        if not c.pump(lambda: c.status is not None):
            print('no answer on the next stream')
            return 1
        print(f'reset, then {c.status}')
        return 0
    if args.mode == 'half-close':
        c.send(frame(DATA, END_STREAM, 1))
        if c.pump(lambda: c.ended):
            print('ended')
            return 0
        print('the server did not end its side')
        return 1
    # 200 KB: past the default 64 KiB windows both ways (the gateway's
    # stream window is larger; the echo comes back as the client credits it).
    big = os.urandom(200 * 1024)
    message = ws_frame(2, big)
    c.send(b''.join(frame(DATA, 0, 1, message[i:i + 16384])
                    for i in range(0, len(message), 16384)))
    if c.ws_message() != (2, big):
        print('no echo of the binary message')
        return 1
    c.send(frame(DATA, 0, 1, ws_frame(8, struct.pack('>H', 1000))))
    close = c.ws_message()
    if close is None or close[0] != 8:
        print(f'no Close frame back: {close}')
        return 1
    if not c.pump(lambda: c.ended):
        print('the stream did not end after the Close handshake')
        return 1
    print('ok')
    return 0


if __name__ == '__main__':
    sys.exit(main())
