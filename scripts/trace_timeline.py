#!/usr/bin/env python3
"""Draws a convoy Chrome trace (CONVOY_TRACE=path) as a PNG timeline.

One lane per stream (the trace's named tracks, in their order), each task a
bar coloured by its kind, and under them the memory pool's counter when the
trace has one. --arrows draws the dependency arrows (the trace's flow
events: from the end of the task that was waited for to the start of the
task that waited).

    scripts/trace_timeline.py trace.json -o timeline.png --arrows

Needs Python 3 and matplotlib (Debian: python3-matplotlib; `make
trace-picture` installs it through scripts/install-deps.sh).
"""

import argparse
import json
import sys

KIND_COLOURS = {
    "upload": "#4e79a7",
    "download": "#76b7b2",
    "conv_fwd": "#f28e2b",
    "conv_bwd_data": "#e15759",
    "conv_bwd_filter": "#b07aa1",
    "custom": "#59a14f",
    "release": "#bab0ac",
    "enqueue": "#9c9c9c",
}
OTHER_COLOURS = ["#edc948", "#ff9da7", "#9c755f", "#86bcb6", "#d37295"]


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Render a convoy Chrome trace as a PNG timeline, one lane per stream.")
    parser.add_argument("trace", help="the JSON file CONVOY_TRACE wrote")
    parser.add_argument("-o", "--output", default="timeline.png", help="PNG to write")
    parser.add_argument("--arrows", action="store_true",
                        help="draw dependency arrows between tasks")
    parser.add_argument("--start-ms", type=float, default=None,
                        help="left edge, in ms from the trace's origin")
    parser.add_argument("--end-ms", type=float, default=None,
                        help="right edge, in ms from the trace's origin")
    parser.add_argument("--last-ms", type=float,
                        help="show only the last LAST_MS ms (the steady state of a run)")
    parser.add_argument("--title", default=None, help="title above the timeline")
    parser.add_argument("--width", type=float, default=12.0, help="width in inches")
    parser.add_argument("--dpi", type=int, default=100, help="pixels per inch")
    parser.add_argument("--no-counters", action="store_true",
                        help="leave out the memory pool panel")
    return parser.parse_args(argv)


def load(path):
    """Lanes, slices, flow pairs and counter samples of a trace."""
    with open(path, encoding="utf-8") as f:
        events = json.load(f)["traceEvents"]
    names, order = {}, {}
    slices, starts, finishes, counters = [], {}, {}, {}
    for e in events:
        ph = e.get("ph")
        tid = e.get("tid", 0)
        if ph == "M" and e.get("name") == "thread_name":
            names[tid] = e["args"]["name"]
        elif ph == "M" and e.get("name") == "thread_sort_index":
            order[tid] = e["args"]["sort_index"]
        elif ph == "X":
            slices.append((tid, e["ts"] / 1000.0, e.get("dur", 0.0) / 1000.0,
                           e.get("cat", "task"), e.get("name", "")))
        elif ph == "s" and e.get("cat") == "dependency":
            starts[e["id"]] = (tid, e["ts"] / 1000.0)
        elif ph == "f" and e.get("cat") == "dependency":
            finishes[e["id"]] = (tid, e["ts"] / 1000.0)
        elif ph == "C":
            series = counters.setdefault(e.get("name", "counter"), {})
            for key, value in e.get("args", {}).items():
                series.setdefault(key, []).append((e["ts"] / 1000.0, value))
    flows = [(starts[i], finishes[i]) for i in starts if i in finishes]
    used = sorted({s[0] for s in slices}, key=lambda t: (order.get(t, 1 << 30), t))
    lanes = [(tid, names.get(tid, "track %d" % tid)) for tid in used]
    return lanes, slices, flows, counters


def colour_of(kind, extra):
    if kind in KIND_COLOURS:
        return KIND_COLOURS[kind]
    if kind not in extra:
        extra[kind] = OTHER_COLOURS[len(extra) % len(OTHER_COLOURS)]
    return extra[kind]


def draw(args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    lanes, slices, flows, counters = load(args.trace)
    if not slices:
        sys.exit("trace_timeline: %s has no task slices" % args.trace)
    row = {tid: i for i, (tid, _) in enumerate(lanes)}
    start = args.start_ms if args.start_ms is not None else min(s[1] for s in slices)
    end = args.end_ms if args.end_ms is not None else max(s[1] + s[2] for s in slices)
    if args.last_ms is not None:
        start = max(start, end - args.last_ms)
    margin = (end - start) * 0.01 or 0.01
    show_counters = bool(counters) and not args.no_counters

    lane_height = 0.42
    height = 1.4 + lane_height * len(lanes) + (1.3 if show_counters else 0.0)
    if show_counters:
        fig, (ax, bottom) = plt.subplots(
            2, 1, sharex=True, figsize=(args.width, height),
            gridspec_kw={"height_ratios": [max(len(lanes), 2), 1.6]})
    else:
        fig, ax = plt.subplots(figsize=(args.width, height))
        bottom = None

    extra = {}
    bars = {}
    for tid, ts, dur, kind, _ in slices:
        if ts + dur < start or ts > end:
            continue
        bars.setdefault(kind, []).append((row[tid], ts, dur))
    for kind, items in bars.items():
        for r, ts, dur in items:
            # A bar is at least a pixel wide, so short tasks still show.
            ax.broken_barh([(ts, max(dur, (end - start) / 2000.0))], (r - 0.38, 0.76),
                           facecolors=colour_of(kind, extra), edgecolors="white",
                           linewidth=0.3)
    if args.arrows:
        for (from_tid, from_ts), (to_tid, to_ts) in flows:
            if from_tid not in row or to_tid not in row:
                continue
            # Only arrows whose both ends are drawn: one from outside the
            # window would cross the lane labels.
            if min(from_ts, to_ts) < start or max(from_ts, to_ts) > end:
                continue
            same = from_tid == to_tid
            ax.annotate("", xy=(to_ts, row[to_tid] - (0.3 if same else 0.0)),
                        xytext=(from_ts, row[from_tid] - (0.3 if same else 0.0)),
                        arrowprops=dict(arrowstyle="-|>", color="#333333", lw=0.5,
                                        alpha=0.55, shrinkA=0, shrinkB=0, clip_on=True,
                                        connectionstyle="arc3,rad=-0.25" if same else None))

    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels([name for _, name in lanes])
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.set_xlim(start - margin, end + margin)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    kinds = [k for k in KIND_COLOURS if k in bars] + sorted(k for k in bars if k not in KIND_COLOURS)
    ax.legend(handles=[Patch(color=colour_of(k, extra), label=k) for k in kinds],
              loc="upper center", bbox_to_anchor=(0.5, 1.0 + 0.55 / max(len(lanes), 2)),
              ncol=min(len(kinds), 8), frameon=False, fontsize=9)
    title = args.title or "convoy timeline: %s" % args.trace
    fig.suptitle(title, fontsize=11)

    if bottom is not None:
        for name, series in counters.items():
            for key, points in series.items():
                points.sort()
                xs = [p[0] for p in points] + [end + margin]
                ys = [p[1] / (1 << 20) for p in points] + [points[-1][1] / (1 << 20)]
                bottom.step(xs, ys, where="post", label="%s: %s" % (name, key), linewidth=1.2)
        bottom.set_ylabel("MiB")
        bottom.set_ylim(bottom=0)
        bottom.grid(color="#dddddd", linewidth=0.6)
        bottom.legend(loc="upper left", fontsize=8, frameon=False)
        for side in ("top", "right"):
            bottom.spines[side].set_visible(False)
        bottom.set_xlabel("ms since the runtime started")
    else:
        ax.set_xlabel("ms since the runtime started")
    fig.tight_layout()
    fig.savefig(args.output, dpi=args.dpi)
    print("trace_timeline: wrote %s (%d tasks on %d streams, %d arrows)"
          % (args.output, len(slices), len(lanes), len(flows) if args.arrows else 0))


if __name__ == "__main__":
    draw(parse_args(sys.argv[1:]))
