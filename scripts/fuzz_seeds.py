#!/usr/bin/env python3
"""Pick the fuzz seed corpora from what the test suite put on the wire.

`scripts/fuzz.sh seeds` runs tests with MANIFOLD_CAPTURE_DIR set (see
crates/manifold-core/tests/common/capture.rs), then this script chooses a small, varied
sample per target and writes it to fuzz/corpus/<target>/, replacing what was there.
Deterministic: the same captures give the same corpora.
"""

import hashlib
import random
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


# A simulcast description as Chromium writes one (three RIDs, the top one paused), to start
# the SDP checks' simulcast rules from: the suite's clients do not send simulcast.
SIMULCAST = (b"a=rid:q send\r\na=rid:h send\r\na=rid:f send pt=96;max-width=1280\r\n"
             b"a=simulcast:send q;h;~f\r\n")


def with_simulcast(sdp):
    """`sdp` with SIMULCAST at the end of its first video m-line."""
    out, in_video, done = [], False, False
    for line in sdp.split(b"\r\n"):
        if line.startswith(b"m=") and in_video and not done:
            out.append(SIMULCAST.rstrip(b"\r\n"))
            done = True
        if line.startswith(b"m="):
            in_video = line.startswith(b"m=video")
        out.append(line)
    if in_video and not done:
        out.insert(len(out) - 1 if out and out[-1] == b"" else len(out), SIMULCAST.rstrip(b"\r\n"))
    return b"\r\n".join(out)


def vp8_sequences():
    """Input for the vp8 target: steps of (operation, length, payload) over VP8 payload
    descriptors with PictureID, TL0PICIDX and TID, as Chromium's temporal layers send them:
    forward (2), drop a picture (0), switch source (1)."""
    rng = random.Random(3)
    out = []
    for n in range(4):
        seq = b""
        pid, tl0 = rng.randrange(32768), rng.randrange(256)
        for i in range(40):
            tid = i % 2
            if n != 1:
                p = bytes([0x90, 0xE0, 0x80 | (pid >> 8) & 0x7F, pid & 0xFF, tl0 & 0xFF, tid << 6, 0x9D, 0x01, 0x2A])
            else:
                p = bytes([0x90, 0xE0, pid & 0x7F, tl0 & 0xFF, tid << 6, 0x9D])
            op = 0 if (tid == 1 and n % 2 == 0) else 2
            if i in (15, 30):
                seq += bytes([1, len(p)]) + p
            seq += bytes([op, len(p)]) + p
            if tid == 0:
                tl0 += 1
            pid = (pid + 1) % 32768
        out.append(seq)
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
    checked = spread(sdps, lambda b: b.count(b"m="))
    write(corpus, "sdp_check", checked + [with_simulcast(s) for s in checked[:2]])
    picked = spread(offers, lambda b: b.count(b"m="))
    write(corpus, "offer", [bytes([i % 2]) + s for i, s in enumerate(picked)]
          + [bytes([0]) + with_simulcast(s) for s in picked[:2] if b"a=sendonly" in s])
    write(corpus, "trickle", spread(trickle_fragments(offers), len, 20))
    write(corpus, "room_message", spread(messages, lambda b: json.loads(b).get("type", "") if b.startswith(b"{") else ""))
    write(corpus, "token", spread(tokens, len, 10))
    # rewriters takes structured input (arbitrary): a few byte strings to start from.
    write(corpus, "vp8", vp8_sequences())
    write(corpus, "rewriters", [bytes((i + k) % 256 for k in range(64)) for i in range(0, 256, 32)])


if __name__ == "__main__":
    main()
