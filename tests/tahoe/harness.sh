#!/usr/bin/env bash
# Ten real Tahoe-LAFS 1.20.0 storage nodes on 127.0.0.1 for griddav's tests.
#
#   tests/tahoe/harness.sh start    install (once), create (once) and start the
#                                   nodes that are not running; wait until each
#                                   answers; write the griddav config
#   tests/tahoe/harness.sh stop     stop every node by its PID
#   tests/tahoe/harness.sh clean    remove the shares of every node that is
#                                   not running (nodes are reused from run to
#                                   run, and nothing else removes what the
#                                   tests stored: 41 GB after a few dozen)
#   tests/tahoe/harness.sh config   print the path of the griddav config
#   tests/tahoe/harness.sh status   print "index pid state nodedir" per node
#
# Environment:
#   GRIDDAV_TAHOE_DIR    where nodes, venv and config live (default /tmp/griddav-tahoe)
#   GRIDDAV_TAHOE_VENV   the virtualenv (default $GRIDDAV_TAHOE_DIR/venv)
#   GRIDDAV_TAHOE_PORT   first storage port (default 27100; node i uses PORT+i,
#                        its web port PORT+100+i). Below Linux's ephemeral
#                        range (32768-60999): a port in it can be taken for a
#                        moment by any outgoing connection, and a Tahoe node
#                        that cannot listen exits.
#   GRIDDAV_TAHOE_NODES  number of nodes (default 10)
#
# The tests find everything from the config path: nodes are node-NN beside it,
# each with harness.pid holding the PID of its `tahoe run` process.
# `start` is idempotent: run it again to restart nodes a test killed.
set -euo pipefail

BASE=${GRIDDAV_TAHOE_DIR:-/tmp/griddav-tahoe}
VENV=${GRIDDAV_TAHOE_VENV:-$BASE/venv}
PORT0=${GRIDDAV_TAHOE_PORT:-27100}
NODES=${GRIDDAV_TAHOE_NODES:-10}
CONFIG=$BASE/griddav.toml
TAHOE=$VENV/bin/tahoe
PY=$VENV/bin/python

log() { echo "harness: $*" >&2; }

node_dir() { printf '%s/node-%02d' "$BASE" "$1"; }

alive() { # pid -> running (not a zombie)?
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null || true)
    [[ -n $state && $state != Z* ]]
}

install() {
    if [[ -x $TAHOE ]] && "$TAHOE" --version 2>/dev/null | grep -q "1.20.0"; then
        return
    fi
    log "installing tahoe-lafs==1.20.0 into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "tahoe-lafs==1.20.0"
}

create() {
    local i=$1 dir port webport
    dir=$(node_dir "$i")
    [[ -f $dir/tahoe.cfg ]] && return
    port=$((PORT0 + i))
    webport=$((PORT0 + 100 + i))
    "$TAHOE" create-node --nickname "griddav-test-$i" \
        --port "tcp:$port:interface=127.0.0.1" --location "tcp:127.0.0.1:$port" \
        --webport "tcp:$webport:interface=127.0.0.1" "$dir" >/dev/null
    # Keep the nodes usable on a nearly full test disk.
    sed -i 's/^reserved_space = .*/reserved_space = 0/' "$dir/tahoe.cfg"
    grep -q '^reserved_space' "$dir/tahoe.cfg" ||
        sed -i 's/^\[storage\]$/[storage]\nreserved_space = 0/' "$dir/tahoe.cfg"
}

# Prints the NURL of a node directory, computed independently of griddav
# (griddav's own `tahoe-nurl` is tested against it).
nurl() {
    "$PY" - "$1" <<'EOF'
import base64, hashlib, sys
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
d = sys.argv[1]
cert = x509.load_pem_x509_certificate(open(d + "/private/node.pem", "rb").read())
spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
h = base64.urlsafe_b64encode(hashlib.sha256(spki).digest()).rstrip(b"=").decode()
furl = open(d + "/private/storage.furl").read().strip()
hints, swissnum = furl[len("pb://"):].split("@", 1)[1].split("/", 1)
hint = hints.split(",")[0]
if hint.startswith("tcp:"):
    hint = hint[4:]
print(f"pb://{h}@{hint}/{swissnum}#v=1")
EOF
}

# Asks a node for /storage/v1/version over pinned TLS; exit 0 if it answers.
answers() {
    "$PY" - "$1" <<'EOF'
import base64, hashlib, socket, ssl, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
pin = u.username
swiss = u.path.lstrip("/")
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
try:
    with socket.create_connection((u.hostname, u.port), timeout=2) as raw:
        with ctx.wrap_socket(raw) as s:
            from cryptography import x509
            from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
            cert = x509.load_der_x509_certificate(s.getpeercert(binary_form=True))
            spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            got = base64.urlsafe_b64encode(hashlib.sha256(spki).digest()).rstrip(b"=").decode()
            if got != pin:
                sys.exit("SPKI pin mismatch")
            auth = base64.b64encode(swiss.encode()).decode()
            s.sendall(f"GET /storage/v1/version HTTP/1.1\r\nHost: x\r\nAuthorization: Tahoe-LAFS {auth}\r\nConnection: close\r\n\r\n".encode())
            first = s.recv(64)
            sys.exit(0 if first.startswith(b"HTTP/1.1 200") else 1)
except OSError:
    sys.exit(1)
EOF
}

start_node() {
    local i=$1 dir pid
    dir=$(node_dir "$i")
    if [[ -f $dir/harness.pid ]] && alive "$(cat "$dir/harness.pid")"; then
        kill -CONT "$(cat "$dir/harness.pid")" 2>/dev/null || true
        return
    fi
    # A node killed with SIGKILL leaves this behind and refuses to start.
    rm -f "$dir/running.process" "$dir/harness.pid"
    (cd "$dir" && exec "$TAHOE" run --allow-stdin-close "$dir" >>"$dir/harness.log" 2>&1 </dev/null) &
    pid=$!
    echo "$pid" >"$dir/harness.pid"
    log "node $i started, pid $pid"
}

cmd_start() {
    mkdir -p "$BASE"
    install
    local i
    for ((i = 0; i < NODES; i++)); do create "$i"; done
    for ((i = 0; i < NODES; i++)); do start_node "$i"; done
    local nurls=()
    for ((i = 0; i < NODES; i++)); do
        local tries=0 restarts=0 dir
        dir=$(node_dir "$i")
        # A new node writes its key, certificate and FURL as it starts.
        until [[ -s $dir/private/node.pem && -s $dir/private/storage.furl ]] &&
            nurls[i]=$(nurl "$dir") && answers "${nurls[$i]}"; do
            tries=$((tries + 1))
            if ((tries > 120)); then
                log "node $i does not answer on its storage port after 60 s (port taken?); see $(node_dir "$i")/harness.log"
                exit 1
            fi
            if ! alive "$(cat "$(node_dir "$i")/harness.pid")"; then
                log "node $i exited; see $(node_dir "$i")/harness.log"
                tail -5 "$(node_dir "$i")/harness.log" >&2 || true
                # A port taken for a moment (by any process) makes a node
                # exit at start: try again a few times before giving up.
                restarts=$((restarts + 1))
                if ((restarts > 3)); then
                    exit 1
                fi
                sleep 1
                start_node "$i"
                tries=0
            fi
            sleep 0.5
        done
    done
    {
        echo "# Written by tests/tahoe/harness.sh: $NODES Tahoe-LAFS storage nodes on 127.0.0.1."
        echo "data_dir = \"$BASE/griddav-data\""
        echo "[grid]"
        echo "servers = ["
        for ((i = 0; i < NODES; i++)); do
            printf '  { kind = "tahoe", nurl = "%s", id = "tahoe-%02d", timeout_secs = 20 },\n' "${nurls[$i]}" "$i"
        done
        echo "]"
    } >"$CONFIG.tmp"
    mv "$CONFIG.tmp" "$CONFIG"
    log "$NODES nodes answer; config in $CONFIG"
}

cmd_stop() {
    local i dir pid
    for ((i = 0; i < NODES; i++)); do
        dir=$(node_dir "$i")
        [[ -f $dir/harness.pid ]] || continue
        pid=$(cat "$dir/harness.pid")
        if alive "$pid"; then
            kill -CONT "$pid" 2>/dev/null || true
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
            alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/harness.pid" "$dir/running.process"
    done
    log "stopped"
}

cmd_clean() {
    local i dir pid
    for ((i = 0; i < NODES; i++)); do
        dir=$(node_dir "$i")
        [[ -d $dir/storage/shares ]] || continue
        pid=$(cat "$dir/harness.pid" 2>/dev/null || echo -)
        if [[ $pid != - ]] && alive "$pid"; then
            log "node $i is running (pid $pid): its shares are kept"
            continue
        fi
        rm -rf "$dir/storage/shares"
    done
    log "shares of stopped nodes removed"
}

cmd_status() {
    local i dir pid state
    for ((i = 0; i < NODES; i++)); do
        dir=$(node_dir "$i")
        pid=$(cat "$dir/harness.pid" 2>/dev/null || echo -)
        state=down
        [[ $pid != - ]] && alive "$pid" && state=up
        echo "$i $pid $state $dir"
    done
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
clean) cmd_clean ;;
config) echo "$CONFIG" ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|clean|config|status" >&2
    exit 2
    ;;
esac
