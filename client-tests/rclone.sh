#!/usr/bin/env bash
# rclone (Debian's rclone) as a WebDAV client of griddav, vendor `other`.
#
#   bash client-tests/rclone.sh
#
# Makes a tree of 540 files (0 B to 50 MiB, nested directories, non-ASCII
# names; tree.py), `rclone copy` to griddav, `rclone check` (sizes: a plain
# WebDAV remote has no hashes) must report 0 differences, and `rclone check
# --download` (content, byte for byte) too; then modifies, deletes and adds
# files locally, `rclone sync`, and both checks again. The PROPFIND listing
# of griddav (davlist.py) must equal the local tree too. rclone talks to
# griddav through the logging proxy: no exchange may be answered 412, 423 or
# 5xx (409 is how a WebDAV server tells rclone a parent collection is
# missing, so it is counted, not failed).
#
# HTTPS=1: the same over HTTPS to griddav's self-signed certificate
# (rclone's --ca-cert), as a [[users]] user (the remote's user and pass);
# no logging proxy (see lib.sh).
set -euo pipefail
name=rclone
source "$(dirname "$0")/lib.sh"

for tool in rclone curl python3; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (apt-get install rclone curl python3)"
done

start_griddav

# The remote, from the environment only; an empty config file so that no
# user configuration is read.
: >"$work/rclone.conf"
export RCLONE_CONFIG=$work/rclone.conf
export RCLONE_CONFIG_GD_TYPE=webdav
export RCLONE_CONFIG_GD_URL=$url
export RCLONE_CONFIG_GD_VENDOR=other
rc=(rclone --transfers 4 --checkers 8 --low-level-retries 1 --retries 1 --stats 0)
if [[ "${HTTPS:-0}" == 1 ]]; then
    export RCLONE_CONFIG_GD_USER=$dav_user
    RCLONE_CONFIG_GD_PASS=$(rclone obscure "$dav_password")
    export RCLONE_CONFIG_GD_PASS
    rc+=(--ca-cert "$dav_cert")
fi

src=$work/tree
python3 "$repo/client-tests/tree.py" make "$src"

local_listing() {
    (cd "$src" && find . -mindepth 1 \( -type d -printf '%P/\n' \) -o \( -type f -printf '%P\t%s\n' \)) |
        LC_ALL=C sort
}
check_listing() {
    local_listing >"$work/expected.list"
    dav_list tree | LC_ALL=C sort >"$work/server.list" || fail "PROPFIND listing failed"
    diff -u "$work/expected.list" "$work/server.list" >"$work/list.diff" ||
        { head -40 "$work/list.diff"; fail "$1: griddav's PROPFIND listing differs from the local tree"; }
    say "$1: PROPFIND listing equals the local tree ($(wc -l <"$work/expected.list") entries)"
}
# rclone check must exit 0 and say "0 differences found".
rclone_check() {
    local label=$1
    shift
    local out=$work/check-$label.log
    if ! "${rc[@]}" check "$src" gd:tree "$@" >"$out" 2>&1; then
        tail -20 "$out"
        fail "rclone check $* ($label) failed"
    fi
    grep -q ' 0 differences found' "$out" || { tail -20 "$out"; fail "rclone check $* ($label): no '0 differences found'"; }
    say "rclone check${*:+ $*} ($label): $(grep -oE '[0-9]+ matching files' "$out" | head -1), 0 differences"
}

t0=$SECONDS
"${rc[@]}" copy "$src" gd:tree >"$work/copy.log" 2>&1 || { tail -20 "$work/copy.log"; fail "rclone copy failed"; }
say "rclone copy: $(find "$src" -type f | wc -l) files in $((SECONDS - t0)) s"
rclone_check copy
t0=$SECONDS
rclone_check copy --download
say "(check --download took $((SECONDS - t0)) s)"
check_listing "after copy"
check_requests '412|423|5[0-9][0-9]'

python3 "$repo/client-tests/tree.py" mutate "$src"
t0=$SECONDS
"${rc[@]}" sync "$src" gd:tree >"$work/sync.log" 2>&1 || { tail -20 "$work/sync.log"; fail "rclone sync failed"; }
say "rclone sync in $((SECONDS - t0)) s"
rclone_check sync
rclone_check sync --download
check_listing "after sync"

# A second sync has nothing to do.
"${rc[@]}" sync "$src" gd:tree -v >"$work/sync2.log" 2>&1 || { tail -20 "$work/sync2.log"; fail "second rclone sync failed"; }
if grep -E 'Copied|Deleted' "$work/sync2.log"; then
    fail "a second rclone sync with no local change still copied or deleted files"
fi
say "a second sync copied and deleted nothing"

check_requests '412|423|5[0-9][0-9]'
say "409 answers (parent collection missing, expected with rclone): $(grep -cE -- '-> 409 ' "$reqlog" || true)"
say "methods: $(sed -nE 's/^[0-9]+ ([A-Z]+) .* -> ([0-9]+) .*/\1 \2/p' "$reqlog" | sort | uniq -c | awk '{printf "%s %s:%s  ", $2, $3, $1}')"

failed=0
say "PASS"
