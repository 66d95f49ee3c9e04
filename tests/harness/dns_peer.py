"""A DNS server (UDP, on 127.0.0.1) that answers from a JSON file, read anew
for every query, so that a test changes the answers by rewriting the file.
For tests of endpoints given by host name. Standard library only.

Usage: dns_peer.py RECORDS.json
The file maps names (lower case, no trailing dot) to
  {"A": ["127.0.0.2", ...], "AAAA": ["::1", ...], "ttl": 1}
or to "servfail" (answer SERVFAIL) or "drop" (answer nothing: the client
times out). A name not in the file is NXDOMAIN; an unreadable file is
SERVFAIL. Prints "listening on PORT", then "query NAME TYPE" per query,
flushed.
"""
import json
import socket
import struct
import sys

TYPE_A = 1
TYPE_AAAA = 28


def parse_question(packet):
    """The query's id, flags, question bytes, name and type; None if malformed."""
    if len(packet) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if qdcount != 1:
        return None
    labels = []
    at = 12
    while True:
        if at >= len(packet):
            return None
        length = packet[at]
        at += 1
        if length == 0:
            break
        if length > 63 or at + length > len(packet):
            return None
        labels.append(packet[at:at + length].decode("ascii", "replace"))
        at += length
    if at + 4 > len(packet):
        return None
    qtype, _qclass = struct.unpack("!HH", packet[at:at + 4])
    question = packet[12:at + 4]
    return ident, flags, question, ".".join(labels).lower(), qtype


def answer(ident, flags, question, rcode, records):
    # QR, the query's opcode and RD, RA; AA.
    out_flags = 0x8000 | (flags & 0x7900) | 0x0080 | 0x0400 | rcode
    head = struct.pack("!HHHHHH", ident, out_flags, 1, len(records), 0, 0)
    body = question
    for rtype, ttl, data in records:
        # A pointer to the question's name (offset 12).
        body += struct.pack("!HHHIH", 0xC00C, rtype, 1, ttl, len(data)) + data
    return head + body


def main():
    path = sys.argv[1]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    print("listening on %d" % sock.getsockname()[1], flush=True)
    while True:
        packet, peer = sock.recvfrom(4096)
        parsed = parse_question(packet)
        if parsed is None:
            continue
        ident, flags, question, name, qtype = parsed
        print("query %s %d" % (name, qtype), flush=True)
        try:
            with open(path) as f:
                table = json.load(f)
        except (OSError, ValueError):
            sock.sendto(answer(ident, flags, question, 2, []), peer)
            continue
        entry = table.get(name)
        if entry is None:
            sock.sendto(answer(ident, flags, question, 3, []), peer)
            continue
        if entry == "drop":
            continue
        if entry == "servfail":
            sock.sendto(answer(ident, flags, question, 2, []), peer)
            continue
        ttl = int(entry.get("ttl", 1))
        records = []
        if qtype == TYPE_A:
            for ip in entry.get("A", []):
                records.append((TYPE_A, ttl, socket.inet_pton(socket.AF_INET, ip)))
        elif qtype == TYPE_AAAA:
            for ip in entry.get("AAAA", []):
                records.append((TYPE_AAAA, ttl, socket.inet_pton(socket.AF_INET6, ip)))
        sock.sendto(answer(ident, flags, question, 0, records), peer)


if __name__ == "__main__":
    main()
