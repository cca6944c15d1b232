#!/usr/bin/env python3
"""Draws the benchmark charts: horizontal bars of speed ratios (above 1:
ours is faster), one SVG per chart, with matplotlib.

    plot.py RATIOS.tsv OUTDIR

RATIOS.tsv lines: CHART <TAB> TITLE <TAB> ROW <TAB> RATIO [<TAB> AIM]
(RATIO: our speed over the other's; AIM: the issue's target for the row,
drawn as a mark). Writes OUTDIR/CHART.svg for each CHART.
"""

import collections
import sys

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    charts = collections.OrderedDict()
    with open(sys.argv[1], encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) not in (4, 5):
                print(f"plot.py: line {n}: want 4 or 5 fields", file=sys.stderr)
                return 1
            chart, title, row, ratio = parts[:4]
            aim = float(parts[4]) if len(parts) == 5 and parts[4] else None
            try:
                value = float(ratio)
            except ValueError:
                continue  # a row that did not run
            c = charts.setdefault(chart, {"title": title, "rows": []})
            c["rows"].append((row, value, aim))
    for name, c in charts.items():
        rows = c["rows"]
        fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.3))
        labels = [r[0] for r in rows]
        values = [r[1] for r in rows]
        # Green: the aim (or, without one, parity) is met.
        colors = ["#2e7d32" if v >= (aim if aim is not None else 1.0) else "#c62828"
                  for _, v, aim in rows]
        y = range(len(rows))
        ax.barh(y, values, color=colors, height=0.6)
        for i, (_, v, aim) in enumerate(rows):
            ax.text(v, i, f" {v:.2f}x", va="center", fontsize=8)
            if aim is not None:
                ax.plot([aim, aim], [i - 0.4, i + 0.4], color="black", linewidth=1.5)
        ax.axvline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_yticks(list(y))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("speed ratio (ours / other; above 1: ours is faster; black mark: the aim)")
        ax.set_title(c["title"], fontsize=10)
        ax.set_xlim(0, max(max(values), 1.0) * 1.25)
        fig.tight_layout()
        # Deterministic output: no timestamps or random ids in the SVG.
        plt.rcParams["svg.hashsalt"] = name
        fig.savefig(f"{sys.argv[2]}/{name}.svg", metadata={"Date": None})
        plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
