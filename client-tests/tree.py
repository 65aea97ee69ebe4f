#!/usr/bin/env python3
"""Makes and changes the file tree that rclone.sh copies and syncs.

    python3 tree.py make DIR      # 540 files, 0 B to 50 MiB, nested dirs
    python3 tree.py mutate DIR    # modify, delete and add files and dirs

Contents are pseudo-random (seeded, so a failing run can be reproduced).
Most files are small (0 B to 64 KiB, several empty), some are medium
(100 KiB to 2 MiB) and a few big (10 to 50 MiB, one exactly 50 MiB). A few
names have spaces and non-ASCII characters. Prints a one-line summary.
"""
import os
import random
import shutil
import sys

DIRS = ["", "a", "a/b", "a/b/c", "a/b/c/d", "docs", "docs/2026 reports", "médias",
        "médias/photos été", "deep/er/and/deeper/still", "x"]


def size_of(rng, kind):
    if kind == "small":
        return rng.choice([0, 0, 1, rng.randrange(1, 4096), rng.randrange(4096, 65536)])
    if kind == "medium":
        return rng.randrange(100 << 10, 2 << 20)
    return rng.randrange(10 << 20, 50 << 20)


def write(rng, path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 << 20)
            f.write(rng.randbytes(n))
            left -= n


def make(root):
    rng = random.Random(4)
    total = 0
    plan = [("small", 500), ("medium", 33), ("big", 6)]
    i = 0
    for kind, count in plan:
        for _ in range(count):
            d = rng.choice(DIRS)
            name = rng.choice(["file", "data", "note ü", "файл", "x y z"]) + f"-{i:04d}.bin"
            size = size_of(rng, kind)
            write(rng, os.path.join(root, d, name), size)
            total += size
            i += 1
    write(rng, os.path.join(root, "big", "exactly 50 MiB.bin"), 50 << 20)
    total += 50 << 20
    i += 1
    print(f"tree: made {i} files, {total / 2**20:.1f} MiB in {root}")


def files(root):
    out = []
    for d, _, fs in os.walk(root):
        for f in fs:
            out.append(os.path.relpath(os.path.join(d, f), root))
    return sorted(out)


def mutate(root):
    rng = random.Random(5)
    existing = files(root)
    rng.shuffle(existing)
    modified = existing[:25]
    deleted = existing[25:55]
    for rel in modified:
        p = os.path.join(root, rel)
        size = os.path.getsize(p)
        # rclone's plain WebDAV remote has no settable mtime or hash, so sync
        # compares sizes: every modification changes the size.
        new = size + rng.randrange(1, 5000) if size < (1 << 20) or rng.random() < 0.5 \
            else size // 2
        write(rng, p, new)
    for rel in deleted:
        os.remove(os.path.join(root, rel))
    shutil.rmtree(os.path.join(root, "x"), ignore_errors=True)
    added = 0
    for j in range(40):
        d = rng.choice(DIRS[:-1] + ["new dir", "new dir/nested ✓"])
        write(rng, os.path.join(root, d, f"added-{j:03d}.bin"),
              size_of(rng, "medium" if j % 10 == 0 else "small"))
        added += 1
    write(rng, os.path.join(root, "big", "added big.bin"), 20 << 20)
    added += 1
    print(f"tree: modified {len(modified)}, deleted {len(deleted)} and the dir x/, "
          f"added {added}; now {len(files(root))} files")


if __name__ == "__main__":
    {"make": make, "mutate": mutate}[sys.argv[1]](sys.argv[2])
