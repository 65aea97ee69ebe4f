#!/usr/bin/env bash
# A stock Tahoe-LAFS client node that uses the storage nodes of
# tests/tahoe/harness.sh (static private/servers.yaml, no introducer), for
# the `tahoe-chk` interop tests: `tahoe put` and `tahoe get` as a user runs
# them, against the same servers griddav uses.
#
#   tests/chk/tahoe_client.sh start          create (once) and start the client
#   tests/chk/tahoe_client.sh put FILE       upload FILE, print its URI:CHK: cap
#   tests/chk/tahoe_client.sh get CAP        download CAP to stdout
#   tests/chk/tahoe_client.sh shares CAP DIR copy each node's share data of CAP
#                                            to DIR/share.N (container header
#                                            and leases stripped)
#   tests/chk/tahoe_client.sh place CAP DIR  store DIR/share.N as share N on
#                                            node N mod NODES, as a storage
#                                            server keeps it on disk
#   tests/chk/tahoe_client.sh stop
#
# Same environment as the harness (GRIDDAV_TAHOE_DIR, _VENV, _PORT, _NODES);
# the client's web port is PORT+190.
set -euo pipefail

BASE=${GRIDDAV_TAHOE_DIR:-/tmp/griddav-tahoe}
VENV=${GRIDDAV_TAHOE_VENV:-$BASE/venv}
PORT0=${GRIDDAV_TAHOE_PORT:-27100}
NODES=${GRIDDAV_TAHOE_NODES:-10}
CLIENT=$BASE/client
WEB=$((PORT0 + 190))
TAHOE=$VENV/bin/tahoe
PY=$VENV/bin/python

log() { echo "tahoe-client: $*" >&2; }
node_dir() { printf '%s/node-%02d' "$BASE" "$1"; }
alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null || true)
    [[ -n $state && $state != Z* ]]
}

servers_yaml() {
    "$PY" - "$BASE" "$NODES" <<'PYEOF'
import base64, hashlib, sys
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
base, nodes = sys.argv[1], int(sys.argv[2])
print("storage:")
for i in range(nodes):
    d = "%s/node-%02d" % (base, i)
    pub = open(d + "/node.pubkey").read().strip()
    assert pub.startswith("pub-v0-"), pub
    furl = open(d + "/private/storage.furl").read().strip()
    cert = x509.load_pem_x509_certificate(open(d + "/private/node.pem", "rb").read())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    h = base64.urlsafe_b64encode(hashlib.sha256(spki).digest()).rstrip(b"=").decode()
    hints, swissnum = furl[len("pb://"):].split("@", 1)[1].split("/", 1)
    hint = hints.split(",")[0]
    if hint.startswith("tcp:"):
        hint = hint[4:]
    nurl = "pb://%s@%s/%s#v=1" % (h, hint, swissnum)
    seed = open(d + "/permutation-seed").read().strip()
    print("  %s:" % pub[len("pub-"):])
    print("    ann:")
    print("      nickname: node-%02d" % i)
    print("      anonymous-storage-FURL: %s" % furl)
    print("      anonymous-storage-NURLs: [\"%s\"]" % nurl)
    print("      permutation-seed-base32: %s" % seed)
PYEOF
}

cmd_start() {
    if [[ ! -f $CLIENT/tahoe.cfg ]]; then
        "$TAHOE" create-client --nickname griddav-chk-client \
            --webport "tcp:$WEB:interface=127.0.0.1" \
            --shares-needed 3 --shares-happy 7 --shares-total 10 "$CLIENT" >/dev/null
    fi
    servers_yaml >"$CLIENT/private/servers.yaml"
    if [[ -f $CLIENT/harness.pid ]] && alive "$(cat "$CLIENT/harness.pid")"; then
        return
    fi
    rm -f "$CLIENT/running.process"
    (cd "$CLIENT" && exec "$TAHOE" run --allow-stdin-close "$CLIENT" >>"$CLIENT/harness.log" 2>&1 </dev/null) &
    echo $! >"$CLIENT/harness.pid"
    # Ready when the web API answers and sees every storage node connected.
    local tries=0
    until "$PY" - "$WEB" "$NODES" <<'PYEOF'
import json, sys, urllib.request
try:
    j = json.load(urllib.request.urlopen("http://127.0.0.1:%s/?t=json" % sys.argv[1], timeout=2))
except Exception:
    sys.exit(1)
up = [s for s in j.get("servers", []) if s.get("connection_status", "").lower().startswith("connected")]
sys.exit(0 if len(up) >= int(sys.argv[2]) else 1)
PYEOF
    do
        tries=$((tries + 1))
        if ((tries > 120)); then
            log "client not connected to $NODES nodes after 60 s; see $CLIENT/harness.log"
            exit 1
        fi
        sleep 0.5
    done
    log "client up (pid $(cat "$CLIENT/harness.pid")), web port $WEB"
}

cmd_stop() {
    [[ -f $CLIENT/harness.pid ]] || return 0
    local pid
    pid=$(cat "$CLIENT/harness.pid")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$CLIENT/harness.pid" "$CLIENT/running.process"
}

# Prints the storage index of a cap as the server names its directory.
si_of() {
    "$PY" -c 'import sys; from allmydata import uri; from allmydata.util import base32
print(base32.b2a(uri.from_string(sys.argv[1].encode()).get_storage_index()).decode())' "$1"
}

cmd_shares() {
    local cap=$1 out=$2 si i f
    si=$(si_of "$cap")
    mkdir -p "$out"
    for ((i = 0; i < NODES; i++)); do
        for f in "$(node_dir "$i")/storage/shares/${si:0:2}/$si"/*; do
            [[ -f $f ]] || continue
            "$PY" - "$f" "$out/share.$(basename "$f")" <<'PYEOF'
import struct, sys
raw = open(sys.argv[1], "rb").read()
version, _, leases = struct.unpack(">LLL", raw[:12])
assert version in (1, 2), version
open(sys.argv[2], "wb").write(raw[12:len(raw) - 72 * leases])
PYEOF
        done
    done
}

cmd_place() {
    local cap=$1 in=$2 si f shnum dir
    si=$(si_of "$cap")
    for f in "$in"/share.*; do
        shnum=${f##*.}
        dir=$(node_dir $((shnum % NODES)))/storage/shares/${si:0:2}/$si
        mkdir -p "$dir"
        # The storage server's container (allmydata/storage/immutable.py
        # ShareFile, schema 2 as 1.20 writes it): the data length (capped at
        # 2^32-1), no leases.
        "$PY" - "$f" "$dir/$shnum" <<'PYEOF'
import struct, sys
data = open(sys.argv[1], "rb").read()
open(sys.argv[2] + ".tmp", "wb").write(struct.pack(">LLL", 2, min(2**32 - 1, len(data)), 0) + data)
import os; os.rename(sys.argv[2] + ".tmp", sys.argv[2])
PYEOF
    done
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
put) "$TAHOE" -d "$CLIENT" put "$2" ;;
get) "$TAHOE" -d "$CLIENT" get "$2" - ;;
shares) cmd_shares "$2" "$3" ;;
place) cmd_place "$2" "$3" ;;
*)
    echo "usage: $0 start|stop|put FILE|get CAP|shares CAP DIR|place CAP DIR" >&2
    exit 2
    ;;
esac
