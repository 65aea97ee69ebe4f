#!/usr/bin/env bash
# davfs2 (Debian's davfs2 1.6.1, FUSE) mounts griddav for real, as root.
#
#   bash client-tests/davfs2.sh
#
# Every operation is done both on the mount and on a local mirror directory;
# at the end the server must hold exactly the mirror: same listing (read by
# PROPFIND: davfs2 1.6.1's directory reads fail with EINVAL on this kernel
# whatever the server, so nothing here lists the mount) and the same SHA-256
# for every file, read by curl from griddav and by reading the files through
# a second mount with an empty cache. The client talks to griddav through the
# logging proxy (logproxy.py); no exchange may be answered 409, 412, 423 or
# 5xx, davfs2 must have LOCKed paths that did not exist yet (201) and sent
# If-Match on PUTs of files it had read (answered 2xx).
#
# HTTPS=1: the same over HTTPS to griddav's self-signed certificate
# (davfs2's trust_server_cert) as a [[users]] user (a secrets file); no
# logging proxy (see lib.sh), so the request-log checks are skipped.
set -euo pipefail
name=davfs2
source "$(dirname "$0")/lib.sh"

[[ $(id -u) == 0 ]] || fail "must run as root (mount -t davfs)"
for tool in mount.davfs curl python3 sha256sum; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (apt-get install davfs2 curl python3)"
done

# UNLOCK answered 409 is excused when its path was the source, or below the
# source, of an earlier successful MOVE: a MOVE does not move locks (RFC 4918
# 7.7), so the token is gone and 409 is the RFC's answer for "not locked"
# (9.11.1). davfs2 sends such UNLOCKs after renaming a file it still holds
# locked, or a directory holding one, and ignores the answer.
excuse_requests() {
    python3 -c '
import re, sys
moved = [m.group(1) for m in re.finditer(r"^[0-9]+ MOVE (\S+) -> 20[14] ", open(sys.argv[1]).read(), re.M)]
for line in sys.stdin:
    m = re.match(r"[0-9]+ UNLOCK (\S+) -> 409 ", line)
    if m and any(m.group(1) == s or (s.endswith("/") and m.group(1).startswith(s)) for s in moved):
        print("[davfs2] excused (lock removed by an earlier MOVE):", line.split(" | ")[0], file=sys.stderr)
        continue
    sys.stdout.write(line)
' "$reqlog"
}

start_griddav
chmod 755 "$work"
mnt=$work/mnt
mirror=$work/mirror
mkdir -p "$mnt" "$mirror"

mount_no=0
mount_dav() {
    mount_no=$((mount_no + 1))
    local cache=$work/cache$mount_no conf=$work/davfs2-$mount_no.conf
    mkdir -p "$cache"
    # As davfs2's own /var/cache/davfs2: mount.davfs refuses others.
    chown root:davfs2 "$cache"
    chmod 775 "$cache"
    # A private configuration: locks on, a short upload delay, a cache of
    # our own (empty on every mount, so the second mount reads from griddav).
    cat >"$conf" <<EOF
use_locks 1
lock_timeout 300
delay_upload 1
cache_dir $cache
ask_auth 0
EOF
    if [[ "${HTTPS:-0}" == 1 ]]; then
        local secrets=$work/secrets-$mount_no
        (umask 077 && printf '%s %s %s\n' "$url" "$dav_user" "$dav_password" >"$secrets")
        # mount.davfs reads it as the davfs2 user: not from the 0700 data dir.
        install -m 644 "$dav_cert" "$work/server-cert.pem"
        printf 'trust_server_cert %s\nsecrets %s\n' "$work/server-cert.pem" "$secrets" >>"$conf"
    fi
    # No credentials: ask_auth 0 stops the prompts (stdin is /dev/null too).
    mount -t davfs -o "conf=$conf" "$url" "$mnt" </dev/null ||
        fail "mount -t davfs $url $mnt failed"
    mountpoint -q "$mnt" || fail "$mnt is not a mount point after mount"
    say "mounted $url on $mnt (mount $mount_no)"
}
unmount_dav() {
    local t0=$SECONDS
    umount "$mnt" || fail "umount $mnt failed"
    # umount.davfs waits for mount.davfs to upload and exit; make sure.
    for _ in $(seq 600); do
        pgrep -f "mount.davfs.*$mnt" >/dev/null || break
        sleep 0.5
    done
    ! pgrep -f "mount.davfs.*$mnt" >/dev/null || fail "mount.davfs still running 300 s after umount"
    mountpoint -q "$mnt" && fail "$mnt still mounted"
    say "unmounted in $((SECONDS - t0)) s"
}
emergency_umount() {
    if mountpoint -q "$mnt" 2>/dev/null; then
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
}
cleanup_hooks+=(emergency_umount)

# Does the same on the mount and on the mirror. $1: a function taking a root.
both() {
    local before
    before=$(wc -l <"$reqlog")
    if ! "$1" "$mnt"; then
        sleep 1
        say "the requests since the step began that were answered 4xx/5xx:"
        tail -n +"$((before + 1))" "$reqlog" | grep -E '^[0-9]+ .* -> [45][0-9][0-9] ' | cut -c1-600
        fail "$1 on the mount failed"
    fi
    "$1" "$mirror" || fail "$1 on the mirror failed"
    say "done: $1"
}

mirror_listing() {
    (cd "$mirror" && find . -mindepth 1 \( -type d -printf '%P/\n' \) -o \( -type f -printf '%P\t%s\n' \)) |
        LC_ALL=C sort
}

# The server holds the mirror: listing by PROPFIND, content by GET.
check_server() {
    local label=$1
    mirror_listing >"$work/expected.list"
    dav_list | LC_ALL=C sort >"$work/server.list" || fail "PROPFIND listing failed"
    if ! diff -u "$work/expected.list" "$work/server.list" >"$work/list.diff"; then
        cat "$work/list.diff"
        fail "$label: the PROPFIND listing differs from the mirror"
    fi
    local n=0 f want got enc
    while IFS= read -r -d '' f; do
        want=$(sha256sum <"$mirror/$f" | cut -d' ' -f1)
        enc=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$f")
        got=$(curl -sf "${curl_opts[@]}" "$base$enc" | sha256sum | cut -d' ' -f1)
        [[ "$want" == "$got" ]] || fail "$label: GET /$f: SHA-256 $got, want $want"
        n=$((n + 1))
    done < <(cd "$mirror" && find . -type f -printf '%P\0')
    say "$label: listing ($(wc -l <"$work/expected.list") entries) and $n SHA-256 match the mirror (PROPFIND + GET)"
}

# Reads every mirror file by path through the mount.
check_mount_reads() {
    local n=0 f want got
    while IFS= read -r -d '' f; do
        [[ -f "$mnt/$f" ]] || fail "stat $mnt/$f: not a file on the mount"
        want=$(sha256sum <"$mirror/$f" | cut -d' ' -f1)
        got=$(sha256sum <"$mnt/$f" | cut -d' ' -f1)
        [[ "$want" == "$got" ]] || fail "read $mnt/$f: SHA-256 $got, want $want"
        n=$((n + 1))
    done < <(cd "$mirror" && find . -type f -printf '%P\0')
    while IFS= read -r -d '' f; do
        [[ -d "$mnt/$f" ]] || fail "stat $mnt/$f: not a directory on the mount"
    done < <(cd "$mirror" && find . -mindepth 1 -type d -printf '%P\0')
    say "read $n files through the mount: all SHA-256 match"
}

# ---- the data
src=$work/src
mkdir -p "$src"
head -c $((200 << 20)) /dev/urandom >"$src/big.bin"
for s in 0 1 100 4095 4096 65537 1000003; do
    head -c "$s" /dev/urandom >"$src/small-$s.bin"
done

# ---- mount 1: writes, names, moves, deletes, an editor-style save
mount_dav

write_files() {
    local r=$1
    dd if="$src/big.bin" of="$r/big.bin" bs=1M status=none
    for s in 0 1 100 4095 4096 65537 1000003; do
        dd if="$src/small-$s.bin" of="$r/small-$s.bin" bs=64k status=none
    done
}
both write_files

names() {
    local r=$1
    mkdir "$r/目录" "$r/dir with spaces" "$r/empty dir" "$r/to be removed"
    echo "Curriculum vitæ, 2026" >"$r/Résumé 2026.txt"
    echo "文件内容" >"$r/目录/文件 ü.txt"
    mkdir "$r/目录/sub dir ✓"
    head -c 3000 "$src/big.bin" >"$r/目录/sub dir ✓/deep file.bin"
    printf 'a file with spaces\n' >"$r/dir with spaces/file with spaces.txt"
    echo "gone soon" >"$r/to be removed/x.txt"
    echo "version 1" >"$r/notes.txt"
}
both names

moves() {
    local r=$1
    mv "$r/small-100.bin" "$r/目录/moved small.bin"
    mv "$r/dir with spaces" "$r/目录/moved dir"
    mv "$r/small-4096.bin" "$r/small-4096 renamed.bin"
}
both moves

removes() {
    local r=$1
    rm "$r/small-1.bin"
    rm "$r/to be removed/x.txt"
    rmdir "$r/to be removed"
}
both removes

# Let davfs2 upload notes.txt (delay_upload 1) so that the save below
# replaces a file that exists on the server.
sleep 3
editor_save() {
    local r=$1
    printf 'version 2\nsaved the way editors save\n' >"$r/.notes.txt.tmp"
    sync "$r/.notes.txt.tmp" 2>/dev/null || true
    mv -f "$r/.notes.txt.tmp" "$r/notes.txt"
}
both editor_save

# Stat by path works on davfs2 (listing does not).
[[ $(stat -c %s "$mnt/big.bin") == $((200 << 20)) ]] || fail "stat big.bin on the mount: wrong size"
[[ -d "$mnt/目录/moved dir" ]] || fail "stat: moved directory missing on the mount"
[[ ! -e "$mnt/small-1.bin" ]] || fail "stat: removed file still on the mount"

unmount_dav
check_server "after mount 1"
check_requests

# ---- mount 2: an empty cache, so every read comes from griddav; then edits
# of files davfs2 has read (PUT with If-Match) and an editor save over a
# file that exists on the server.
mount_dav
check_mount_reads

edit_in_place() {
    local r=$1
    echo "second line, appended through mount 2" >>"$r/Résumé 2026.txt"
    printf 'rewritten\n' >"$r/目录/文件 ü.txt"
}
both edit_in_place
editor_save_2() {
    local r=$1
    printf 'version 3\n' >"$r/notes.txt.new"
    mv -f "$r/notes.txt.new" "$r/notes.txt"
}
both editor_save_2
new_after_remount() {
    local r=$1
    head -c 777777 "$src/big.bin" >"$r/目录/moved dir/new in mount 2.bin"
}
both new_after_remount
unmount_dav
check_server "after mount 2"

# ---- mount 3: read everything back once more through a fresh cache.
mount_dav
check_mount_reads
unmount_dav

check_requests

if [[ "${HTTPS:-0}" == 1 ]]; then
    failed=0
    say "PASS (HTTPS: no request log to check davfs2's LOCK and If-Match habits)"
    exit 0
fi
# davfs2's own habits were exercised, and succeeded:
lock_new=$(grep -cE '^[0-9]+ LOCK .* -> 201 ' "$reqlog" || true)
[[ $lock_new -gt 0 ]] || fail "davfs2 never LOCKed a new path with answer 201 (see $reqlog)"
put_ifmatch=$(grep -E '^[0-9]+ PUT ' "$reqlog" | grep -c "if-match=" || true)
put_ifmatch_ok=$(grep -E '^[0-9]+ PUT .* -> 20[0-9] ' "$reqlog" | grep -c "if-match=" || true)
[[ $put_ifmatch -gt 0 ]] || fail "davfs2 sent no PUT with If-Match (see $reqlog)"
[[ $put_ifmatch == "$put_ifmatch_ok" ]] || fail "PUT with If-Match: only $put_ifmatch_ok of $put_ifmatch answered 2xx"
say "LOCK of new paths answered 201: $lock_new; PUT with If-Match answered 2xx: $put_ifmatch_ok"
say "methods: $(sed -nE 's/^[0-9]+ ([A-Z]+) .* -> ([0-9]+) .*/\1 \2/p' "$reqlog" | sort | uniq -c | awk '{printf "%s %s:%s  ", $2, $3, $1}')"

failed=0
say "PASS"
