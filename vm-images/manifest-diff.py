#!/usr/bin/env python3
"""Compares two manifests (JSON lines, docs/fixtures.md) path by
path and field by field.

    manifest-diff.py [--ignore FIELD]... [--max N] [--delta DELTA] EXPECTED ACTUAL

Prints missing/unexpected paths and differing fields (the first --max paths,
default 30), then a count per field. Exits 0 when equal (ignoring the
--ignore fields), 1 otherwise. --delta applies a fixture delta file
(NAME.delta.jsonl: set/unset, removed, added) to EXPECTED first. Python 3 standard library only.
"""

import argparse
import collections
import json
import sys


def load(path):
    entries = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            e = json.loads(line)
            raw = raw_of(e)
            if raw in entries:
                sys.exit(f"{path}:{n}: duplicate path {e['path']!r}")
            entries[raw] = e
    return entries


def raw_of(e):
    return bytes.fromhex(e["path_hex"]) if "path_hex" in e else e["path"].encode()


def apply_delta(entries, path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            raw = raw_of(d)
            if d.get("removed"):
                entries.pop(raw, None)
            elif "added" in d:
                entries[raw] = d["added"]
            else:
                e = entries[raw]
                e.update(d.get("set", {}))
                for k in d.get("unset", []):
                    e.pop(k, None)


def short(v, limit=80):
    s = json.dumps(v)
    return s if len(s) <= limit else s[:limit] + "..."


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("expected")
    ap.add_argument("actual")
    ap.add_argument("--ignore", action="append", default=[], metavar="FIELD")
    ap.add_argument("--max", type=int, default=30)
    ap.add_argument("--delta", metavar="DELTA", help="fixture delta to apply to EXPECTED")
    args = ap.parse_args()
    exp, act = load(args.expected), load(args.actual)
    if args.delta:
        apply_delta(exp, args.delta)
    ignore = set(args.ignore)
    per_field = collections.Counter()
    shown = 0
    bad = 0
    for raw in sorted(set(exp) | set(act)):
        e, a = exp.get(raw), act.get(raw)
        name = raw.decode("utf-8", errors="backslashreplace")
        lines = []
        if a is None:
            per_field["(missing)"] += 1
            lines.append("missing from actual")
        elif e is None:
            per_field["(unexpected)"] += 1
            lines.append(f"unexpected: {short(a)}")
        else:
            for k in sorted((set(e) | set(a)) - ignore):
                if e.get(k) != a.get(k):
                    per_field[k] += 1
                    if k == "xattrs" and isinstance(e.get(k), dict) and isinstance(a.get(k), dict):
                        for xn in sorted(set(e[k]) | set(a[k])):
                            if e[k].get(xn) != a[k].get(xn):
                                lines.append(f"xattr {xn!r}: expected {short(e[k].get(xn))}, actual {short(a[k].get(xn))}")
                    else:
                        lines.append(f"{k}: expected {short(e.get(k))}, actual {short(a.get(k))}")
        if lines:
            bad += 1
            if shown < args.max:
                shown += 1
                print(f"{name!r}:")
                for line in lines:
                    print(f"    {line}")
    print(f"{len(exp)} expected, {len(act)} actual, {bad} paths differ"
          + (f" (ignoring {', '.join(sorted(ignore))})" if ignore else ""))
    for k, n in sorted(per_field.items()):
        print(f"    {k}: {n}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
