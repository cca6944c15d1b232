#!/usr/bin/env python3
"""Host-side manifest of a directory tree, in the project's manifest format
(docs/fixtures.md), for comparing with what a guest sees
(walk2manifest.py). Uses lstat/readlink/llistxattr/lgetxattr only, never
following symlinks, like the Rust tests' walker.

    host-manifest.py [--omit FIELD]... DIR > manifest.jsonl

Python 3 standard library only.
"""

import argparse
import hashlib
import json
import os
import stat
import sys

TYPES = [
    (stat.S_ISREG, "reg"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "lnk"),
    (stat.S_ISCHR, "chr"), (stat.S_ISBLK, "blk"), (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "sock"),
]


def escape(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def sha256_file(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def entry(fs_path: bytes, raw: bytes, omit):
    st = os.lstat(fs_path)
    kind = next(name for test, name in TYPES if test(st.st_mode))
    e = {"path": escape(raw)}
    if not is_utf8(raw):
        e["path_hex"] = raw.hex()
    e.update(type=kind, mode=st.st_mode, uid=st.st_uid, gid=st.st_gid,
             nlink=st.st_nlink, size=st.st_size, mtime=st.st_mtime_ns // 10**9,
             mtime_nsec=st.st_mtime_ns % 10**9)
    if kind in ("chr", "blk"):
        e["rdev_major"] = os.major(st.st_rdev)
        e["rdev_minor"] = os.minor(st.st_rdev)
    elif kind == "reg":
        e["sha256"] = sha256_file(fs_path)
    elif kind == "lnk":
        t = os.readlink(fs_path)
        e["target"] = escape(t)
        if not is_utf8(t):
            e["target_hex"] = t.hex()
    if "xattrs" not in omit:
        e["xattrs"] = {
            escape(os.fsencode(n)): os.getxattr(fs_path, n, follow_symlinks=False).hex()
            for n in os.listxattr(fs_path, follow_symlinks=False)
        }
    for f in omit:
        e.pop(f, None)
    return e


def walk(root: bytes, omit):
    out = []
    stack = [(root, b"/")]
    while stack:
        fs_path, raw = stack.pop()
        out.append((raw, entry(fs_path, raw, omit)))
        if stat.S_ISDIR(os.lstat(fs_path).st_mode):
            for name in os.listdir(fs_path):
                child = raw + (b"" if raw == b"/" else b"/") + name
                stack.append((os.path.join(fs_path, name), child))
    out.sort(key=lambda re: re[0])
    return [e for _, e in out]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--omit", action="append", default=[], metavar="FIELD",
                    help="drop FIELD from every entry (repeatable)")
    args = ap.parse_args()
    for e in walk(os.fsencode(args.dir), set(args.omit)):
        sys.stdout.write(json.dumps(e) + "\n")


if __name__ == "__main__":
    main()
