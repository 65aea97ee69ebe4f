#!/usr/bin/env bash
# Runs Debian's litmus (0.13) WebDAV test suite, all five suites, against a
# griddav on a fresh data directory and a free loopback port.
#
#   bash litmus-tests/run.sh
#   AUTH=1 bash litmus-tests/run.sh     # plain HTTP, with a user and password
#   HTTPS=1 bash litmus-tests/run.sh    # over TLS, with a user and password
#
# Builds griddav in release mode (or uses $GRIDDAV_BIN if set), starts
# `griddav serve`, waits until it answers OPTIONS, runs `litmus -k`, prints
# the summary of each suite, stops the server, and exits 0 only if every
# suite ran all its tests and all passed:
#   basic 16, copymove 13, props 30, locks 41, http 4 (104 in all).
# Warnings are counted and shown; they do not fail the run.
#
# Needs: cargo, curl, python3, litmus (`apt-get install litmus`).
# Environment: GRIDDAV_BIN   a griddav binary to test instead of building one
#              KEEP=1        keep the temporary directory (data, logs); kept
#                            anyway when a test fails
#              AUTH=1        a [[users]] entry, and litmus runs with that
#                            user's name and password, over plain HTTP (all
#                            104 tests: over TLS litmus skips expect100)
#              HTTPS=1       serve HTTPS with `[tls] self_signed = true` and a
#                            [[users]] entry, and run litmus with that user's
#                            name and password. litmus (neon) checks the
#                            certificate against the system trust store, so
#                            the generated one is added to it for the run
#                            (/usr/local/share/ca-certificates, then
#                            update-ca-certificates; sudo when not root) and
#                            removed again afterwards.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

declare -A expected=([basic]=16 [copymove]=13 [props]=30 [locks]=41 [http]=4)
suites=(basic copymove props locks http)

for tool in litmus curl python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "litmus-tests: $tool is not installed (apt-get install litmus curl python3)" >&2
        exit 1
    fi
done

if [[ -n "${GRIDDAV_BIN:-}" ]]; then
    bin=$GRIDDAV_BIN
else
    echo "== building griddav (release)"
    cargo build --release --bin griddav
    target_dir=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    bin=$target_dir/release/griddav
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/griddav-litmus.XXXXXX")
server_pid=
https=${HTTPS:-0}
auth=${AUTH:-$https}
sudo=
if [[ "$(id -u)" != 0 ]]; then
    sudo=sudo
fi
trusted=
cleanup() {
    if [[ -n "$trusted" ]]; then
        $sudo rm -f "$trusted"
        $sudo update-ca-certificates --fresh >/dev/null 2>&1 || true
    fi
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$server_pid" 2>/dev/null || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "litmus-tests: kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port: bind port 0 and let the kernel choose. Another
# process could take it before griddav binds it; the wait below would then
# see griddav exit, and the run fails rather than tests someone else.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port/"
config=()
credentials=()
curl_auth=()
if [[ $auth == 1 ]]; then
    user=litmus
    password="litmus-$RANDOM$RANDOM"
    hash=$(printf '%s\n' "$password" | "$bin" passwd)
    cat >"$work/griddav.toml" <<TOML
[[users]]
name = "$user"
password_hash = "$hash"
TOML
    config=(--config "$work/griddav.toml")
    credentials=("$user" "$password")
    curl_auth=(-u "$user:$password")
fi
if [[ $https == 1 ]]; then
    url="https://localhost:$port/"
    cat >>"$work/griddav.toml" <<TOML

[tls]
self_signed = true
TOML
    # -k only for the readiness probe, before the certificate is trusted.
    curl_auth=(-k -u "$user:$password")
fi

echo "== starting $bin serve on 127.0.0.1:$port (data in $work/data)"
NO_COLOR=1 "$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" "${config[@]}" >"$work/server.log" 2>&1 &
server_pid=$!

ready=0
for _ in $(seq 300); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "litmus-tests: griddav exited before answering; its log:" >&2
        cat "$work/server.log" >&2
        server_pid=
        exit 1
    fi
    if curl -s -o /dev/null -m 2 "${curl_auth[@]}" -X OPTIONS "$url"; then
        ready=1
        break
    fi
    sleep 0.1
done
if [[ $ready != 1 ]]; then
    echo "litmus-tests: griddav did not answer OPTIONS within 30 s; its log:" >&2
    cat "$work/server.log" >&2
    exit 1
fi

if [[ $https == 1 ]]; then
    trusted=/usr/local/share/ca-certificates/griddav-litmus-$port.crt
    $sudo cp "$work/data/tls/cert.pem" "$trusted"
    $sudo update-ca-certificates >/dev/null
    echo "== certificate $(grep -o 'sha256=[^ ]*' "$work/server.log" | head -1 || true)"
    if ! curl -s -o /dev/null -m 5 -u "$user:$password" -X OPTIONS "$url"; then
        echo "litmus-tests: the certificate is not trusted by the system store after update-ca-certificates" >&2
        exit 1
    fi
fi

echo "== litmus -k $url ${credentials[0]:-}"
# litmus writes debug.log and child.log into the current directory.
set +e
(cd "$work" && TESTS="${suites[*]}" litmus -k "$url" "${credentials[@]}") 2>&1 | tee "$work/litmus.out"
set -e

# Summary lines look like
#   <- summary for `basic': of 16 tests run: 16 passed, 0 failed. 100.0%
#   -> 1 warning was issued.        (after the summary, when there were any)
#   -> 2 tests were skipped.
echo
echo "== litmus summary"
# Over TLS litmus itself skips http's expect100 ("skipping for SSL server"):
# 3 of its 4 tests run there, and the one skip is expected.
HTTPS=$https python3 - "$work/litmus.out" "${suites[@]}" <<'EOF' && status=0 || status=$?
import os, re, sys
out, suites = open(sys.argv[1], errors="replace").read(), sys.argv[2:]
expected = {"basic": 16, "copymove": 13, "props": 30, "locks": 41, "http": 4}
allowed_skips = {}
if os.environ.get("HTTPS") == "1":
    expected["http"] = 3
    allowed_skips["http"] = 1
early_skips = {}
summary = re.compile(
    r"<- summary for [`'](\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed\.")
found, current, suite_warnings = {}, None, {}
for line in out.splitlines():
    m = re.match(r"-> running [`'](\w+)'", line)
    if m:
        current = m.group(1)
    m = re.search(r"WARNING: (.*)", line)
    if m and current:
        ws = suite_warnings.setdefault(current, [])
        if m.group(1) not in ws:
            ws.append(m.group(1))
    m = summary.search(line)
    if m:
        current = m.group(1)
        found[current] = {"run": int(m.group(2)), "passed": int(m.group(3)),
                          "failed": int(m.group(4)), "warnings": 0, "skipped": 0}
        continue
    m = re.search(r"-> (\d+) warnings? (?:was|were) issued", line)
    if m and current:
        found[current]["warnings"] = int(m.group(1))
    m = re.search(r"-> (\d+) tests? (?:was|were) skipped", line)
    if m and current:
        # litmus may print it before the suite's summary.
        if current in found:
            found[current]["skipped"] = int(m.group(1))
        else:
            early_skips[current] = int(m.group(1))
for s, n in early_skips.items():
    if s in found:
        found[s]["skipped"] = n
ok, passed, want_total, warnings = True, 0, 0, 0
for s in suites:
    want = expected[s]
    want_total += want
    r = found.get(s)
    if r is None:
        print(f"  {s:9} MISSING: no summary (suite did not run or crashed)")
        ok = False
        continue
    good = (r["run"] == want and r["passed"] == want and r["failed"] == 0
            and (not allowed_skips or r["skipped"] <= allowed_skips.get(s, 0)))
    ok &= good
    passed += r["passed"]
    warnings += r["warnings"]
    extra = "".join(f", {r[k]} {k}" for k in ("warnings", "skipped") if r[k])
    print(f"  {s:9} {r['passed']:3}/{want:<3} passed, {r['failed']} failed{extra}"
          f"{'' if good else '   <-- FAIL'}")
    for w in suite_warnings.get(s, []):
        print(f"              warning: {w}")
print(f"  {'total':9} {passed:3}/{want_total:<3} passed, {warnings} warnings")
sys.exit(0 if ok else 1)
EOF

if [[ $status != 0 ]]; then
    KEEP=1
    echo "litmus-tests: FAILED; litmus logs: $work/debug.log, $work/child.log; server log: $work/server.log"
    exit 1
fi
echo "litmus-tests: all passed"
