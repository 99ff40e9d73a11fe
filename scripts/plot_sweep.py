#!/usr/bin/env python3
"""Draws the ratio lines of scripts/bench_sweep.sh as a bar chart (SVG).

    PY=/tmp/peers/bin/python scripts/bench_sweep.sh | tee sweep.txt
    python3 scripts/plot_sweep.py sweep.txt "2 vCPU AMD EPYC (Zen 3)" > docs/sweep.svg

Reads the lines `ratio rime/<peer> batch=<b> width=<w> <ratio>`; draws one
group of bars per (width, batch), one bar per peer, on a log scale with a
line at 1 (above it rime is faster). Standard library only.
"""

import math
import re
import sys

LINE = re.compile(r"^ratio rime/(\S+) batch=(\d+) width=(\d+) ([0-9.]+)")
COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"]


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    title = sys.argv[2] if len(sys.argv) > 2 else ""
    ratios = {}
    for line in open(sys.argv[1], encoding="utf-8"):
        m = LINE.match(line.strip())
        if m:
            peer, b, w, r = m.group(1), int(m.group(2)), int(m.group(3)), float(m.group(4))
            ratios[(w, b, peer)] = r
    if not ratios:
        sys.exit("no 'ratio rime/<peer> batch=.. width=.. x' lines in " + sys.argv[1])
    peers = sorted({p for (_, _, p) in ratios})
    groups = sorted({(w, b) for (w, b, _) in ratios})
    lo, hi = 0.25, 8.0
    for r in ratios.values():
        lo, hi = min(lo, r / 1.2), max(hi, r * 1.2)
    bar, gap, left, top, height = 12, 14, 60, 40, 260
    width = max(left + len(groups) * (len(peers) * bar + gap) + 20, 600)

    def y(r: float) -> float:
        return top + height * (1 - (math.log(r) - math.log(lo)) / (math.log(hi) - math.log(lo)))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + height + 90}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="18" font-size="13">rime steps/s ÷ peer steps/s, MLP 784-W-W-10, '
        f'SGD, f32 {title}</text>',
    ]
    for t in [0.25, 0.5, 1, 2, 4, 8, 16, 32]:
        if lo <= t <= hi:
            out.append(f'<line x1="{left}" x2="{width - 10}" y1="{y(t):.1f}" y2="{y(t):.1f}" '
                       f'stroke="{"#000" if t == 1 else "#ddd"}"/>')
            out.append(f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:g}×</text>')
    x = left + gap / 2
    for (w, b) in groups:
        for i, p in enumerate(peers):
            r = ratios.get((w, b, p))
            if r is not None:
                y0, y1 = sorted((y(1), y(r)))
                out.append(f'<rect x="{x + i * bar:.1f}" y="{y0:.1f}" width="{bar - 1}" '
                           f'height="{max(y1 - y0, 1):.1f}" fill="{COLORS[i % len(COLORS)]}">'
                           f'<title>{p} batch {b} width {w}: {r:.2f}</title></rect>')
        cx = x + len(peers) * bar / 2
        out.append(f'<text x="{cx:.1f}" y="{top + height + 14}" text-anchor="middle">b{b}</text>')
        out.append(f'<text x="{cx:.1f}" y="{top + height + 28}" text-anchor="middle" '
                   f'fill="#666">W{w}</text>')
        x += len(peers) * bar + gap
    for i, p in enumerate(peers):
        lx = left + i * 110
        out.append(f'<rect x="{lx}" y="{top + height + 45}" width="10" height="10" '
                   f'fill="{COLORS[i % len(COLORS)]}"/>')
        out.append(f'<text x="{lx + 14}" y="{top + height + 54}">{p}</text>')
    out.append("</svg>")
    print("\n".join(out))


if __name__ == "__main__":
    main()
