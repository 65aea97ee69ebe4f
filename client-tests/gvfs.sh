#!/usr/bin/env bash
# GNOME's gvfs (Debian's gvfs-backends 1.50, as GNOME Files uses it) as a
# client of griddav: `gio` on a private D-Bus session, and its FUSE bridge.
#
#   bash client-tests/gvfs.sh
#
# Mounts dav://127.0.0.1:PROXY/ with `gio mount`, then: folders with
# non-ASCII names, 100 MiB and 50 small files copied in, a rename, a move,
# an overwrite, everything copied out again and compared by SHA-256; an
# editor-style save through g_file_replace() with the etag read at open
# (gvfs_save.py: it must succeed first time, and a stale etag must be
# refused); and through the FUSE bridge `cp` then at once `sha256sum`, 20
# times. griddav's PROPFIND listing must then equal the local mirror. gvfs
# talks to griddav through the logging proxy: no exchange may be answered
# 409, 412, 423 or 5xx, except the stale-etag save gvfs_save.py provokes.
set -euo pipefail
name=gvfs

if [[ "${1:-}" == --session ]]; then
    # ---- inside dbus-run-session: the steps, on the variables exported below.
    say() { echo "[$name] $*"; }
    fail() {
        echo "[$name] FAIL: $*" >&2
        exit 1
    }
    dav="dav://127.0.0.1:$port"
    gio mount "$dav/" </dev/null || fail "gio mount $dav/ failed"
    fuse="$XDG_RUNTIME_DIR/gvfs/dav:host=127.0.0.1,port=$port,ssl=false"
    for _ in $(seq 100); do
        [[ -d "$fuse" ]] && break
        sleep 0.1
    done
    [[ -d "$fuse" ]] || fail "the FUSE bridge did not show $fuse"
    say "mounted $dav/ (FUSE bridge: $fuse)"

    top="Ünïcode 目录"
    gio mkdir "$dav/$top" || fail "gio mkdir $top"
    gio mkdir "$dav/$top/sub dir ✓" || fail "gio mkdir $top/sub dir ✓"
    gio mkdir "$dav/small" || fail "gio mkdir small"
    mkdir -p "$mirror/$top/sub dir ✓" "$mirror/small"

    gio copy "$src/big.bin" "$dav/$top/big.bin" || fail "gio copy of 100 MiB"
    cp "$src/big.bin" "$mirror/$top/big.bin"
    for i in $(seq 50); do
        gio copy "$src/small-$i.bin" "$dav/small/small-$i.bin" || fail "gio copy small-$i.bin"
        cp "$src/small-$i.bin" "$mirror/small/small-$i.bin"
    done
    say "copied in 100 MiB and 50 small files"

    gio rename "$dav/$top/big.bin" "big renamed é.bin" || fail "gio rename"
    mv "$mirror/$top/big.bin" "$mirror/$top/big renamed é.bin"
    gio move "$dav/small/small-7.bin" "$dav/$top/sub dir ✓/moved ✓.bin" || fail "gio move"
    mv "$mirror/small/small-7.bin" "$mirror/$top/sub dir ✓/moved ✓.bin"
    gio copy "$src/small-50.bin" "$dav/small/small-1.bin" || fail "gio copy over an existing file"
    cp "$src/small-50.bin" "$mirror/small/small-1.bin"
    say "renamed, moved, overwritten"

    n=0
    mkdir -p "$work/out"
    while IFS= read -r -d '' f; do
        rm -f "$work/out/copy"
        gio copy "$dav/$f" "$work/out/copy" || fail "gio copy out $f"
        want=$(sha256sum <"$mirror/$f" | cut -d' ' -f1)
        got=$(sha256sum <"$work/out/copy" | cut -d' ' -f1)
        [[ "$want" == "$got" ]] || fail "copied out $f: SHA-256 $got, want $want"
        n=$((n + 1))
    done < <(cd "$mirror" && find . -type f -printf '%P\0')
    say "copied out $n files: every SHA-256 matches"

    printf 'first line\n' >"$work/notes.txt"
    gio copy "$work/notes.txt" "$dav/notes.txt" || fail "gio copy notes.txt"
    "$gi_python" "$repo/client-tests/gvfs_save.py" "$dav/notes.txt" || fail "editor-style save"
    gio copy "$dav/notes.txt" "$mirror/notes.txt" || fail "gio copy notes.txt out"

    # The FUSE bridge returns from close() before its PUT is done: the
    # sha256sum right after is a PROPFIND racing that PUT, which griddav
    # makes wait for the upload from the moment the PUT arrives. Now and
    # then gvfs sends that PROPFIND before it has sent the PUT at all (seen
    # in the request log: the stat, then no PUT yet); no server can answer
    # a file it has not heard of, so such a miss is retried once after a
    # second and counted. A second miss, or more than 4 in 20, fails.
    misses=0
    for i in $(seq 20); do
        cp "$src/small-$i.bin" "$fuse/fuse-$i.bin" || fail "cp to the FUSE bridge ($i)"
        if ! got=$(sha256sum <"$fuse/fuse-$i.bin" | cut -d' ' -f1); then
            misses=$((misses + 1))
            say "fuse-$i.bin not there right after cp: gvfs asked before its PUT; again in 1 s"
            sleep 1
            got=$(sha256sum <"$fuse/fuse-$i.bin" | cut -d' ' -f1) ||
                fail "sha256sum after cp ($i): the file was not there a second later"
        fi
        want=$(sha256sum <"$src/small-$i.bin" | cut -d' ' -f1)
        [[ "$want" == "$got" ]] || fail "FUSE fuse-$i.bin: SHA-256 $got, want $want"
        cp "$src/small-$i.bin" "$mirror/fuse-$i.bin"
    done
    ((misses <= 4)) || fail "$misses of 20 files were not there right after cp"
    say "FUSE bridge: cp then sha256sum, 20 times in a row: all equal ($misses of 20 needed a second look)"

    gio mount -u "$dav/" || fail "gio mount -u"
    exit 0
fi

source "$(dirname "$0")/lib.sh"

for tool in gio dbus-run-session curl python3 sha256sum; do
    command -v "$tool" >/dev/null ||
        fail "$tool is not installed (apt-get install gvfs-backends gvfs-fuse dbus libglib2.0-bin python3-gi)"
done
# python3-gi is built for Debian's own python3 (pyenv's may come first).
gi_python=${GI_PYTHON:-/usr/bin/python3}
"$gi_python" -c 'import gi; gi.require_version("Gio", "2.0")' 2>/dev/null ||
    fail "$gi_python cannot import gi (apt-get install python3-gi; GI_PYTHON names another python)"
[[ -e /usr/libexec/gvfsd-dav ]] || fail "gvfsd-dav is missing (apt-get install gvfs-backends)"
[[ -e /usr/libexec/gvfsd-fuse ]] || fail "gvfsd-fuse is missing (apt-get install gvfs-fuse)"

# The editor-style save provokes one refused save with a stale etag (a HEAD
# or PUT answered 412): excused, and it must be there.
excuse_requests() {
    local excused=0 line
    while IFS= read -r line; do
        if [[ $excused -lt 2 && "$line" =~ ^[0-9]+\ (HEAD|PUT)\ /notes.txt\ -\>\ 412\  ]]; then
            excused=$((excused + 1))
            say "excused (stale etag, on purpose): ${line%% | *}" >&2
            continue
        fi
        printf '%s\n' "$line"
    done
}

start_griddav
export XDG_RUNTIME_DIR=$work/run
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
unmount_fuse() {
    if mountpoint -q "$XDG_RUNTIME_DIR/gvfs" 2>/dev/null; then
        fusermount -u "$XDG_RUNTIME_DIR/gvfs" 2>/dev/null || umount -l "$XDG_RUNTIME_DIR/gvfs" 2>/dev/null || true
    fi
}
cleanup_hooks+=(unmount_fuse)

src=$work/src
mirror=$work/mirror
mkdir -p "$src" "$mirror"
head -c $((100 << 20)) /dev/urandom >"$src/big.bin"
for i in $(seq 50); do
    head -c $((i * 997 + (i % 5) * 20000)) /dev/urandom >"$src/small-$i.bin"
done

export port work src mirror repo gi_python name
timeout 900 dbus-run-session -- bash "$repo/client-tests/gvfs.sh" --session ||
    fail "the gio / FUSE steps failed (requests: $reqlog)"
unmount_fuse

(cd "$mirror" && find . -mindepth 1 \( -type d -printf '%P/\n' \) -o \( -type f -printf '%P\t%s\n' \)) |
    LC_ALL=C sort >"$work/expected.list"
dav_list | LC_ALL=C sort >"$work/server.list" || fail "PROPFIND listing failed"
diff -u "$work/expected.list" "$work/server.list" >"$work/list.diff" ||
    { cat "$work/list.diff"; fail "griddav's PROPFIND listing differs from the mirror"; }
say "PROPFIND listing equals the mirror ($(wc -l <"$work/expected.list") entries)"

grep -qE '^[0-9]+ (HEAD|PUT) /notes.txt -> 412 ' "$reqlog" ||
    fail "the stale-etag save was never refused with 412 (see $reqlog)"
grep -E '^[0-9]+ PUT /notes.txt -> 20[0-9] ' "$reqlog" | grep -q "if-match=" ||
    fail "no PUT of notes.txt with If-Match succeeded (see $reqlog)"
check_requests
say "methods: $(sed -nE 's/^[0-9]+ ([A-Z]+) .* -> ([0-9]+) .*/\1 \2/p' "$reqlog" | sort | uniq -c | awk '{printf "%s %s:%s  ", $2, $3, $1}')"

failed=0
say "PASS"
