#!/usr/bin/env python3
"""Writes the starting corpus of each fuzz target into corpus/<target>/ (seed-* files);
the fuzzer's own finds are kept beside them after `cargo fuzz cmin`. Run from fuzz/."""

import base64
import gzip
import hashlib
import hmac
import io
import json
import os
import subprocess
import tarfile
import tempfile

KEY = b"fuzz-node-token"  # as in fuzz_targets/jwt_verify.rs
NOW = 1_700_000_000


def write(target, name, data):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    with open(f"corpus/{target}/seed-{name}", "wb") as f:
        f.write(data)


def tar_bytes(entries, fmt=tarfile.GNU_FORMAT):
    """A tar stream with the end-of-archive blocks but not the 10 KiB record padding."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue().rstrip(b"\0") + b"\0" * (1024 + (-len(out.getvalue().rstrip(b"\0")) % 512))


def entry(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = kind, mode, link, NOW
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (data if kind == tarfile.REGTYPE else None)


def untar_seeds():
    seeds = {
        "plain": [entry("dir", tarfile.DIRTYPE, mode=0o755), entry("dir/a.txt", data=b"hello\n"),
                  entry("dir/link", tarfile.SYMTYPE, link="a.txt"), entry("dir/hard", tarfile.LNKTYPE, link="dir/a.txt")],
        "dotdot": [entry("../../../../outside/pwned", data=b"x")],
        "absolute": [entry("/tmp/aerie-fuzz-pwned", data=b"x")],
        "symlink-parent": [entry("up", tarfile.SYMTYPE, link="../../../../outside"), entry("up/pwned", data=b"x")],
        "symlink-over-file": [entry("m", tarfile.SYMTYPE, link="../../../../outside/marker"), entry("m", data=b"overwrite")],
        "hardlink-out": [entry("h", tarfile.LNKTYPE, link="../../../../outside/marker")],
        "dir-over-file": [entry("x", data=b"1"), entry("x", tarfile.DIRTYPE), entry("x/y", data=b"2")],
        "special": [entry("fifo", tarfile.FIFOTYPE), entry("dev", tarfile.CHRTYPE), entry("./", tarfile.DIRTYPE, mode=0o000),
                    entry("setuid", data=b"#!", mode=0o6755), entry("locked", tarfile.DIRTYPE, mode=0o000), entry("locked/f", data=b"")],
        "long-name": [entry("d/" * 60 + "long.txt", data=b"long")],
        "deep": [entry("a/" * 300 + "f", data=b"")],
    }
    for name, entries in seeds.items():
        write("untar", name, b"\0" + tar_bytes(entries))
    write("untar", "pax", b"\0" + tar_bytes([entry("p/" + "é" * 120, data=b"pax"),
                                            entry("q", tarfile.SYMTYPE, link="l" * 200)], tarfile.PAX_FORMAT))
    # GNU tar's own archives: sparse entries and a real gzip stream for the raw form.
    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/sparse", "wb") as f:
            f.seek(64 * 1024)
            f.write(b"end")
        os.mkdir(f"{tmp}/sub")
        with open(f"{tmp}/sub/f", "wb") as f:
            f.write(b"data\n" * 10)
        plain = subprocess.run(["tar", "--sparse", "-C", tmp, "-cf", "-", "sparse", "sub"],
                               check=True, capture_output=True).stdout
        write("untar", "gnu-sparse", b"\0" + plain.rstrip(b"\0") + b"\0" * 1024)
        write("untar", "gzip-raw", b"\1" + gzip.compress(plain.rstrip(b"\0") + b"\0" * 1024, mtime=0))
    write("untar", "gzip-two-members", b"\1" + gzip.compress(b"", mtime=0) + gzip.compress(b"\0" * 1024, mtime=0))


def ignore_seeds():
    write("ignore_rules", "basic", b"*.log\n!keep.log\ntemp/\ncache/**\n!cache/keep.txt\n/root-only\n\0latest.log\ntemp\ncache/keep.txt")
    write("ignore_rules", "classes", b"[a-z]*.txt\n**/deep/**\n\\#not-comment\n# comment\n\\!bang\nfoo\\ \n[!x]?\r\n\0a.txt\nx/deep/y")
    write("ignore_rules", "odd", b"[\n\\\n**\n/\n!\n***/***\n{a,b}\n[[:alpha:]]\n\0[\n")


def http_seeds():
    uuid = "3b9d4a8e-8d8f-4c3a-9c47-6a4f1c2e7d10"
    bodies = {
        "backup": {"adapter": "wings", "uuid": uuid, "ignore": "*.log\n"},
        "backup-min": {"adapter": "s3", "uuid": uuid},
        "restore": {"adapter": "s3", "truncate_directory": True, "download_url": "https://example.com/a.tar.gz"},
        "empty": {},
    }
    for name, body in bodies.items():
        write("http_json", name, json.dumps(body).encode())
    write("http_json", "array", json.dumps(["wings", uuid]).encode())
    write("http_json", "duplicate", b'{"adapter":"a","adapter":"b","uuid":"u"}')
    write("http_json", "escapes", b'{"adap\\u0074er":"\\ud83d\\ude00","uuid":"\\u0000","ignore":null}')


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(payload, key=KEY):
    head = b64(b'{"typ":"JWT","alg":"HS256"}') + "." + b64(payload)
    return head + "." + b64(hmac.new(key, head.encode(), hashlib.sha256).digest())


def jwt_seeds():
    write("jwt_verify", "valid", jwt(json.dumps({"exp": NOW + 60, "server_uuid": "s1", "unique_id": "u"}).encode()).encode())
    write("jwt_verify", "expired", jwt(json.dumps({"exp": NOW}).encode()).encode())
    write("jwt_verify", "float-exp", jwt(b'{"exp":1e10}').encode())
    write("jwt_verify", "none-alg", (b64(b'{"alg":"none"}') + "." + b64(b'{"exp":9999999999}') + ".").encode())
    write("jwt_verify", "not-object", jwt(b"[1,2]").encode())


if __name__ == "__main__":
    untar_seeds()
    ignore_seeds()
    http_seeds()
    jwt_seeds()
