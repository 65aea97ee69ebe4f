#!/usr/bin/env bash
# cadaver (Debian's cadaver 0.24, neon 0.32) scripted against griddav:
# dead properties, a lock, a PUT with the lock token, unlock.
#
#   bash client-tests/cadaver.sh
#
# cadaver reads its commands from stdin and always exits 0, so the test
# checks what it printed (every step "succeeded", the property's value) and
# the request log: LOCK granted, PUT sent with the token in its If header
# and answered 2xx, UNLOCK 204, no lock left, and the content that was put.
set -euo pipefail
name=cadaver
source "$(dirname "$0")/lib.sh"

for tool in cadaver curl python3; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (apt-get install cadaver curl python3)"
done

start_griddav --bodies
cd "$work"
printf 'version 1\n' >v1.txt
printf 'version 2, put with the lock token\n' >v2.txt

cat >script <<'EOF'
mkcol docs
cd docs
put v1.txt notes.txt
propset notes.txt colour blue
propget notes.txt colour
propset notes.txt shape "round ✓"
propdel notes.txt shape
propget notes.txt
lock notes.txt
discover notes.txt
put v2.txt notes.txt
unlock notes.txt
discover notes.txt
get notes.txt back.txt
quit
EOF
# HOME: no ~/.cadaverrc or ~/.netrc of the user's.
HOME=$work timeout 120 cadaver "$url" <script >cadaver.out 2>&1 || fail "cadaver exited $? ($(tail -3 cadaver.out))"
cat cadaver.out

expect() {
    grep -qF -- "$1" cadaver.out || fail "cadaver did not print: $1"
}
! grep -qiE 'failed|error' cadaver.out || fail "cadaver reported a failure (above)"
for step in "Creating \`docs': succeeded" "Uploading v1.txt" "Setting property on \`notes.txt': succeeded" \
    "Value of colour is: blue" "Deleting property on \`notes.txt': succeeded" \
    "Locking \`notes.txt': succeeded" "Uploading v2.txt" "Unlocking \`notes.txt': succeeded" \
    "no locks found" "to back.txt"; do
    expect "$step"
done
[[ $(grep -c 'Lock token <' cadaver.out) == 1 ]] || fail "discover did not show exactly one lock while locked"
grep -q 'shape' <(sed -n '/propget notes.txt$/,/lock notes.txt/p' cadaver.out) &&
    fail "the deleted property is still listed"
cmp -s v2.txt back.txt || fail "the file read back is not the one put with the token"
[[ $(curl -sf "http://127.0.0.1:$gport/docs/notes.txt") == "$(cat v2.txt)" ]] ||
    fail "GET without cadaver does not return what was put"

token=$(sed -nE 's/.*Lock token <([^>]+)>.*/\1/p' cadaver.out | head -1)
grep -E '^[0-9]+ PUT /docs/notes.txt -> 20[0-9] ' "$reqlog" | grep -qF "$token" ||
    fail "no PUT carried the lock token $token and succeeded (see $reqlog)"
grep -qE '^[0-9]+ UNLOCK /docs/notes.txt -> 204 ' "$reqlog" || fail "UNLOCK was not answered 204"
check_requests

failed=0
say "PASS"
