#!/usr/bin/env bash
# Tahoe's own client against griddav on the harness's ten nodes, one after
# the other: SIZE_MIB (default 1024) uploaded 3-of-10 with `PUT /uri` on a
# Tahoe client node's web API (what `tahoe put` does), then through
# `griddav serve` (tests/tahoe_serve.rs). Prints, for each, the total time
# and the time from the last byte sent to the answer.
#
#   tests/tahoe/harness.sh start && tests/tahoe/compare.sh [SIZE_MIB]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BASE=${GRIDDAV_TAHOE_DIR:-/tmp/griddav-tahoe}
VENV=${GRIDDAV_TAHOE_VENV:-$BASE/venv}
PORT0=${GRIDDAV_TAHOE_PORT:-27100}
NODES=${GRIDDAV_TAHOE_NODES:-10}
MIB=${1:-1024}
CLIENT=$BASE/client
WEBPORT=$((PORT0 + 200))

if [[ ! -f $CLIENT/tahoe.cfg ]]; then
    "$VENV/bin/tahoe" create-client --nickname griddav-compare \
        --webport "tcp:$WEBPORT:interface=127.0.0.1" \
        --shares-needed 3 --shares-happy 7 --shares-total 10 "$CLIENT" >/dev/null
fi
# The ten storage servers, statically (no introducer), over HTTPS.
{
    echo "storage:"
    for ((i = 0; i < NODES; i++)); do
        d=$(printf '%s/node-%02d' "$BASE" "$i")
        nurl=$(grep -o "pb://[^\"]*:$((PORT0 + i))/[^\"]*" "$BASE/griddav.toml")
        echo "  $(sed 's/^pub-//' "$d/node.pubkey"):"
        echo "    ann:"
        echo "      nickname: node-$i"
        echo "      anonymous-storage-FURL: $(cat "$d/private/storage.furl")"
        echo "      anonymous-storage-NURLs: [\"$nurl\"]"
    done
} >"$CLIENT/private/servers.yaml"
rm -f "$CLIENT/running.process"
"$VENV/bin/tahoe" run --allow-stdin-close "$CLIENT" >>"$CLIENT/run.log" 2>&1 </dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
    curl -s "http://127.0.0.1:$WEBPORT/" | grep -q "Connected to <span>$NODES" && break
    sleep 1
done

head -c $((MIB << 20)) /dev/urandom >"$BASE/compare.bin"
"$VENV/bin/python" - "$BASE/compare.bin" "$WEBPORT" <<'PY'
import http.client, os, sys, time
path, port = sys.argv[1], int(sys.argv[2])
size = os.path.getsize(path)
c = http.client.HTTPConnection("127.0.0.1", port, timeout=7200)
t0 = time.time()
c.putrequest("PUT", "/uri")
c.putheader("Content-Length", str(size))
c.endheaders()
with open(path, "rb") as f:
    while b := f.read(1 << 20):
        c.send(b)
t_last = time.time()
r = c.getresponse()
r.read()
t_ans = time.time()
print(f"tahoe PUT /uri, {size >> 20} MiB, 3-of-10: HTTP {r.status}, total {t_ans - t0:.1f} s, "
      f"answer {t_ans - t_last:.1f} s after the last byte")
PY
rm -f "$BASE/compare.bin"
cd "$HERE/../.."
GRIDDAV_TAHOE_CONFIG=$BASE/griddav.toml GRIDDAV_TAHOE_MIB=$MIB \
    cargo test --test tahoe_serve tahoe_serve_200_mib_put_and_get -- --nocapture 2>&1 |
    grep "griddav serve over"
