#!/usr/bin/env python3
"""Tahoe-LAFS's own code (tahoe-lafs 1.20.0) on the CHK format, for
griddav's `tahoe-chk` tests (src/engine/chk/). Run it with the Python of a
venv that has tahoe-lafs installed (tests/tahoe/harness.sh makes one at
/tmp/griddav-tahoe/venv):

  tahoe_chk.py vectors > tests/chk/tahoe_vectors.json
      hashes, hash trees, UEB, URI, AES-CTR, and whole files encoded by
      Tahoe's Encoder (allmydata/immutable/encode.py, the code `tahoe put`
      runs) with fixed keys, shares captured as the storage server gets them
  tahoe_chk.py encode SIZE SEED DIR
      encodes SIZE deterministic bytes with Tahoe's Encoder and a convergent
      key (tahoe put's default), 3-of-10; writes DIR/plain, DIR/share.N;
      prints the cap
  tahoe_chk.py read CAP DIR
      reads the file CAP with Tahoe's real downloader
      (allmydata.immutable.filenode.ImmutableFileNode, as `tahoe get` does)
      from the shares DIR/share.N, served by in-process fake storage
      servers; writes the plaintext to stdout, exits non-zero on failure
"""
import hashlib
import json
import os
import sys

from twisted.internet import defer, task

from allmydata import hashtree, uri
from allmydata.crypto import aes
from allmydata.immutable import encode, layout, upload
from allmydata.util import base32, hashutil, netstring as ns


def stream(seed, length):
    out = bytearray()
    i = 0
    while len(out) < length:
        out += hashlib.sha256(b"%s:%d" % (seed.encode(), i)).digest()
        i += 1
    return bytes(out[:length])


# -- capturing what an uploader writes ------------------------------------

class _Server:
    def __init__(self, i):
        self.i = i

    def get_name(self):
        return b"fake%d" % self.i

    def get_serverid(self):
        return b"v0-fake%d" % self.i


class _WriteRef:
    """What WriteBucketProxy calls: collects the share's bytes."""

    def __init__(self, size):
        self.data = bytearray(size)
        self.written = 0

    def callRemote(self, method, *args):
        if method == "write":
            offset, data = args
            self.data[offset:offset + len(data)] = data
            self.written += len(data)
        return defer.succeed(None)


class _FixedKeyData(upload.Data):
    def __init__(self, data, key):
        upload.Data.__init__(self, data, convergence=None)
        self._key = key


@defer.inlineCallbacks
def tahoe_encode(data, k, n, segsize, key=None, convergence=None):
    """Encodes `data` as `tahoe put` does; returns (cap string, shares)."""
    if key is not None:
        u = _FixedKeyData(data, key)
    else:
        u = upload.Data(data, convergence=convergence)
    u.set_default_encoding_parameters(
        {"k": k, "happy": 1, "n": n, "max_segment_size": segsize})
    eu = upload.EncryptAnUploadable(u)
    e = encode.Encoder()
    yield e.set_encrypted_uploadable(eu)
    k_, happy, n_ = e.get_param("share_counts")
    num_segments = e.get_param("num_segments")
    block_size = e.get_param("block_size")
    share_size = e.get_param("share_size")
    ht = hashtree.IncompleteHashTree(n)
    num_share_hashes = len(ht.needed_hashes(0, include_leaf=True))
    refs = {}
    landlords = {}
    servermap = {}
    for shnum in range(n):
        wbp = layout.make_write_bucket_proxy(
            None, _Server(shnum), share_size, block_size, num_segments,
            num_share_hashes, e.get_uri_extension_size())
        ref = _WriteRef(wbp.get_allocated_size())
        wbp._rref = ref
        refs[shnum] = ref
        landlords[shnum] = wbp
        servermap[shnum] = {_Server(shnum).get_serverid()}
    e.set_shareholders(landlords, servermap)
    verifycap = yield e.start()
    key = yield u.get_encryption_key()
    cap = uri.CHKFileURI(key, verifycap.uri_extension_hash, k, n, len(data))
    shares = {}
    for shnum, ref in refs.items():
        assert ref.written == len(ref.data), (ref.written, len(ref.data))
        shares[shnum] = bytes(ref.data)
    return cap.to_string().decode(), shares


# -- serving shares to Tahoe's downloader ----------------------------------

class _ReadRef:
    def __init__(self, data):
        self.data = data

    def callRemote(self, method, *args):
        if method == "read":
            offset, length = args
            return defer.succeed(self.data[offset:offset + length])
        if method == "advise_corrupt_share":
            sys.stderr.write("tahoe: share reported corrupt\n")
            return defer.succeed(None)
        raise NotImplementedError(method)


class _StorageServer:
    def __init__(self, buckets):
        self.buckets = buckets

    def get_buckets(self, si):
        return defer.succeed(self.buckets)


class _ReadServer(_Server):
    def __init__(self, i, buckets):
        _Server.__init__(self, i)
        self.ss = _StorageServer(buckets)

    def get_storage_server(self):
        return self.ss

    def get_longname(self):
        return self.get_name()

    def get_version(self):
        # What a tahoe-lafs 1.20.0 storage server announces that the
        # downloader looks at: reads past a share's end are cut short.
        return {b"http://allmydata.org/tahoe/protocols/storage/v1":
                {b"tolerates-immutable-read-overrun": True}}


class _Broker:
    def __init__(self, servers):
        self.servers = servers

    def get_servers_for_psi(self, si, for_upload=False):
        return list(self.servers)


class _Stats:
    def count(self, name, delta=1):
        pass


class _Collect:
    def __init__(self):
        self.chunks = []

    def registerProducer(self, p, streaming):
        pass

    def unregisterProducer(self):
        pass

    def write(self, data):
        self.chunks.append(data)


@defer.inlineCallbacks
def tahoe_read(cap, shares):
    from allmydata.immutable.filenode import ImmutableFileNode
    from allmydata.util.consumer import download_to_data
    from allmydata.history import History
    from allmydata.client import SecretHolder, Terminator
    servers = [_ReadServer(shnum, {shnum: _ReadRef(data)})
               for shnum, data in sorted(shares.items())]
    broker = _Broker(servers)
    filecap = uri.from_string(cap.encode())
    secret_holder = SecretHolder(b"lease secret" * 2, b"convergence")
    node = ImmutableFileNode(filecap, broker, secret_holder, Terminator(), History(_Stats()))
    data = yield download_to_data(node)
    return data


# -- vectors ----------------------------------------------------------------

def hx(b):
    return b.hex()


@defer.inlineCallbacks
def vectors():
    out = {"tahoe_version": __import__("allmydata").__version__}
    keys = [bytes(16), bytes(range(16)), stream("key", 16)]
    out["netstring"] = [[hx(v), hx(ns.netstring(v))] for v in [b"", b"abc", stream("ns", 300)]]
    out["hashes"] = []
    for v in [b"", b"x", stream("h", 1000)]:
        out["hashes"].append({
            "value": hx(v),
            "block": hx(hashutil.block_hash(v)),
            "ueb": hx(hashutil.uri_extension_hash(v)),
            "crypttext": hx(hashutil.crypttext_hash(v)),
            "crypttext_segment": hx(hashutil.crypttext_segment_hash(v)),
            "pair": hx(hashutil.tagged_pair_hash(b"tag", v, b"second")),
        })
    out["storage_index"] = [[hx(k), hx(hashutil.storage_index_hash(k)),
                             hashutil.storage_index_hash(k) and
                             uri.CHKFileURI(k, bytes(32), 3, 10, 1).get_storage_index().hex()]
                            for k in keys]
    out["trees"] = []
    for nleaves in [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 16, 17]:
        leaves = [hashutil.tagged_hash(b"leaf", b"%d" % i) for i in range(nleaves)]
        t = hashtree.HashTree(leaves)
        out["trees"].append({
            "leaves": [hx(l) for l in leaves],
            "nodes": [hx(h) for h in t],
            "needed": [sorted(t.needed_hashes(i, include_leaf=True)) for i in range(max(nleaves, 1))],
        })
    out["base32"] = [[hx(v), base32.b2a(v).decode()] for v in [b"", b"\x00", b"\xff" * 5, stream("b", 16), stream("b", 32)]]
    out["aes"] = [[hx(k), hx(stream("aes", 100)), hx(aes.encrypt_data(aes.create_encryptor(k), stream("aes", 100)))] for k in keys]
    out["files"] = []
    # (size, k, n, max segment size): one segment, several with a short
    # tail, an exact multiple, 1-of-1, k not dividing the tail.
    for size, k, n, segsize in [(56, 3, 10, 1 << 20), (1000, 3, 10, 128), (1024, 3, 10, 256),
                                (777, 1, 1, 100), (5000, 7, 13, 999), (3000, 2, 3, 1024),
                                (100, 5, 20, 1 << 20)]:
        data = stream("file%d" % size, size)
        key = stream("filekey%d" % size, 16)
        cap, shares = yield tahoe_encode(data, k, n, segsize, key=key)
        out["files"].append({
            "size": size, "k": k, "n": n, "max_segment_size": segsize,
            "key": hx(key), "plaintext": hx(data), "cap": cap,
            "shares": [hx(shares[i]) for i in range(n)],
        })
    json.dump(out, sys.stdout, indent=0)
    sys.stdout.write("\n")


@defer.inlineCallbacks
def main(reactor, argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "vectors":
        yield vectors()
    elif cmd == "encode":
        size, seed, d = int(argv[2]), argv[3], argv[4]
        data = stream(seed, size)
        cap, shares = yield tahoe_encode(data, 3, 10, 1 << 20, convergence=b"griddav test convergence")
        with open(os.path.join(d, "plain"), "wb") as f:
            f.write(data)
        for shnum, s in shares.items():
            with open(os.path.join(d, "share.%d" % shnum), "wb") as f:
                f.write(s)
        print(cap)
    elif cmd == "read":
        cap, d = argv[2], argv[3]
        shares = {}
        for name in os.listdir(d):
            if name.startswith("share."):
                with open(os.path.join(d, name), "rb") as f:
                    shares[int(name.split(".")[1])] = f.read()
        data = yield tahoe_read(cap, shares)
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    task.react(main, (sys.argv,))
