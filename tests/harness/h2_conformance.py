"""HTTP/2 server conformance cases (RFC 9113 and RFC 7541), in the manner of
h2spec: each case opens a connection to the server (h2c with prior
knowledge, or TLS with ALPN h2 given --tls), completes the SETTINGS exchange,
sends frames written by hand and checks what the server does: a response,
a stream error (RST_STREAM with the code), a connection error (GOAWAY with
the code, or the connection closed), a PING or SETTINGS acknowledgement.
As h2spec does, a connection error with the code is accepted where a stream
error is asked for. The server must route GET and POST on "/" to an
upstream that answers 200. Standard library only.

Usage: h2_conformance.py --port PORT [--tls] [--only SUBSTRING]
Prints one line per case ("ok" or "FAIL", the case, what the server did) and
"cases N failures F"; exits 1 when a case failed.
"""
import argparse
import socket
import ssl
import struct
import sys
import time

ERRORS = {0: 'NO_ERROR', 1: 'PROTOCOL_ERROR', 2: 'INTERNAL_ERROR', 3: 'FLOW_CONTROL_ERROR',
          4: 'SETTINGS_TIMEOUT', 5: 'STREAM_CLOSED', 6: 'FRAME_SIZE_ERROR',
          7: 'REFUSED_STREAM', 8: 'CANCEL', 9: 'COMPRESSION_ERROR', 10: 'CONNECT_ERROR',
          11: 'ENHANCE_YOUR_CALM', 12: 'INADEQUATE_SECURITY', 13: 'HTTP_1_1_REQUIRED'}
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, END_HEADERS, PADDED, PRIORITY_FLAG, ACK = 0x1, 0x4, 0x8, 0x20, 0x1
PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'
# Where a case waits for an answer; one that is right never waits this long.
WAIT = 10.0

args = None


def frame(kind, flags, stream, payload=b''):
    return struct.pack('>I', len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack('>I', stream) + payload


def string(b):
    """An HPACK string literal, no Huffman coding."""
    if len(b) < 127:
        return bytes([len(b)]) + b
    n, out = len(b) - 127, bytearray([127])
    while n >= 128:
        out.append((n & 0x7f) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + b


def literal(name, value):
    """A literal field line without indexing, new name."""
    return b'\x00' + string(name) + string(value)


REQUEST = [(b':method', b'GET'), (b':scheme', b'http'), (b':path', b'/'),
           (b':authority', b'localhost')]


def block(fields=None, method=b'GET', extra=()):
    if fields is None:
        fields = [(n, method if n == b':method' else v) for n, v in REQUEST]
    return b''.join(literal(n, v) for n, v in list(fields) + list(extra))


def headers(stream, end_stream=True, method=b'GET', extra=(), fields=None):
    return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream,
                 block(fields, method, extra))


def post(stream, extra=()):
    """A POST's HEADERS, its body to follow."""
    return headers(stream, end_stream=False, method=b'POST', extra=extra)


def dial():
    sock = socket.create_connection(('127.0.0.1', args.port), timeout=WAIT)
    if not args.tls:
        return sock
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(['h2'])
    tls = context.wrap_socket(sock, server_hostname='localhost')
    if tls.selected_alpn_protocol() != 'h2':
        raise RuntimeError('ALPN chose %r, not h2' % tls.selected_alpn_protocol())
    return tls


class Conn:
    """A client connection past the SETTINGS exchange (both sides acked)."""

    def __init__(self):
        self.sock = dial()
        self.buf = b''
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        server_settings = acked = False
        while not (server_settings and acked):
            f = self.read(WAIT)
            if f in (None, 'timeout'):
                raise RuntimeError('no SETTINGS exchange: %r' % (f,))
            if f[0] == SETTINGS and not f[1] & ACK:
                self.send(frame(SETTINGS, ACK, 0))
                server_settings = True
            elif f[0] == SETTINGS:
                acked = True

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            pass  # the server closed: the next read says so

    def read(self, timeout):
        """(type, flags, stream, payload), 'timeout', or None at the end."""
        self.sock.settimeout(max(timeout, 0.01))
        try:
            while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], 'big'):
                chunk = self.sock.recv(65536)
                if not chunk:
                    return None
                self.buf += chunk
        except (socket.timeout, TimeoutError):
            return 'timeout'
        except OSError:
            return None
        n = int.from_bytes(self.buf[:3], 'big')
        f = (self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], 'big') & 0x7fffffff,
             self.buf[9:9 + n])
        self.buf = self.buf[9 + n:]
        return f

    def outcome(self, stream=None, skip_responses=False, settings_ack=False):
        """What the server did next: ('goaway', CODE), ('rst', CODE),
        ('closed',), ('response',) (a HEADERS on `stream`), ('ping-ack',
        PAYLOAD), ('settings-ack',) (with settings_ack) or ('timeout',).
        With skip_responses, responses are read past (a case whose error
        comes after one)."""
        deadline = time.monotonic() + WAIT
        while True:
            f = self.read(deadline - time.monotonic())
            if f is None:
                return ('closed',)
            if f == 'timeout':
                return ('timeout',)
            kind, flags, sid, payload = f
            if kind == GOAWAY:
                return ('goaway', code(payload[4:8]))
            if kind == RST_STREAM and (stream is None or sid == stream):
                return ('rst', code(payload))
            if kind == HEADERS and (stream is None or sid == stream) and not skip_responses:
                return ('response',)
            if kind == PING and flags & ACK:
                return ('ping-ack', payload)
            if kind == SETTINGS and flags & ACK and settings_ack:
                return ('settings-ack',)

    def finish_response(self, stream):
        """Reads until the server ends `stream` (END_STREAM), True if it did."""
        deadline = time.monotonic() + WAIT
        while True:
            f = self.read(deadline - time.monotonic())
            if f in (None, 'timeout'):
                return False
            if f[2] == stream and f[0] in (HEADERS, DATA) and f[1] & END_STREAM:
                return True


def code(b):
    n = int.from_bytes(b, 'big')
    return ERRORS.get(n, 'code %d' % n)


CASES = []


def case(name, *accepted):
    """`accepted`: predicates on the outcome; the case passes if one holds."""
    def register(fn):
        CASES.append((name, accepted, fn))
        return fn
    return register


def connection_error(name):
    return lambda o: (o[0] == 'goaway' and o[1] == name) or o == ('closed',)


def stream_error(*names):
    return lambda o: (o[0] in ('goaway', 'rst') and o[1] in names) or o == ('closed',)


def response(o):
    return o == ('response',)


# 3.4 / 3.5 HTTP/2 connection preface
@case('3.5 an invalid connection preface', connection_error('PROTOCOL_ERROR'))
def _(_):
    sock = dial()
    sock.sendall(b'PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n' + frame(SETTINGS, 0, 0))
    data = b''
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, TimeoutError):
        return ('timeout',)
    except OSError:
        pass
    at = data.find(b'\x07\x00\x00\x00\x00\x00')  # a GOAWAY frame's type, flags, stream 0
    if at >= 3:
        return ('goaway', code(data[at + 10:at + 14]))
    return ('closed',)


# 4.1 Frame format
@case('4.1/1 a frame of unknown type is ignored', response)
def _(c):
    c.send(frame(0x16, 0, 0, b'xxxx') + headers(1))
    return c.outcome(1)


@case('4.1/2 undefined flags are ignored', lambda o: o == ('ping-ack', b'\0' * 8))
def _(c):
    c.send(frame(PING, 0x16, 0, b'\0' * 8))
    return c.outcome()


@case('4.1/3 the reserved bit is ignored', response)
def _(c):
    h = headers(1)
    c.send(h[:5] + b'\x80' + h[6:])
    return c.outcome(1)


# 4.2 Frame size
@case('4.2/1 DATA of 16384 octets', response)
def _(c):
    c.send(post(1) + frame(DATA, END_STREAM, 1, b'x' * 16384))
    return c.outcome(1)


@case('4.2/2 DATA over SETTINGS_MAX_FRAME_SIZE', stream_error('FRAME_SIZE_ERROR'))
def _(c):
    c.send(post(1) + frame(DATA, END_STREAM, 1, b'x' * 16385))
    return c.outcome(1)


@case('4.2/3 HEADERS over SETTINGS_MAX_FRAME_SIZE', connection_error('FRAME_SIZE_ERROR'))
def _(c):
    c.send(headers(1, extra=[(b'x-big', b'y' * 16400)]))
    return c.outcome()


# 4.3 Header compression and decompression
@case('4.3/1 an undecodable header block', connection_error('COMPRESSION_ERROR'))
def _(c):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1,
                 b'\x00\x85\xf2\xb2\x4a\x84\xff\x84\x49\x50\x9f\xff'))
    return c.outcome()


@case('4.3/2 PRIORITY inside a header block', connection_error('PROTOCOL_ERROR'))
def _(c):
    b = block()
    c.send(frame(HEADERS, END_STREAM, 1, b[:5]) + frame(PRIORITY, 0, 1, b'\0\0\0\0\x10') +
           frame(CONTINUATION, END_HEADERS, 1, b[5:]))
    return c.outcome()


@case('4.3/3 HEADERS of another stream inside a header block',
      connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(HEADERS, END_STREAM, 1, block()[:5]) + headers(3))
    return c.outcome()


# 5.1 Stream states
@case('5.1/1 idle: DATA', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(DATA, END_STREAM, 1, b'x'))
    return c.outcome()


@case('5.1/2 idle: RST_STREAM', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(RST_STREAM, 0, 1, b'\0\0\0\x08'))
    return c.outcome()


@case('5.1/3 idle: WINDOW_UPDATE', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(WINDOW_UPDATE, 0, 1, b'\0\0\0\x64'))
    return c.outcome()


@case('5.1/4 idle: CONTINUATION', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(CONTINUATION, END_HEADERS, 1, block()))
    return c.outcome()


@case('5.1/5 half-closed (remote): DATA', stream_error('STREAM_CLOSED'))
def _(c):
    c.send(headers(1) + frame(DATA, END_STREAM, 1, b'x'))
    return c.outcome(1, skip_responses=True)


@case('5.1/6 half-closed (remote): HEADERS', stream_error('STREAM_CLOSED'))
def _(c):
    c.send(headers(1) + headers(1))
    return c.outcome(1, skip_responses=True)


@case('5.1/7 half-closed (remote): CONTINUATION', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(headers(1) + frame(CONTINUATION, END_HEADERS, 1, block()))
    return c.outcome(skip_responses=True)


@case('5.1/8 closed: DATA after RST_STREAM', stream_error('STREAM_CLOSED'))
def _(c):
    c.send(post(1) + frame(RST_STREAM, 0, 1, b'\0\0\0\x08') + frame(DATA, END_STREAM, 1, b'x'))
    return c.outcome()


@case('5.1/9 closed: HEADERS after RST_STREAM', stream_error('STREAM_CLOSED'))
def _(c):
    c.send(post(1) + frame(RST_STREAM, 0, 1, b'\0\0\0\x08') + headers(1))
    return c.outcome()


@case('5.1/10 closed: CONTINUATION after the stream ended', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(headers(1))
    if not c.finish_response(1):
        return ('no complete response',)
    c.send(frame(CONTINUATION, END_HEADERS, 1, block()))
    return c.outcome()


# 5.1.1 Stream identifiers
@case('5.1.1/1 an even stream identifier', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(headers(2))
    return c.outcome()


@case('5.1.1/2 a stream identifier below one used before', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(headers(5))
    if not c.finish_response(5):
        return ('no complete response',)
    c.send(headers(3))
    return c.outcome()


# 5.1.2 Stream concurrency: 1001 streams, over any limit a server sets
# under 1001 (a Sluice listener's is at most 1000)
@case('5.1.2 streams over SETTINGS_MAX_CONCURRENT_STREAMS',
      stream_error('PROTOCOL_ERROR', 'REFUSED_STREAM'))
def _(c):
    c.send(b''.join(post(1 + 2 * i) for i in range(1001)))
    return c.outcome(skip_responses=True)


# 5.3.1 Stream dependencies
@case('5.3.1/1 HEADERS that depends on its own stream', stream_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG, 1,
                 b'\0\0\0\x01\x10' + block()))
    return c.outcome(1)


@case('5.3.1/2 PRIORITY that depends on its own stream', stream_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(PRIORITY, 0, 1, b'\0\0\0\x01\x10'))
    return c.outcome()


# 5.5 Extending HTTP/2
@case('5.5/1 an extension frame is ignored', response)
def _(c):
    c.send(frame(0xff, 0, 0, b'x' * 8) + headers(1))
    return c.outcome(1)


@case('5.5/2 an extension frame inside a header block', connection_error('PROTOCOL_ERROR'))
def _(c):
    b = block()
    c.send(frame(HEADERS, END_STREAM, 1, b[:5]) + frame(0xff, 0, 1, b'x') +
           frame(CONTINUATION, END_HEADERS, 1, b[5:]))
    return c.outcome()


# 6.1 DATA
@case('6.1/1 DATA on stream 0', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(DATA, END_STREAM, 0, b'x'))
    return c.outcome()


@case('6.1/2 DATA on a half-closed (remote) stream', stream_error('STREAM_CLOSED'))
def _(c):
    c.send(headers(1, method=b'POST') + frame(DATA, END_STREAM, 1, b'x'))
    return c.outcome(1, skip_responses=True)


@case('6.1/3 DATA whose padding is longer than the payload', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(post(1) + frame(DATA, END_STREAM | PADDED, 1, b'\x06abcd'))
    return c.outcome()


# 6.2 HEADERS
@case('6.2/1 DATA before the header block ended', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(HEADERS, 0, 1, block()[:5]) + frame(DATA, END_STREAM, 1, b'x'))
    return c.outcome()


@case('6.2/2 HEADERS on stream 0', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(headers(0))
    return c.outcome()


@case('6.2/3 HEADERS whose padding is longer than the payload',
      connection_error('PROTOCOL_ERROR'))
def _(c):
    b = block()
    c.send(frame(HEADERS, END_HEADERS | END_STREAM | PADDED, 1, bytes([len(b) + 1]) + b))
    return c.outcome()


@case('6.2/4 a header block continued on another stream', connection_error('PROTOCOL_ERROR'))
def _(c):
    b = block()
    c.send(frame(HEADERS, END_STREAM, 1, b[:5]) + frame(CONTINUATION, END_HEADERS, 3, b[5:]))
    return c.outcome()


# 6.3 PRIORITY
@case('6.3/1 PRIORITY on stream 0', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(PRIORITY, 0, 0, b'\0\0\0\x03\x10'))
    return c.outcome()


@case('6.3/2 PRIORITY of 4 octets', stream_error('FRAME_SIZE_ERROR'))
def _(c):
    c.send(frame(PRIORITY, 0, 1, b'\0\0\0\x03'))
    return c.outcome()


# 6.4 RST_STREAM
@case('6.4/1 RST_STREAM on stream 0', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(RST_STREAM, 0, 0, b'\0\0\0\x08'))
    return c.outcome()


@case('6.4/2 RST_STREAM of 3 octets', connection_error('FRAME_SIZE_ERROR'))
def _(c):
    c.send(post(1) + frame(RST_STREAM, 0, 1, b'\0\0\x08'))
    return c.outcome()


# 6.5 SETTINGS
@case('6.5/1 a SETTINGS ACK with a payload', connection_error('FRAME_SIZE_ERROR'))
def _(c):
    c.send(frame(SETTINGS, ACK, 0, b'\0\x03\0\0\0\x64'))
    return c.outcome()


@case('6.5/2 SETTINGS on stream 1', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(SETTINGS, 0, 1, b'\0\x03\0\0\0\x64'))
    return c.outcome()


@case('6.5/3 SETTINGS of 5 octets', connection_error('FRAME_SIZE_ERROR'))
def _(c):
    c.send(frame(SETTINGS, 0, 0, b'\0\x03\0\0\0'))
    return c.outcome()


@case('6.5.2/1 SETTINGS_ENABLE_PUSH of 2', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(SETTINGS, 0, 0, b'\0\x02\0\0\0\x02'))
    return c.outcome()


@case('6.5.2/2 SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1', connection_error('FLOW_CONTROL_ERROR'))
def _(c):
    c.send(frame(SETTINGS, 0, 0, b'\0\x04\x80\0\0\0'))
    return c.outcome()


@case('6.5.2/3 SETTINGS_MAX_FRAME_SIZE under 16384', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(SETTINGS, 0, 0, b'\0\x05\0\0\x3f\xff'))
    return c.outcome()


@case('6.5.2/4 SETTINGS_MAX_FRAME_SIZE over 2^24-1', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(SETTINGS, 0, 0, b'\0\x05\x01\0\0\0'))
    return c.outcome()


@case('6.5.2/5 an unknown setting is ignored and acknowledged',
      lambda o: o == ('settings-ack',))
def _(c):
    c.send(frame(SETTINGS, 0, 0, b'\0\xff\0\0\0\x01'))
    return c.outcome(settings_ack=True)


# 6.7 PING
@case('6.7/1 PING is answered with its payload', lambda o: o == ('ping-ack', b'h2spec!!'))
def _(c):
    c.send(frame(PING, 0, 0, b'h2spec!!'))
    return c.outcome()


@case('6.7/2 a PING ACK is not answered', lambda o: o == ('ping-ack', b'second!!'))
def _(c):
    c.send(frame(PING, ACK, 0, b'first!!!') + frame(PING, 0, 0, b'second!!'))
    return c.outcome()


@case('6.7/3 PING on stream 1', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(PING, 0, 1, b'\0' * 8))
    return c.outcome()


@case('6.7/4 PING of 6 octets', connection_error('FRAME_SIZE_ERROR'))
def _(c):
    c.send(frame(PING, 0, 0, b'\0' * 6))
    return c.outcome()


# 6.8 GOAWAY
@case('6.8 GOAWAY on stream 1', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(GOAWAY, 0, 1, b'\0' * 8))
    return c.outcome()


# 6.9 WINDOW_UPDATE
@case('6.9/1 WINDOW_UPDATE of 0 on the connection', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(frame(WINDOW_UPDATE, 0, 0, b'\0\0\0\0'))
    return c.outcome()


@case('6.9/2 WINDOW_UPDATE of 0 on a stream', stream_error('PROTOCOL_ERROR'))
def _(c):
    c.send(post(1) + frame(WINDOW_UPDATE, 0, 1, b'\0\0\0\0'))
    return c.outcome(1)


@case('6.9/3 WINDOW_UPDATE of 3 octets', connection_error('FRAME_SIZE_ERROR'))
def _(c):
    c.send(frame(WINDOW_UPDATE, 0, 0, b'\0\0\x01'))
    return c.outcome()


@case('6.9.1/1 a connection window over 2^31-1', connection_error('FLOW_CONTROL_ERROR'))
def _(c):
    c.send(frame(WINDOW_UPDATE, 0, 0, b'\x7f\xff\xff\xff') * 2)
    return c.outcome()


@case('6.9.1/2 a stream window over 2^31-1', stream_error('FLOW_CONTROL_ERROR'))
def _(c):
    c.send(post(1) + frame(WINDOW_UPDATE, 0, 1, b'\x7f\xff\xff\xff') * 2)
    return c.outcome(1)


@case('6.9.2 SETTINGS_INITIAL_WINDOW_SIZE that takes a stream window over 2^31-1',
      stream_error('FLOW_CONTROL_ERROR'))
def _(c):
    c.send(post(1) + frame(WINDOW_UPDATE, 0, 1, b'\x7f\xff\x00\x00') +
           frame(SETTINGS, 0, 0, b'\0\x04\x7f\xff\xff\xff'))
    return c.outcome()


# 6.10 CONTINUATION
@case('6.10/1 a header block in three frames', response)
def _(c):
    b = block(extra=[(b'x-a', b'1'), (b'x-b', b'2')])
    c.send(frame(HEADERS, END_STREAM, 1, b[:10]) + frame(CONTINUATION, 0, 1, b[10:20]) +
           frame(CONTINUATION, END_HEADERS, 1, b[20:]))
    return c.outcome(1)


@case('6.10/2 DATA after a CONTINUATION without END_HEADERS',
      connection_error('PROTOCOL_ERROR'))
def _(c):
    b = block()
    c.send(frame(HEADERS, END_STREAM, 1, b[:5]) + frame(CONTINUATION, 0, 1, b[5:10]) +
           frame(DATA, 0, 1, b'x'))
    return c.outcome()


@case('6.10/3 CONTINUATION on stream 0', connection_error('PROTOCOL_ERROR'))
def _(c):
    b = block()
    c.send(frame(HEADERS, END_STREAM, 1, b[:5]) + frame(CONTINUATION, END_HEADERS, 0, b[5:]))
    return c.outcome()


@case('6.10/4 CONTINUATION after END_HEADERS', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(post(1) + frame(CONTINUATION, END_HEADERS, 1, literal(b'x', b'y')))
    return c.outcome()


# 8.1 HTTP message framing
@case('8.1/1 GET', response)
def _(c):
    c.send(headers(1))
    return c.outcome(1)


@case('8.1/2 HEAD', response)
def _(c):
    c.send(headers(1, method=b'HEAD'))
    return c.outcome(1)


@case('8.1/3 POST with a body and content-length', response)
def _(c):
    c.send(post(1, extra=[(b'content-length', b'4')]) + frame(DATA, END_STREAM, 1, b'abcd'))
    return c.outcome(1)


@case('8.1/4 POST with trailers', response)
def _(c):
    c.send(post(1) + frame(DATA, 0, 1, b'abcd') +
           frame(HEADERS, END_HEADERS | END_STREAM, 1, literal(b'x-trailer', b'v')))
    return c.outcome(1)


@case('8.1/5 a second HEADERS without END_STREAM', stream_error('PROTOCOL_ERROR'))
def _(c):
    c.send(post(1) + frame(DATA, 0, 1, b'abcd') +
           frame(HEADERS, END_HEADERS, 1, literal(b'x-trailer', b'v')))
    return c.outcome(1)


@case('8.1/6 a pseudo-header in trailers', stream_error('PROTOCOL_ERROR'))
def _(c):
    c.send(post(1) + frame(DATA, 0, 1, b'abcd') +
           frame(HEADERS, END_HEADERS | END_STREAM, 1, literal(b':method', b'GET')))
    return c.outcome(1)


def malformed(name, fields=None, extra=()):
    @case(name, stream_error('PROTOCOL_ERROR'))
    def _(c):
        c.send(headers(1, fields=fields, extra=extra))
        return c.outcome(1)


M, S, P, A = REQUEST
malformed('8.2/1 an uppercase field name', extra=[(b'X-Upper', b'1')])
malformed('8.2/2 a field name with a space', extra=[(b'x a', b'1')])
malformed('8.2/3 a field value with NUL', extra=[(b'x-a', b'a\x00b')])
malformed('8.2/4 a field value with CR LF', extra=[(b'x-a', b'a\r\nx-b: c')])
malformed('8.2/5 a field value with leading whitespace', extra=[(b'x-a', b' a')])
malformed('8.2.2/1 a connection-specific field', extra=[(b'connection', b'keep-alive')])
malformed('8.2.2/2 TE other than "trailers"', extra=[(b'te', b'trailers, deflate')])
malformed('8.3/1 an unknown pseudo-header', fields=REQUEST + [(b':foo', b'x')])
malformed('8.3/2 a response pseudo-header in a request', fields=REQUEST + [(b':status', b'200')])
malformed('8.3/3 a pseudo-header after a regular field', fields=[M, S, P, (b'x-a', b'1'), A])
malformed('8.3.1/1 an empty :path', fields=[M, S, (b':path', b''), A])
malformed('8.3.1/2 no :method', fields=[S, P, A])
malformed('8.3.1/3 no :scheme', fields=[M, P, A])
malformed('8.3.1/4 no :path', fields=[M, S, A])
malformed('8.3.1/5 :method twice', fields=REQUEST + [M])
malformed('8.3.1/6 :scheme twice', fields=REQUEST + [S])
malformed('8.3.1/7 :path twice', fields=REQUEST + [P])


@case('8.1.1/1 content-length above the DATA sent', stream_error('PROTOCOL_ERROR'))
def _(c):
    c.send(post(1, extra=[(b'content-length', b'5')]) + frame(DATA, END_STREAM, 1, b'abcd'))
    return c.outcome(1)


@case('8.1.1/2 content-length below the DATA sent', stream_error('PROTOCOL_ERROR'))
def _(c):
    c.send(post(1, extra=[(b'content-length', b'3')]) + frame(DATA, 0, 1, b'ab') +
           frame(DATA, END_STREAM, 1, b'cd'))
    return c.outcome(1)


@case('8.4 PUSH_PROMISE from a client', connection_error('PROTOCOL_ERROR'))
def _(c):
    c.send(post(1) + frame(PUSH_PROMISE, END_HEADERS, 1, b'\0\0\0\x02' + block()))
    return c.outcome()


# RFC 7541 HPACK
@case('hpack/1 an indexed field of index 0', connection_error('COMPRESSION_ERROR'))
def _(c):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, b'\x80'))
    return c.outcome()


@case('hpack/2 a table size update over SETTINGS_HEADER_TABLE_SIZE',
      connection_error('COMPRESSION_ERROR'))
def _(c):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, b'\x3f\xe2\x1f' + block()))  # 4097
    return c.outcome()


@case('hpack/3 a table size update after a field', connection_error('COMPRESSION_ERROR'))
def _(c):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block() + b'\x20'))
    return c.outcome()


@case('hpack/4 an index past the dynamic table', connection_error('COMPRESSION_ERROR'))
def _(c):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, b'\xff\x7f' + block()))
    return c.outcome()


@case('hpack/5 a Huffman string with EOS in it', connection_error('COMPRESSION_ERROR'))
def _(c):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1,
                 b'\x00\x85\xff\xff\xff\xff\xff\x01a' + block()))
    return c.outcome()


# RFC 8441 extended CONNECT (the server's SETTINGS enable it)
EXTENDED_CONNECT = [(b':method', b'CONNECT'), (b':protocol', b'websocket'),
                    (b':scheme', b'http'), (b':path', b'/'), (b':authority', b'localhost'),
                    (b'sec-websocket-version', b'13')]


@case('8441/1 an extended CONNECT is answered, not reset', response)
def _(c):
    c.send(headers(1, end_stream=False, fields=EXTENDED_CONNECT))
    return c.outcome(1)


@case('8441/2 :protocol on a GET is malformed', stream_error('PROTOCOL_ERROR'))
def _(c):
    c.send(headers(1, extra=[(b':protocol', b'websocket')]))
    return c.outcome(1)


@case('8441/3 an extended CONNECT without :path is malformed', stream_error('PROTOCOL_ERROR'))
def _(c):
    c.send(headers(1, end_stream=False,
                   fields=[f for f in EXTENDED_CONNECT if f[0] != b':path']))
    return c.outcome(1)


@case('8441/4 an extended CONNECT without :scheme is malformed', stream_error('PROTOCOL_ERROR'))
def _(c):
    c.send(headers(1, end_stream=False,
                   fields=[f for f in EXTENDED_CONNECT if f[0] != b':scheme']))
    return c.outcome(1)


def main():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--tls', action='store_true')
    parser.add_argument('--only', default='')
    args = parser.parse_args()
    failures = run = 0
    for name, accepted, fn in CASES:
        if args.only not in name:
            continue
        run += 1
        conn = None
        try:
            conn = Conn() if name[:3] != '3.5' else None
            got = fn(conn)
        except Exception as e:  # noqa: BLE001 (a case that breaks fails)
            got = ('exception', repr(e))
        finally:
            if conn is not None:
                conn.sock.close()
        good = any(accept(got) for accept in accepted)
        failures += not good
        print('%s %s -> %r' % ('ok  ' if good else 'FAIL', name, got), flush=True)
    print('cases %d failures %d' % (run, failures))
    return 1 if failures or not run else 0


if __name__ == '__main__':
    sys.exit(main())
