#!/usr/bin/env python3
"""LibreOffice saves a Writer document directly to griddav, over UNO.

    python3 libreoffice.py http://127.0.0.1:PORT/docs/test.odt WORKDIR

Starts its own headless LibreOffice (profile in WORKDIR/profile, a free UNO
port), and then, each step checked:
  1. creates a Writer document with some text and storeAsURL()s it to the
     URL (LibreOffice's WebDAV layer: OPTIONS, PROPFIND, LOCK, PUT, UNLOCK);
  2. closes it, loadComponentFromURL()s the URL and finds the text;
  3. appends a paragraph and store()s in place; closes;
  4. opens the URL once more and finds both the text and the edit;
  5. GETs the file without LibreOffice: it must be a valid zip (ODF): first
     entry `mimetype` = application/vnd.oasis.opendocument.text, and its
     content.xml holds the edit.
Exits 0 if all pass; otherwise prints `FAIL: <step>: <why>` and exits 1.
Every step has a time limit (LibreOffice waiting on a server must not hang
the test).
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
import io

import uno
from com.sun.star.beans import PropertyValue
from com.sun.star.connection import NoConnectException

STEP_TIMEOUT = 120
TEXT = "Hello from LibreOffice to griddav: encrypted, erasure-coded, saved over WebDAV."
EDIT = "A paragraph appended after reopening from griddav (Résumé, 目录)."

soffice = None
step_name = "start"
timer = None


def log(msg):
    print(f"[libreoffice] {msg}", flush=True)


def stop_soffice():
    if soffice and soffice.poll() is None:
        try:
            os.killpg(soffice.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            soffice.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(soffice.pid, signal.SIGKILL)
            soffice.wait()


def fail(msg):
    print(f"[libreoffice] FAIL: {step_name}: {msg}", file=sys.stderr, flush=True)
    stop_soffice()
    os._exit(1)


def step(name):
    """Starts a step with its own deadline."""
    global step_name, timer
    if timer:
        timer.cancel()
    step_name = name
    log(f"step: {name}")
    timer = threading.Timer(STEP_TIMEOUT, lambda: fail(f"no answer within {STEP_TIMEOUT} s"))
    timer.daemon = True
    timer.start()


def props(**kw):
    out = []
    for k, v in kw.items():
        p = PropertyValue()
        p.Name, p.Value = k, v
        out.append(p)
    return tuple(out)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def doc_text(doc):
    return doc.getText().getString()


def main():
    global soffice
    url, work = sys.argv[1], sys.argv[2]
    port = free_port()
    profile = os.path.join(work, "profile")
    step("start LibreOffice headless")
    soffice = subprocess.Popen(
        ["soffice", "--headless", "--invisible", "--nologo", "--norestore", "--nodefault",
         "--nolockcheck", f"-env:UserInstallation=file://{profile}",
         f"--accept=socket,host=127.0.0.1,port={port};urp;StarOffice.ComponentContext"],
        stdout=open(os.path.join(work, "soffice.log"), "wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext(
        "com.sun.star.bridge.UnoUrlResolver", local)
    ctx = None
    for _ in range(600):
        if soffice.poll() is not None:
            fail(f"soffice exited with {soffice.returncode} (see {work}/soffice.log)")
        try:
            ctx = resolver.resolve(
                f"uno:socket,host=127.0.0.1,port={port};urp;StarOffice.ComponentContext")
            break
        except NoConnectException:
            time.sleep(0.2)
    if ctx is None:
        fail("could not connect to soffice over UNO")
    desktop = ctx.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
    para = uno.getConstantByName("com.sun.star.text.ControlCharacter.PARAGRAPH_BREAK")

    try:
        step("create a Writer document and storeAsURL to griddav")
        doc = desktop.loadComponentFromURL("private:factory/swriter", "_blank", 0,
                                           props(Hidden=True))
        if doc is None:
            fail("loadComponentFromURL(private:factory/swriter) returned nothing")
        doc.getText().setString(TEXT)
        doc.storeAsURL(url, props(FilterName="writer8", Overwrite=True))
        if doc.getURL() != url:
            fail(f"after storeAsURL the document's URL is {doc.getURL()!r}, want {url!r}")
        doc.close(True)

        step("open the document from griddav")
        doc = desktop.loadComponentFromURL(url, "_blank", 0, props(Hidden=True))
        if doc is None:
            fail("loadComponentFromURL returned nothing (LibreOffice could not open it)")
        got = doc_text(doc)
        if TEXT not in got:
            fail(f"the reopened document does not hold the text; it holds {got[:200]!r}")
        if doc.isReadonly():
            fail("LibreOffice opened the document read-only (it could not lock it?)")

        step("append a paragraph and store() in place")
        text = doc.getText()
        text.insertControlCharacter(text.getEnd(), para, False)
        text.insertString(text.getEnd(), EDIT, False)
        doc.store()
        if doc.isModified():
            fail("the document is still modified after store()")
        doc.close(True)

        step("open the document once more and find the edit")
        doc = desktop.loadComponentFromURL(url, "_blank", 0, props(Hidden=True))
        if doc is None:
            fail("loadComponentFromURL returned nothing the second time")
        got = doc_text(doc)
        if TEXT not in got or EDIT not in got:
            fail(f"the document does not hold the text and the edit; it holds {got[:300]!r}")
        doc.close(True)
    except SystemExit:
        raise
    except Exception as e:  # UNO exceptions: IOException, CloseVetoException, ...
        fail(f"{type(e).__name__}: {getattr(e, 'Message', '') or e}")

    step("GET the file without LibreOffice: a valid ODF zip holding the edit")
    with urllib.request.urlopen(url, timeout=60) as r:
        data = r.read()
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        bad = z.testzip()
        if bad:
            fail(f"zip member {bad} is corrupt")
        first = z.infolist()[0]
        mimetype = z.read("mimetype").decode()
        content = z.read("content.xml").decode("utf-8")
    except (zipfile.BadZipFile, KeyError) as e:
        fail(f"GET {url} ({len(data)} bytes) is not an ODF zip: {e}")
    if first.filename != "mimetype" or mimetype != "application/vnd.oasis.opendocument.text":
        fail(f"first entry {first.filename!r}, mimetype {mimetype!r}: not an ODF text document")
    if EDIT not in content or TEXT not in content:
        fail("content.xml does not hold the text and the edit")
    log(f"GET {url}: {len(data)} bytes, a valid ODF text zip with {len(z.infolist())} entries "
        "holding the text and the edit")

    step("terminate LibreOffice")
    try:
        desktop.terminate()
    except Exception:
        pass  # the bridge goes away with the process
    try:
        soffice.wait(30)
    except subprocess.TimeoutExpired:
        pass
    stop_soffice()
    timer.cancel()
    log("all steps passed")


if __name__ == "__main__":
    main()
