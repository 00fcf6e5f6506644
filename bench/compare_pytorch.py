#!/usr/bin/env python3
"""convoy against PyTorch on the convolution layer suite, side by side in one run.

For every layer of the suite (bench/conv_suite.txt) and each direction (forward,
gradient w.r.t. the input, gradient w.r.t. the filters) this times PyTorch's CPU
convolutions (torch.nn.functional.conv2d / conv3d, torch.nn.grad.conv2d_input /
conv2d_weight and their 3D forms) in this process, and convoy's through its
public API in build/bench/conv_bench, which runs as a server (--serve) for the
whole comparison: one convoy runtime, one PyTorch, the same thread count each.
The two are interleaved layer by layer, and each round swaps which goes first.
Every figure is the median of --runs calls after --warmup warm-up calls; with
several rounds, the median over the rounds.

It prints a table of GFLOP/s (2 * N * K * C/groups * kernel volume * output
positions per call, the same count for every direction, as conv_bench), the
ratio convoy / PyTorch per layer and direction, their geometric mean and the
minimum, and the drift of conv_bench's OpenBLAS sgemm baseline over the run
(a busy machine shows as drift).

convoy's options come from the environment as usual (CONVOY_ALGO=time_once,
CONVOY_EXCLUDE=...); CONVOY_BLAS_THREADS is set to --threads.

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
        call = self.calls[direction]
        with self.torch.no_grad():
            for _ in range(warmup):
                call()
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
        return statistics.median(times)


class Convoy:
    """conv_bench --serve: one convoy runtime answering one layer at a time."""

    def __init__(self, conv_bench, suite, runs, warmup, threads):
        env = dict(os.environ)
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

    def layer(self, name):
        """{direction: (seconds, implementation, algorithm)}"""
        result = {}
        for row in self._request("layer " + name):
            if row[0] == "conv":
                _, _, direction, impl, algorithm, ms = row[:6]
                result[direction] = (float(ms) * 1e-3, impl, algorithm)
        return result

    def sgemm(self):
        for row in self._request("sgemm"):
            if row[0] == "sgemm":
                return float(row[2])
        return float("nan")

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default="build", help="convoy build directory (build)")
    parser.add_argument("--suite", default="bench/conv_suite.txt")
    parser.add_argument("--threads", type=int, default=2, help="threads for each side (2)")
    parser.add_argument("--runs", type=int, default=7, help="timed calls per figure (7)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up calls per figure (2)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="passes over the suite; figures are medians over them (1)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("layers", nargs="*", help="layer names (default: the whole suite)")
    args = parser.parse_args()

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

    convoy = Convoy(conv_bench, args.suite, args.runs, args.warmup, args.threads)
    mkldnn = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    print("PyTorch %s (%d threads, oneDNN/mkldnn %s)" % (torch.__version__,
                                                         torch.get_num_threads(),
                                                         "on" if mkldnn else "off"))
    print("convoy: %s" % convoy.runtime)
    policy = os.environ.get("CONVOY_ALGO") or "heuristic"
    print("convoy policy %s; median of %d calls after %d warm-ups, %d round%s, interleaved"
          % (policy, args.runs, args.warmup, args.rounds, "" if args.rounds == 1 else "s"))
    sys.stdout.flush()

    seconds = {}  # (layer, direction, side) -> [seconds per round]
    chosen = {}  # (layer, direction) -> convoy's algorithm
    for r in range(args.rounds):
        for i, layer in enumerate(layers):
            name = layer["name"]
            ours_first = (r + i) % 2 == 1
            for side in (("convoy", "torch") if ours_first else ("torch", "convoy")):
                if side == "torch":
                    t = Torch(torch, layer)
                    for d in DIRECTIONS:
                        seconds.setdefault((name, d, "torch"), []).append(
                            t.time(d, args.runs, args.warmup))
                    del t
                else:
                    for d, (sec, impl, algorithm) in convoy.layer(name).items():
                        seconds.setdefault((name, d, "convoy"), []).append(sec)
                        chosen[(name, d)] = algorithm if algorithm == impl else \
                            "%s:%s" % (impl, algorithm)
            print("  round %d: %s" % (r + 1, name), file=sys.stderr)
    sgemm_end = convoy.sgemm()
    convoy.close()

    ratios = []
    rows = []
    for layer in layers:
        name = layer["name"]
        row = {"layer": name, "torch": [], "convoy": [], "ratio": [], "algo": []}
        for d in DIRECTIONS:
            ts = statistics.median(seconds[(name, d, "torch")])
            cs = statistics.median(seconds[(name, d, "convoy")])
            row["torch"].append(layer["flops"] / ts * 1e-9)
            row["convoy"].append(layer["flops"] / cs * 1e-9)
            row["ratio"].append(ts / cs)
            row["algo"].append(chosen.get((name, d), "?"))
            ratios.append((ts / cs, name, d))
        rows.append(row)

    geomean = math.exp(sum(math.log(r) for r, _, _ in ratios) / len(ratios))
    worst = min(ratios)
    if args.markdown:
        print()
        print("| layer | PyTorch fwd | bwd data | bwd filter | convoy fwd | bwd data | "
              "bwd filter | ratio fwd | bwd data | bwd filter | convoy algorithms |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for row in rows:
            print("| %s | %s | %s | %s | %s |" % (
                row["layer"], " | ".join("%.1f" % v for v in row["torch"]),
                " | ".join("%.1f" % v for v in row["convoy"]),
                " | ".join("%.2f" % v for v in row["ratio"]), ", ".join(row["algo"])))
    else:
        print()
        print("%-18s %27s   %27s   %20s   %s" % ("", "PyTorch GFLOP/s", "convoy GFLOP/s",
                                                 "convoy / PyTorch", "convoy algorithms"))
        print("%-18s %8s %9s %9s   %8s %9s %9s   %6s %6s %6s" % (
            "layer", "fwd", "bwd_data", "bwd_filt", "fwd", "bwd_data", "bwd_filt",
            "fwd", "data", "filt"))
        for row in rows:
            print("%-18s %8.1f %9.1f %9.1f   %8.1f %9.1f %9.1f   %6.2f %6.2f %6.2f   %s" % (
                row["layer"], *row["torch"], *row["convoy"], *row["ratio"],
                ", ".join(row["algo"])))
    print()
    print("geometric mean of convoy / PyTorch over %d layer-directions: %.3f" % (len(ratios),
                                                                               geomean))
    print("minimum: %.3f (%s %s)" % (worst[0], worst[1], SHORT[worst[2]]))
    drift = 100.0 * (sgemm_end - convoy.sgemm_start) / convoy.sgemm_start
    print("sgemm 2048^3 (conv_bench): %.1f GFLOP/s at the start, %.1f at the end (%+.0f%%)%s" % (
        convoy.sgemm_start, sgemm_end, drift,
        ": the machine was busy, the ratios are unreliable" if abs(drift) > 10 else ""))


if __name__ == "__main__":
    main()
