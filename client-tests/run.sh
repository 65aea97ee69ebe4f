#!/usr/bin/env bash
# Runs the real-client tests against griddav: davfs2, rclone, LibreOffice,
# GNOME's gvfs, cadaver.
#
#   bash client-tests/run.sh [davfs2 rclone libreoffice gvfs cadaver]
#
# Builds griddav in release mode once (or uses $GRIDDAV_BIN), runs each test
# (each starts its own griddav on a fresh data directory and a free port),
# prints a summary and exits non-zero if any failed. See README.md here.
# davfs2 needs root (it mounts); gvfs needs /dev/fuse.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

tests=("$@")
[[ ${#tests[@]} -gt 0 ]] || tests=(davfs2 rclone libreoffice gvfs cadaver)

if [[ -z "${GRIDDAV_BIN:-}" ]]; then
    echo "== building griddav (release)"
    cargo build --release --bin griddav || exit 1
    GRIDDAV_BIN=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/griddav
fi
export GRIDDAV_BIN

declare -A result secs
passed=0
failed=0
for t in "${tests[@]}"; do
    echo "== client test: $t"
    t0=$SECONDS
    if bash "$repo/client-tests/$t.sh"; then
        result[$t]=PASS
        passed=$((passed + 1))
    else
        result[$t]=FAIL
        failed=$((failed + 1))
    fi
    secs[$t]=$((SECONDS - t0))
done

echo
echo "== client tests summary"
for t in "${tests[@]}"; do
    printf '  %-12s %s  (%s s)\n' "$t" "${result[$t]}" "${secs[$t]}"
done
echo "client-tests: $passed passed, $failed failed"
[[ $failed == 0 ]]
