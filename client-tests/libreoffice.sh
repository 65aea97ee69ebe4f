#!/usr/bin/env bash
# LibreOffice (Debian's libreoffice-writer-nogui + python3-uno, headless)
# saves a Writer document directly to griddav over its WebDAV layer.
#
#   bash client-tests/libreoffice.sh
#
# Starts griddav and the logging proxy (with XML bodies logged), creates the
# collection /docs/, and runs libreoffice.py against
# http://127.0.0.1:PROXY/docs/test.odt (create + storeAsURL, reopen, edit +
# store(), reopen, GET as a valid ODF zip). Then: LibreOffice must have
# LOCKed and PUT the document with its lock token, no exchange may be answered
# 409, 412, 423 or 5xx, and no lock may be left on the document once
# LibreOffice closed it. On failure the request log ($work/requests.log)
# shows every request and answer, XML bodies included.
set -euo pipefail
name=libreoffice
source "$(dirname "$0")/lib.sh"

for tool in soffice curl python3; do
    command -v "$tool" >/dev/null ||
        fail "$tool is not installed (apt-get install libreoffice-writer-nogui python3-uno curl python3)"
done
# python3-uno is built for Debian's own python3, which may not be the first
# python3 on PATH (pyenv and the like).
uno_python=${UNO_PYTHON:-/usr/bin/python3}
"$uno_python" -c 'import uno' 2>/dev/null ||
    fail "$uno_python cannot import uno (apt-get install python3-uno; UNO_PYTHON names another python)"

start_griddav --bodies
code=$(curl -s -o /dev/null -w '%{http_code}' -X MKCOL "${url}docs/")
[[ $code == 201 ]] || fail "MKCOL /docs/ answered $code"

doc_url="${url}docs/test.odt"
if ! "$uno_python" "$repo/client-tests/libreoffice.py" "$doc_url" "$work"; then
    say "the exchanges LibreOffice had with griddav (bodies in $reqlog):"
    grep -E '^[0-9]+ ' "$reqlog" | grep -v ' -> interim ' | sed -E 's/ \| req: .*//' | cut -c1-200
    # A known way to make LibreOffice give up: a DAV: property element in a
    # PROPFIND answer written with a default namespace declaration
    # (<resourcetype xmlns="DAV:">) instead of a prefix. LibreOffice's
    # response parser only maps prefixed declarations (xmlns:X=...), so it
    # does not see the property at all.
    if grep -qE '^    <<< .*<[a-z]+ xmlns="DAV:"' "$reqlog"; then
        say "griddav answered PROPFIND with DAV: elements in a default namespace, e.g.:"
        grep -E '^    <<< ' "$reqlog" | grep -oE '<[a-z]+ xmlns="DAV:"[^>]*>' | sort | uniq -c
        say "LibreOffice's WebDAV parser ignores xmlns=\"...\" (it maps only xmlns:X=...), so it misses"
        say "these properties (resourcetype: it cannot tell /docs/ is a collection) and abandons the save"
    fi
    fail "LibreOffice did not complete (requests: $reqlog, LibreOffice log: $work/soffice.log)"
fi

check_requests
locks=$(grep -cE '^[0-9]+ LOCK /docs/test.odt -> 20[01] ' "$reqlog" || true)
puts=$(grep -E '^[0-9]+ PUT /docs/test.odt -> 20[014] ' "$reqlog" | grep -c "if=" || true)
[[ $locks -gt 0 ]] || fail "LibreOffice never LOCKed /docs/test.odt successfully"
[[ $puts -gt 0 ]] || fail "LibreOffice never PUT /docs/test.odt with its lock token (If:)"
say "LOCK of the document answered 2xx: $locks; PUT with the lock token answered 2xx: $puts"

# No lock may be left once LibreOffice closed the document.
lockdisc=$(curl -s -X PROPFIND -H 'Depth: 0' -H 'Content-Type: application/xml' \
    --data '<?xml version="1.0"?><propfind xmlns="DAV:"><prop><lockdiscovery/></prop></propfind>' \
    "http://127.0.0.1:$gport/docs/test.odt")
if grep -q 'activelock' <<<"$lockdisc"; then
    echo "$lockdisc"
    fail "a lock is still held on /docs/test.odt after LibreOffice closed it (no UNLOCK?)"
fi
say "no lock left on the document"
say "methods: $(sed -nE 's/^[0-9]+ ([A-Z]+) .* -> ([0-9]+) .*/\1 \2/p' "$reqlog" | sort | uniq -c | awk '{printf "%s %s:%s  ", $2, $3, $1}')"

failed=0
say "PASS"
