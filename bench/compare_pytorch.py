#!/usr/bin/env python3
"""convoy against PyTorch on the convolution layer suite, side by side in one run.

For every layer of the suite (bench/conv_suite.txt) and each direction (forward,
gradient w.r.t. the input, gradient w.r.t. the filters) this times PyTorch's CPU
convolutions (torch.nn.functional.conv2d / conv3d, torch.nn.grad.conv2d_input /
conv2d_weight and their 3D forms) in this process, and convoy's through its
public API in build/bench/conv_bench, which runs as a server (--serve) for the
whole comparison: one convoy runtime, one PyTorch, the same thread count each.
The two take turns direction by direction: for each layer and direction,
PyTorch's warm-ups and timed calls back to back, then convoy's (the order
alternating between directions and rounds), so the two measurements of a
figure lie a fraction of a second apart and a burst of other work on a shared
machine hits both alike. Each side's calls run back to back as a program's
would: alternating single calls instead puts a thread wake-up into every call,
which on this 2-vCPU VM costs up to milliseconds and swamps the small layers.
A pause before each side's calls (--gap, 10 ms) lets the OpenMP and OpenBLAS
threads of the side that ran before stop spinning. Every figure is the
median of --runs calls after --warmup warm-up calls; with several rounds, the
median over the rounds.

It prints a table of GFLOP/s (2 * N * K * C/groups * kernel volume * output
positions per call, the same count for every direction, as conv_bench), the
ratio convoy / PyTorch per layer and direction, their geometric mean and the
minimum, and the drift of conv_bench's OpenBLAS sgemm baseline over the run
(a busy machine shows as drift).

convoy's options come from the environment as usual (CONVOY_ALGO=time_once,
CONVOY_EXCLUDE=...); CONVOY_BLAS_THREADS is set to --threads. --side measures
several convoy configurations in the same run (each its own conv_bench, all
alternating with PyTorch), --no-torch leaves PyTorch out: then the first side is
the reference the others are divided by, e.g. the heuristic policy against
time_once:

    compare_pytorch.py --no-torch --side heuristic: --side time_once:CONVOY_ALGO=time_once

Needs python3 with PyTorch (Debian: python3-torch; `make bench-compare`
installs it through scripts/install-deps.sh with CONVOY_NEED_TORCH=1). convoy
itself never depends on Python.
"""

import argparse
import csv
import math
import os
import statistics
import subprocess
import sys
import time

DIRECTIONS = ("forward", "backward_data", "backward_filter")
SHORT = {"forward": "fwd", "backward_data": "bwd_data", "backward_filter": "bwd_filter"}


def parse_suite(path):
    """The layers of a suite file, as conv_bench reads them (examples/suite.h)."""
    layers = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if not line:
                continue
            name, nd, n, c, spatial, k, kernel, stride, pad, dilation, groups = line
            nd = int(nd)

            def ext(text):
                values = tuple(int(v) for v in text.split("x"))
                assert len(values) == nd, (name, text)
                return values

            layer = dict(name=name, nd=nd, n=int(n), c=int(c), k=int(k), groups=int(groups),
                         spatial=ext(spatial), kernel=ext(kernel), stride=ext(stride),
                         pad=ext(pad), dilation=ext(dilation))
            out = []
            for i in range(nd):
                extent = (layer["kernel"][i] - 1) * layer["dilation"][i] + 1
                out.append((layer["spatial"][i] + 2 * layer["pad"][i] - extent)
                           // layer["stride"][i] + 1)
            layer["out"] = tuple(out)
            flops = 2.0 * layer["n"] * layer["k"] * (layer["c"] // layer["groups"])
            for i in range(nd):
                flops *= layer["kernel"][i] * out[i]
            layer["flops"] = flops
            layers.append(layer)
    return layers


class Torch:
    """PyTorch's three directions of one layer, on tensors made once."""

    def __init__(self, torch, layer):
        self.torch = torch
        g = torch.Generator().manual_seed(1)
        nd = layer["nd"]

        def rand(*shape):
            return torch.rand(*shape, generator=g) * 2 - 1

        x = rand(layer["n"], layer["c"], *layer["spatial"])
        w = rand(layer["k"], layer["c"] // layer["groups"], *layer["kernel"])
        dy = rand(layer["n"], layer["k"], *layer["out"])
        args = dict(stride=layer["stride"], padding=layer["pad"], dilation=layer["dilation"],
                    groups=layer["groups"])
        F = torch.nn.functional
        grad = torch.nn.grad
        conv = F.conv2d if nd == 2 else F.conv3d
        conv_input = grad.conv2d_input if nd == 2 else grad.conv3d_input
        conv_weight = grad.conv2d_weight if nd == 2 else grad.conv3d_weight
        self.calls = {
            "forward": lambda: conv(x, w, None, **args),
            "backward_data": lambda: conv_input(x.shape, w, dy, **args),
            "backward_filter": lambda: conv_weight(x, w.shape, dy, **args),
        }

    def time(self, direction, runs, warmup):
        """Seconds each of `runs` calls took, after `warmup` calls, back to back."""
        call = self.calls[direction]
        times = []
        with self.torch.no_grad():
            for _ in range(warmup):
                call()
            for _ in range(runs):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
        return times


class Convoy:
    """conv_bench --serve: one convoy runtime answering one layer at a time."""

    def __init__(self, conv_bench, suite, runs, warmup, threads, settings):
        env = dict(os.environ)
        env.update(settings)
        env["CONV_BENCH_DIRECTIONS"] = "all"
        env["CONVOY_BLAS_THREADS"] = str(threads)
        self.process = subprocess.Popen(
            [conv_bench, "--serve", "--runs=%d" % runs, "--warmup=%d" % warmup, suite],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.sgemm_start = None
        self.runtime = ""
        # The baseline and the description come before the first request.
        while self.sgemm_start is None or not self.runtime:
            row = self._row()
            if row[0] == "sgemm":
                self.sgemm_start = float(row[2])
            elif row[0] == "runtime":
                self.runtime = row[1]

    def _row(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("conv_bench --serve ended early (exit %s)" % self.process.poll())
        return next(csv.reader([line.strip()]))

    def _request(self, text):
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        rows = []
        while True:
            row = self._row()
            if row == ["end"]:
                return rows
            if row[0] == "error":
                raise RuntimeError("conv_bench: " + row[1])
            if not row[0].startswith("#"):
                rows.append(row)

    def open(self, name):
        """Makes the layer's tensors and plans it: {direction: "implementation[:algorithm]"}"""
        plans = {}
        for row in self._request("open " + name):
            if row[0] == "plan":
                _, _, direction, impl, algorithm = row[:5]
                plans[direction] = algorithm if algorithm.startswith(impl) else \
                    impl + ":" + algorithm
        return plans

    def time(self, direction, runs, warmup):
        """Seconds each of `runs` calls of the open layer took, after `warmup`, back to back."""
        for row in self._request("time %s %d %d" % (direction, runs, warmup)):
            if row[0] == "times":
                return [float(ms) * 1e-3 for ms in row[3:]]
        raise RuntimeError("conv_bench answered no times row")

    def close_layer(self):
        self._request("close")

    def sgemm(self):
        for row in self._request("sgemm"):
            if row[0] == "sgemm":
                return float(row[2])
        return float("nan")

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def parse_side(text):
    """--side LABEL[:VAR=VALUE,...] -> (label, {VAR: VALUE})"""
    label, _, settings = text.partition(":")
    env = {}
    var = None
    for item in filter(None, settings.split(",")):
        name, eq, value = item.partition("=")
        if eq and (name.startswith("CONVOY_") or name == "BUILD"):
            var = name
            env[var] = value
        elif var:  # a comma inside a value: CONVOY_EXCLUDE=gemm,1x1
            env[var] += "," + item
        else:
            raise argparse.ArgumentTypeError("expected LABEL:CONVOY_VAR=VALUE,..., got %r" % text)
    return label, env


def idle_fraction(seconds=0.5):
    """The share of the machine's CPU time spent idle over the next `seconds` (/proc/stat)."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total
    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_until_idle(limit):
    """Waits up to `limit` seconds for the CPUs to be 90% idle; returns the idle share seen."""
    deadline = time.monotonic() + limit
    idle = idle_fraction()
    while idle < 0.9 and time.monotonic() < deadline:
        idle = idle_fraction()
    return idle


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default="build", help="convoy build directory (build)")
    parser.add_argument("--suite", default="bench/conv_suite.txt")
    parser.add_argument("--threads", type=int, default=2, help="threads for each side (2)")
    parser.add_argument("--runs", type=int, default=7, help="timed calls per figure (7)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up calls per figure (2)")
    parser.add_argument("--gap", type=float, default=0.01,
                        help="seconds of pause before each side's calls, so that the threads of "
                        "the side that ran before have stopped spinning (0.01)")
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="what each figure takes of its --runs calls: the median (default) "
                        "or, to estimate what a call costs without other work, the fastest")
    parser.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                        help="before each layer, wait up to this long for the CPUs to be 90%% "
                        "idle (other work on a shared machine); 0 (default) does not wait")
    parser.add_argument("--rounds", type=int, default=1,
                        help="passes over the suite; figures are medians over them (1)")
    parser.add_argument("--side", action="append", type=parse_side, metavar="LABEL:VAR=VALUE,..",
                        help="a convoy configuration to measure, its CONVOY_* settings on top of "
                        "the environment's, and BUILD=dir for another build of convoy "
                        "(repeatable; default: one, 'convoy', as the environment says); e.g. "
                        "--side heuristic: --side time_once:CONVOY_ALGO=time_once")
    parser.add_argument("--no-torch", action="store_true",
                        help="leave PyTorch out; the first convoy side is then the reference")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("layers", nargs="*", help="layer names (default: the whole suite)")
    args = parser.parse_args()

    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            sys.exit("compare_pytorch: PyTorch is not installed for %s; run "
                     "CONVOY_NEED_TORCH=1 scripts/install-deps.sh (Debian: python3-torch)"
                     % sys.executable)
        torch.set_num_threads(args.threads)
    conv_bench = os.path.join(args.build, "bench", "conv_bench")
    if not os.access(conv_bench, os.X_OK):
        sys.exit("compare_pytorch: %s is missing; build convoy first (make build)" % conv_bench)
    layers = parse_suite(args.suite)
    if args.layers:
        unknown = set(args.layers) - {l["name"] for l in layers}
        if unknown:
            sys.exit("compare_pytorch: no layer %s in %s" % (", ".join(sorted(unknown)),
                                                            args.suite))
        layers = [l for l in layers if l["name"] in args.layers]

    convoys = {}  # label -> Convoy
    for label, env in args.side or [("convoy", {})]:
        bench = conv_bench
        build = env.pop("BUILD", None)
        if build:  # another build of convoy: its conv_bench, on its own library
            bench = os.path.join(build, "bench", "conv_bench")
            env["LD_LIBRARY_PATH"] = os.path.abspath(build)
        convoys[label] = Convoy(bench, args.suite, args.runs, args.warmup, args.threads, env)
    labels = (["PyTorch"] if torch else []) + list(convoys)
    if torch:
        mkldnn = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
        print("PyTorch %s (%d threads, oneDNN/mkldnn %s)" % (torch.__version__,
                                                             torch.get_num_threads(),
                                                             "on" if mkldnn else "off"))
    for label, convoy in convoys.items():
        print("%s: %s" % (label, convoy.runtime))
    print("%s of %d calls after %d warm-ups, the sides taking turns direction by direction; "
          "%d round%s"
          % (args.stat, args.runs, args.warmup, args.rounds,
             "" if args.rounds == 1 else "s (median over the rounds)"))
    sys.stdout.flush()

    seconds = {}  # (layer, direction, label) -> [median seconds per round]
    chosen = {}  # (layer, direction, label) -> a convoy side's algorithm
    for r in range(args.rounds):
        for layer in layers:
            name = layer["name"]
            idle = wait_until_idle(args.wait_idle) if args.wait_idle > 0 else None
            calls = {}
            if torch:
                theirs = Torch(torch, layer)
                calls["PyTorch"] = theirs.time
            for label, convoy in convoys.items():
                for d, algorithm in convoy.open(name).items():
                    chosen[(name, d, label)] = algorithm
                calls[label] = convoy.time
            for i, d in enumerate(DIRECTIONS):
                for j in range(len(labels)):
                    label = labels[(r + i + j) % len(labels)]
                    time.sleep(args.gap)
                    times = calls[label](d, args.runs, args.warmup)
                    stat = min if args.stat == "min" else statistics.median
                    seconds.setdefault((name, d, label), []).append(stat(times))
            for convoy in convoys.values():
                convoy.close_layer()
            calls = theirs = None
            print("  round %d: %s%s" % (r + 1, name, "" if idle is None else
                                        " (%.0f%% idle before)" % (100 * idle)),
                  file=sys.stderr)
    sgemm_end = {label: convoy.sgemm() for label, convoy in convoys.items()}
    for convoy in convoys.values():
        convoy.close()

    reference, others = labels[0], labels[1:]
    gflops = {}  # (layer, label) -> [per direction]
    ratios = {label: [] for label in others}  # label -> [(ratio, layer, direction)]
    for layer in layers:
        name = layer["name"]
        for label in labels:
            gflops[(name, label)] = [
                layer["flops"] / statistics.median(seconds[(name, d, label)]) * 1e-9
                for d in DIRECTIONS]
        for label in others:
            for d in DIRECTIONS:
                ratio = (statistics.median(seconds[(name, d, reference)])
                         / statistics.median(seconds[(name, d, label)]))
                ratios[label].append((ratio, name, d))

    def algorithms(name, label):
        return ", ".join(chosen.get((name, d, label), "?") for d in DIRECTIONS)

    print()
    if args.markdown:
        head = ["layer"]
        for label in labels:
            head += ["%s fwd" % label, "bwd data", "bwd filter"]
        for label in others:
            head += ["%s / %s fwd" % (label, reference), "bwd data", "bwd filter"]
        head += ["%s algorithms" % label for label in convoys]
        print("| " + " | ".join(head) + " |")
        print("| --- " + "| ---: " * (3 * (len(labels) + len(others))) +
              "| --- " * len(convoys) + "|")
        for i, layer in enumerate(layers):
            name = layer["name"]
            cells = [name]
            for label in labels:
                cells += ["%.1f" % v for v in gflops[(name, label)]]
            for label in others:
                cells += ["%.2f" % v for v, _, _ in ratios[label][3 * i:3 * i + 3]]
            cells += [algorithms(name, label) for label in convoys]
            print("| " + " | ".join(cells) + " |")
    else:
        line = "%-18s" % ""
        for label in labels:
            line += " %30s" % (label + " GFLOP/s")
        for label in others:
            line += " %22s" % (label + " / " + reference)
        print(line)
        line = "%-18s" % "layer"
        for label in labels:
            line += " %9s %9s %10s" % ("fwd", "bwd_data", "bwd_filter")
        for label in others:
            line += "   %6s %6s %6s" % ("fwd", "data", "filter")
        print(line)
        for i, layer in enumerate(layers):
            name = layer["name"]
            line = "%-18s" % name
            for label in labels:
                line += " %9.1f %9.1f %10.1f" % tuple(gflops[(name, label)])
            for label in others:
                line += "   %6.2f %6.2f %6.2f" % tuple(v for v, _, _ in
                                                    ratios[label][3 * i:3 * i + 3])
            line += "   " + "; ".join(algorithms(name, label) for label in convoys)
            print(line)
    print()
    for label in others:
        values = ratios[label]
        worst = min(values)
        print("%s / %s over %d layer-directions: geometric mean %.3f, minimum %.3f (%s %s)" % (
            label, reference, len(values), geomean([v for v, _, _ in values]), worst[0],
            worst[1], SHORT[worst[2]]))
    totals = {label: sum(statistics.median(seconds[(l["name"], d, label)])
                         for l in layers for d in DIRECTIONS) for label in labels}
    print("time of one call of every layer-direction: " + ", ".join(
        "%s %.1f ms" % (label, 1e3 * totals[label]) for label in labels))
    for label, convoy in convoys.items():
        drift = 100.0 * (sgemm_end[label] - convoy.sgemm_start) / convoy.sgemm_start
        print("sgemm 2048^3 (conv_bench of %s): %.1f GFLOP/s at the start, %.1f at the end "
              "(%+.0f%%)%s" % (label, convoy.sgemm_start, sgemm_end[label], drift,
                               ": the machine was busy, the ratios are unreliable"
                               if abs(drift) > 10 else ""))


if __name__ == "__main__":
    main()
