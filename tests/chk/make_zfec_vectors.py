#!/usr/bin/env python3
"""Writes tests/chk/zfec_vectors.json: blocks encoded and decoded by the real
`zfec` package (PyPI), which griddav's own zfec (src/engine/chk/zfec.rs) must
reproduce byte for byte.

    python3 -m venv /tmp/zfec-venv && /tmp/zfec-venv/bin/pip install zfec==1.6.0.0
    /tmp/zfec-venv/bin/python tests/chk/make_zfec_vectors.py > tests/chk/zfec_vectors.json

(The Tahoe harness venv, /tmp/griddav-tahoe/venv, has zfec 1.6.0.0 too: it is
what tahoe-lafs 1.20.0 installs.)  Inputs are deterministic (SHA-256 counter
stream), so a rerun gives the same file.
"""
import hashlib
import itertools
import json
import sys

import zfec


def stream(seed, length):
    out = b""
    i = 0
    while len(out) < length:
        out += hashlib.sha256(b"%s:%d" % (seed.encode(), i)).digest()
        i += 1
    return out[:length]


# (k, n, block length): Tahoe's 3-of-10 and 1-of-1, odd and zero lengths,
# k == n, wide codes, and the 256-share limit.
CASES = [
    (3, 10, 1), (3, 10, 7), (3, 10, 333), (3, 10, 0),
    (1, 1, 5), (1, 1, 0), (1, 3, 9), (2, 2, 17), (2, 3, 31),
    (4, 7, 101), (5, 5, 3), (7, 13, 64), (10, 20, 13),
    (25, 100, 11), (128, 256, 3), (1, 256, 2), (255, 256, 2),
]


def main():
    out = {"zfec_version": zfec.__version__, "cases": []}
    for k, n, size in CASES:
        seed = "%d-%d-%d" % (k, n, size)
        primary = [stream(seed + ":%d" % i, size) for i in range(k)]
        enc = zfec.Encoder(k, n)
        shares = enc.encode(primary)
        assert len(shares) == n and all(bytes(shares[i]) == primary[i] for i in range(k))
        # Decoding by zfec itself from several kinds of subsets: the first k,
        # the last k, primaries mixed with secondaries, reversed order.
        subsets = [list(range(k)), list(range(n - k, n))]
        if n > k:
            subsets.append([i for i in range(n) if i % 2 == 1][:k] or list(range(n - k, n)))
            subsets.append(sorted(list(range(k - 1)) + [n - 1]))
        subsets.append(list(reversed(range(n - k, n))))
        decoded = []
        dec = zfec.Decoder(k, n)
        for subset in subsets:
            if len(subset) != k:
                continue
            got = dec.decode([shares[i] for i in subset], subset)
            assert [bytes(b) for b in got] == primary, (k, n, subset)
            decoded.append(subset)
        out["cases"].append({
            "k": k, "n": n, "size": size,
            "primary": [b.hex() for b in primary],
            "shares": [bytes(s).hex() for s in shares],
            "zfec_decoded_from": decoded,
        })
    json.dump(out, sys.stdout, indent=0)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
