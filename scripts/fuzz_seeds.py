#!/usr/bin/env python3
"""Pick the fuzz seed corpora from what the test suite put on the wire.

`scripts/fuzz.sh seeds` runs tests with MANIFOLD_CAPTURE_DIR set (see
crates/manifold-core/tests/common/capture.rs), then this script chooses a small, varied
sample per target and writes it to fuzz/corpus/<target>/, replacing what was there.
Deterministic: the same captures give the same corpora.
"""

import hashlib
import json
import os
import sys

PER_TARGET = 40


def load(capture, kind):
    d = os.path.join(capture, kind)
    if not os.path.isdir(d):
        return []
    return [open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))]


def spread(items, key, n=PER_TARGET):
    """Up to n items, taken round-robin across the groups `key` puts them in."""
    groups = {}
    for it in sorted(items, key=lambda b: hashlib.sha1(b).hexdigest()):
        groups.setdefault(key(it), []).append(it)
    out = []
    while len(out) < n and any(groups.values()):
        for g in sorted(groups):
            if groups[g] and len(out) < n:
                out.append(groups[g].pop(0))
    return out


def datagram_class(b):
    if not b:
        return "empty"
    f = b[0]
    if f <= 3:
        return "stun"
    if 20 <= f <= 63:
        return "dtls-%d" % f
    if 128 <= f <= 191 and len(b) > 1:
        return "rtcp" if 192 <= b[1] <= 223 else "rtp"
    return "other"


def write(corpus, target, items):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    for it in items:
        name = hashlib.sha1(it).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as fh:
            fh.write(it)
    print("%-15s %3d seeds, %6d bytes" % (target, len(items), sum(map(len, items))))


def trickle_fragments(sdps):
    """PATCH bodies as clients send them: credentials and candidates of real offers."""
    out = []
    for sdp in sdps:
        lines = sdp.decode("utf-8", "replace").splitlines()
        keep = [l for l in lines if l.startswith(("a=ice-ufrag", "a=ice-pwd", "a=candidate", "a=mid", "m="))]
        out.append(("\r\n".join(keep) + "\r\na=end-of-candidates\r\n").encode())
        out.append(("\r\n".join(l for l in keep if l.startswith("a=candidate")) + "\r\n").encode())
    return out


def main():
    capture, corpus = sys.argv[1], sys.argv[2]
    datagrams = load(capture, "datagram")
    # Offers the size real clients send (the suite also sends a megabyte one).
    offers = [s for s in load(capture, "offer") if len(s) <= 16384]
    sdps = offers + [s for s in load(capture, "answer") if len(s) <= 16384]
    payloads = load(capture, "video-payload")
    messages = load(capture, "room-message")
    tokens = []
    for m in messages:
        try:
            t = json.loads(m).get("token")
        except (ValueError, AttributeError):
            continue
        if isinstance(t, str):
            tokens.append(t.encode())

    small = [d for d in datagrams if len(d) <= 1500]
    write(corpus, "classify", spread(small, datagram_class))
    write(corpus, "stun", spread([d for d in small if datagram_class(d) == "stun"], len))
    # shard_datagram: the first byte picks the source (even: the session's own address)
    # and whether time passes (0x80).
    picks = spread(small, datagram_class)
    write(corpus, "shard_datagram", [bytes([0x00]) + d for d in picks] + [bytes([0x81]) + d for d in picks[:8]])
    write(corpus, "keyframe", spread(payloads, lambda b: b[:2]))
    write(corpus, "sdp_check", spread(sdps, lambda b: b.count(b"m=")))
    write(corpus, "offer", [bytes([i % 2]) + s for i, s in enumerate(spread(offers, lambda b: b.count(b"m=")))])
    write(corpus, "trickle", spread(trickle_fragments(offers), len, 20))
    write(corpus, "room_message", spread(messages, lambda b: json.loads(b).get("type", "") if b.startswith(b"{") else ""))
    write(corpus, "token", spread(tokens, len, 10))
    # rewriters takes structured input (arbitrary): a few byte strings to start from.
    write(corpus, "rewriters", [bytes((i + k) % 256 for k in range(64)) for i in range(0, 256, 32)])


if __name__ == "__main__":
    main()
