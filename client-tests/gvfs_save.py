#!/usr/bin/python3
"""An editor's save through GIO, as gedit and GNOME Text Editor do it.

    gvfs_save.py dav://127.0.0.1:PORT/path/file.txt

Reads the file and the etag GIO reports for it (PROPFIND's getetag), then
saves new text with g_file_replace(etag, make_backup=False): gvfs sends the
etag as If-Match, and a server whose getetag differs from its ETag header
answers 412, which GIO reports as "The file was externally modified".
Then checks that a replace with a stale etag is refused (WRONG_ETAG) and
leaves the content alone. Exits non-zero with a message on any failure.
"""
import sys

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402


def etag_of(f):
    info = f.query_info(Gio.FILE_ATTRIBUTE_ETAG_VALUE, Gio.FileQueryInfoFlags.NONE, None)
    return info.get_etag()


def replace(f, etag, text):
    stream = f.replace(etag, False, Gio.FileCreateFlags.NONE, None)
    stream.write_all(text, None)
    stream.close(None)


def main():
    f = Gio.File.new_for_uri(sys.argv[1])
    ok, content, etag = f.load_contents(None)
    if not ok or not etag:
        sys.exit(f"FAIL: load_contents gave no etag ({ok}, {etag!r})")
    print(f"opened: {len(content)} bytes, etag {etag}")

    new = content + b"saved by g_file_replace with the etag read at open\n"
    try:
        replace(f, etag, new)
    except GLib.Error as e:
        sys.exit(f"FAIL: save with the etag read at open ({etag}): {e.message}")
    ok, after, new_etag = f.load_contents(None)
    if after != new:
        sys.exit("FAIL: the saved content is not what was written")
    if new_etag == etag:
        sys.exit(f"FAIL: the etag did not change with the content ({etag})")
    print(f"saved: {len(after)} bytes, etag {new_etag}")

    # A second editor still holding the first etag must be told.
    try:
        replace(f, etag, b"stale writer\n")
        sys.exit("FAIL: a save with a stale etag was accepted")
    except GLib.Error as e:
        if not e.matches(Gio.io_error_quark(), Gio.IOErrorEnum.WRONG_ETAG):
            sys.exit(f"FAIL: stale save: expected WRONG_ETAG, got {e.message}")
        print(f"stale etag refused: {e.message}")
    ok, still, _ = f.load_contents(None)
    if still != new:
        sys.exit("FAIL: the refused save changed the file")
    if etag_of(f) != new_etag:
        sys.exit("FAIL: query_info and load_contents disagree on the etag")
    print("editor-style save: OK")


if __name__ == "__main__":
    main()
