# Shared by the client tests; sourced, not run.
#
# Sets: repo, work (a fresh temporary directory), and after start_griddav:
#   server_pid, gport (griddav's port), proxy_pid, port (the logging proxy's
#   port: clients talk to it), url (http://127.0.0.1:$port/), reqlog (the
#   proxy's request log, one line per exchange).
#   base: griddav's own URL (for davlist.py and curl), curl_opts: what curl
#   needs to reach it (credentials and CA over HTTPS).
# Environment: GRIDDAV_BIN  the griddav binary (run.sh sets it; built here if unset)
#              KEEP=1       keep $work; kept anyway when the test fails
#              HTTPS=1      griddav serves HTTPS (`[tls] self_signed`) with a
#                           user: clients talk to it directly, over TLS, with
#                           that user's name and password ($dav_user,
#                           $dav_password) and its certificate ($dav_cert);
#                           no logging proxy (it cannot see inside TLS), so
#                           the request log stays empty

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name=${name:-$(basename "$0" .sh)}
work=$(mktemp -d "${TMPDIR:-/tmp}/griddav-$name.XXXXXX")
server_pid=
proxy_pid=
failed=1
cleanup_hooks=()

say() { echo "[$name] $*"; }
fail() {
    echo "[$name] FAIL: $*" >&2
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
        wait "$pid" 2>/dev/null || true
    fi
}

cleanup() {
    local status=$?
    local hook
    for hook in "${cleanup_hooks[@]}"; do
        $hook || true
    done
    stop_pid "$proxy_pid"
    stop_pid "$server_pid"
    if [[ $status != 0 || $failed != 0 || "${KEEP:-0}" == 1 ]]; then
        say "kept $work (griddav log: $work/server.log, requests: $work/requests.log)"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z "${GRIDDAV_BIN:-}" ]]; then
    say "building griddav (release)"
    (cd "$repo" && cargo build --release --bin griddav)
    GRIDDAV_BIN=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/griddav
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_griddav: griddav on a fresh data dir and a free port, and the logging
# proxy (client-tests/logproxy.py) in front of it. Extra arguments go to the
# proxy (e.g. --bodies).
start_griddav() {
    gport=$(free_port)
    local config=() scheme=http
    base="http://127.0.0.1:$gport/"
    curl_opts=()
    if [[ "${HTTPS:-0}" == 1 ]]; then
        dav_user=tester
        dav_password="pw-$RANDOM$RANDOM"
        local hash
        hash=$(printf '%s\n' "$dav_password" | "$GRIDDAV_BIN" passwd)
        printf '[[users]]\nname = "%s"\npassword_hash = "%s"\n[tls]\nself_signed = true\n' \
            "$dav_user" "$hash" >"$work/griddav.toml"
        config=(--config "$work/griddav.toml")
        scheme=https
        base="https://127.0.0.1:$gport/"
        dav_cert=$work/data/tls/cert.pem
        curl_opts=(-u "$dav_user:$dav_password" --cacert "$dav_cert")
    fi
    say "starting $GRIDDAV_BIN serve on 127.0.0.1:$gport (data in $work/data, $scheme)"
    NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} "$GRIDDAV_BIN" serve --data-dir "$work/data" \
        --listen "127.0.0.1:$gport" "${config[@]}" >"$work/server.out" 2>"$work/server.log" &
    server_pid=$!
    local ready=0
    for _ in $(seq 300); do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            cat "$work/server.log" >&2
            server_pid=
            fail "griddav exited before answering"
        fi
        if [[ -s "$work/server.out" ]] && curl -s -o /dev/null -m 2 "${curl_opts[@]}" -X OPTIONS "$base"; then
            ready=1
            break
        fi
        sleep 0.1
    done
    [[ $ready == 1 ]] || fail "griddav did not answer OPTIONS within 30 s"
    if [[ "${HTTPS:-0}" == 1 ]]; then
        reqlog=$work/requests.log
        : >"$reqlog"
        url=$base
        say "griddav at $url (HTTPS, user $dav_user; $(grep -o 'sha256=[^ ]*' "$work/server.log" | head -1 || true))"
        return
    fi

    reqlog=$work/requests.log
    : >"$reqlog"
    python3 -u "$repo/client-tests/logproxy.py" --upstream "127.0.0.1:$gport" \
        --log "$reqlog" "$@" >"$work/proxy.out" 2>"$work/proxy.err" &
    proxy_pid=$!
    for _ in $(seq 100); do
        # (proxy.out may not exist yet: the background shell opens it)
        port=$(sed -n 's/^logproxy listening on //p' "$work/proxy.out" 2>/dev/null || true)
        [[ -n "$port" ]] && break
        sleep 0.1
    done
    [[ -n "$port" ]] || fail "logging proxy did not start: $(cat "$work/proxy.err")"
    url="http://127.0.0.1:$port/"
    say "griddav at http://127.0.0.1:$gport/, clients use the logging proxy at $url"
}

# Fails if griddav died, or if the request log shows any of the given
# statuses (default: 409 412 423 and any 5xx).
check_requests() {
    local bad=${1:-'409|412|423|5[0-9][0-9]'}
    kill -0 "$server_pid" 2>/dev/null || fail "griddav is no longer running"
    grep -E -- "^[0-9]+ .* -> ($bad) " "$reqlog" >"$work/bad-requests" || true
    # A test may excuse some of them (a function reading the request log on
    # stdin... see davfs2.sh), each excuse printed.
    if declare -F excuse_requests >/dev/null; then
        excuse_requests <"$work/bad-requests" >"$work/bad-requests.left"
        mv "$work/bad-requests.left" "$work/bad-requests"
    fi
    if [[ -s "$work/bad-requests" ]]; then
        say "requests answered with an unexpected status:"
        head -50 "$work/bad-requests"
        fail "$(wc -l <"$work/bad-requests") request(s) answered $bad (see $reqlog)"
    fi
    if grep -E "WARN" "$work/server.log" >"$work/server-warnings"; then
        say "griddav logged $(wc -l <"$work/server-warnings") warning(s) (not a failure):"
        head -5 "$work/server-warnings"
    fi
    if grep -E "ERROR" "$work/server.log" >"$work/server-errors"; then
        say "griddav logged errors:"
        head -20 "$work/server-errors"
        fail "griddav logged $(wc -l <"$work/server-errors") error line(s)"
    fi
    say "requests: $(grep -c -- ' -> ' "$reqlog") exchanges, none answered $bad; griddav logged no error"
}

# Prints a sorted listing of the collection at the given path (relative to
# the root, URL-decoded, collections end with /), recursively, by PROPFIND
# Depth: 1 (griddav may refuse Depth: infinity).
dav_list() {
    DAVLIST_AUTH=${dav_user:+$dav_user:$dav_password} DAVLIST_CA=${dav_cert:-} \
        python3 "$repo/client-tests/davlist.py" "$base" "$@"
}
