#!/usr/bin/env python3
"""Turns evfs-walk output (guest side, see guest/evfs-walk) into the
project's manifest format: JSON lines sorted by raw path bytes, as described
in docs/fixtures.md ("Manifest format").

    walk2manifest.py [--omit FIELD]... [WALK_OUTPUT] > manifest.jsonl

Reads stdin without a file. Lines other than the walker's are ignored, so
run.sh's whole output can be fed in. Fields the guest could not produce are
omitted on every line: `xattrs` when the walker says xattrs=unsupported or
no, `mtime_nsec` when nsec=no; `--omit` drops more (e.g. to compare with a
source that lacks them). Exits 1 on walker errors (ERR lines, a missing
end line or a count mismatch).

Python 3 standard library only.
"""

import argparse
import json
import sys


def escape(raw: bytes) -> str:
    """UTF-8 with every invalid byte as \\xNN (the manifest's `path`)."""
    return raw.decode("utf-8", errors="backslashreplace")


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def entry(fields, opts):
    """One manifest object from the walker's E line (without the "E")."""
    (path_hex, kind, mode, uid, gid, nlink, size, mtime, nsec, rdev, sha,
     target_hex, xattrs) = fields
    raw = bytes.fromhex(path_hex)
    e = {"path": escape(raw)}
    if not is_utf8(raw):
        e["path_hex"] = raw.hex()
    e["type"] = kind
    e["mode"] = int(mode)
    e["uid"] = int(uid)
    e["gid"] = int(gid)
    e["nlink"] = int(nlink)
    e["size"] = int(size)
    e["mtime"] = int(mtime)
    if nsec != "-":
        e["mtime_nsec"] = int(nsec)
    if kind in ("chr", "blk"):
        major, minor = rdev.split(":")
        e["rdev_major"] = int(major)
        e["rdev_minor"] = int(minor)
    if kind == "reg":
        e["sha256"] = sha
    if kind == "lnk":
        t = bytes.fromhex(target_hex)
        e["target"] = escape(t)
        if not is_utf8(t):
            e["target_hex"] = t.hex()
    if opts["xattrs"]:
        x = {}
        if xattrs != "-":
            for pair in xattrs.split(","):
                name_hex, _, value_hex = pair.partition("=")
                x[escape(bytes.fromhex(name_hex))] = value_hex.lower()
        e["xattrs"] = x
    for f in opts["omit"]:
        e.pop(f, None)
    return raw, e


def convert(lines, omit):
    """Returns (entries sorted by raw path, list of problems)."""
    problems = []
    opts = {"xattrs": True, "omit": set(omit)}
    out = []
    header = end = None
    for n, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if line.startswith("EVFS-WALK "):
            header = dict(w.split("=", 1) for w in line.split()[2:] if "=" in w)
            opts["xattrs"] = header.get("xattrs") == "yes"
            if header.get("nsec") == "no":
                opts["omit"].add("mtime_nsec")
        elif line.startswith("E "):
            fields = line.split(" ")[1:]
            if len(fields) != 13:
                problems.append(f"line {n}: {len(fields)} fields, want 13: {line[:200]}")
                continue
            out.append(entry(fields, opts))
        elif line.startswith("ERR "):
            problems.append(f"walker: {line[4:]}")
        elif line.startswith("EVFS-WALK-END "):
            end = dict(w.split("=", 1) for w in line.split()[1:] if "=" in w)
    if header is None:
        problems.append("no EVFS-WALK header line")
    if end is None:
        problems.append("no EVFS-WALK-END line (walker output truncated?)")
    elif int(end.get("entries", -1)) != len(out):
        problems.append(f"walker reported {end.get('entries')} entries, read {len(out)}")
    out.sort(key=lambda re: re[0])
    for a, b in zip(out, out[1:]):
        if a[0] == b[0]:
            problems.append(f"duplicate path {escape(a[0])!r}")
    return [e for _, e in out], problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", nargs="?", help="walker output (default stdin)")
    ap.add_argument("--omit", action="append", default=[], metavar="FIELD",
                    help="drop FIELD from every entry (repeatable)")
    args = ap.parse_args()
    if args.input:
        with open(args.input, encoding="ascii", errors="replace") as f:
            lines = f.readlines()
    else:
        lines = sys.stdin.buffer.read().decode("ascii", errors="replace").splitlines()
    entries, problems = convert(lines, args.omit)
    out = sys.stdout
    for e in entries:
        out.write(json.dumps(e) + "\n")
    for p in problems:
        print(f"walk2manifest: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
