#!/usr/bin/env python3
"""Lists a WebDAV tree by PROPFIND (Depth: 1, recursively).

    python3 davlist.py BASE_URL [PATH]

Prints one line per resource below PATH (default: the root), sorted, paths
relative to BASE_URL and URL-decoded, collections ending in `/`, files
followed by a tab and their getcontentlength:

    docs/
    docs/a b.txt	1234

Exits non-zero if a PROPFIND is not answered 207 or a response lacks its
properties. For an https BASE_URL, DAVLIST_CA names the certificate to
trust; DAVLIST_AUTH=user:password sends HTTP Basic credentials.
"""
import base64
import os
import ssl
import http.client
import sys
import urllib.parse
import xml.etree.ElementTree as ET

D = "{DAV:}"
BODY = (b'<?xml version="1.0" encoding="utf-8"?>'
        b'<propfind xmlns="DAV:"><prop><resourcetype/><getcontentlength/></prop></propfind>')


AUTH = os.environ.get("DAVLIST_AUTH")


def propfind(conn, path):
    headers = {"Depth": "1", "Content-Type": "application/xml"}
    if AUTH:
        headers["Authorization"] = "Basic " + base64.b64encode(AUTH.encode()).decode()
    conn.request("PROPFIND", path, body=BODY, headers=headers)
    r = conn.getresponse()
    data = r.read()
    if r.status != 207:
        sys.exit(f"davlist: PROPFIND {path} answered {r.status} {r.reason}")
    out = []
    for resp in ET.fromstring(data).iter(D + "response"):
        href = urllib.parse.urlsplit(resp.findtext(D + "href")).path
        is_dir, length = False, None
        for ps in resp.iter(D + "propstat"):
            if "200" not in (ps.findtext(D + "status") or ""):
                continue
            rt = ps.find(D + "prop/" + D + "resourcetype")
            if rt is not None and rt.find(D + "collection") is not None:
                is_dir = True
            cl = ps.findtext(D + "prop/" + D + "getcontentlength")
            if cl is not None:
                length = int(cl)
        out.append((href, is_dir, length))
    return out


def main():
    base = urllib.parse.urlsplit(sys.argv[1])
    root = base.path.rstrip("/") + "/"
    start = root + urllib.parse.quote(sys.argv[2].strip("/")) if len(sys.argv) > 2 else root
    if not start.endswith("/"):
        start += "/"
    if base.scheme == "https":
        context = ssl.create_default_context(cafile=os.environ.get("DAVLIST_CA") or None)
        conn = http.client.HTTPSConnection(base.hostname, base.port, timeout=120, context=context)
    else:
        conn = http.client.HTTPConnection(base.hostname, base.port, timeout=120)
    lines, todo, seen = [], [start], set()
    while todo:
        path = todo.pop()
        for href, is_dir, length in propfind(conn, path):
            norm = urllib.parse.unquote(href).rstrip("/")
            if norm == urllib.parse.unquote(path).rstrip("/") or norm in seen:
                continue
            seen.add(norm)
            rel = norm[len(urllib.parse.unquote(start)):]
            if is_dir:
                lines.append(rel + "/")
                todo.append(urllib.parse.quote(norm) + "/")
            else:
                if length is None:
                    sys.exit(f"davlist: {rel} has no getcontentlength")
                lines.append(f"{rel}\t{length}")
    print("\n".join(sorted(lines)))


if __name__ == "__main__":
    main()
