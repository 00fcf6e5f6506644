#!/usr/bin/env python3
"""The PyTorch twin of examples/train_fashion_mnist.c, for a side-by-side check.

Same network (3x3 conv 16, 3x3 stride-2 conv 32, 3x3 stride-2 conv 64, each with ReLU, then
a 7x7 valid conv to the 10 classes), same input scaling, same mini-batch order (the C
program's splitmix64 Fisher-Yates shuffle, reimplemented below), same SGD with momentum and
weight decay, starting from the weights the C program exported with --export-weights.

It prints the losses of the first steps of both programs side by side (the C program's from
its --loss-log file), then each epoch's train loss, test accuracy and time for both. Run by
`make demo-compare`, which installs python3-torch first; the library never depends on it.
"""

import argparse
import gzip
import os
import struct
import sys
import time

import torch
import torch.nn.functional as F

MASK64 = (1 << 64) - 1
# Fashion-MNIST's pixel mean and standard deviation over the training set, after / 255.
PIXEL_MEAN = 0.2860
PIXEL_STD = 0.3530
WEIGHTS_MAGIC = b"CVYW0001"


class SplitMix64:
    """The C program's generator: splitmix64, seeded as in train_fashion_mnist.c."""

    def __init__(self, seed):
        self.state = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


def shuffled(count, rng):
    """Fisher-Yates over 0..count-1, as the C program does at the start of every epoch."""
    order = list(range(count))
    for i in range(count - 1, 0, -1):
        j = rng.next() % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def read_idx(path, magic, item_dims):
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 8 + 4 * len(item_dims):
        sys.exit(f"{path}: truncated IDX header")
    got_magic, count = struct.unpack(">II", data[:8])
    if got_magic != magic:
        sys.exit(f"{path}: magic 0x{got_magic:08x}, expected 0x{magic:08x}")
    dims = struct.unpack(">" + "I" * len(item_dims), data[8 : 8 + 4 * len(item_dims)])
    offset = 8 + 4 * len(item_dims)
    size = count
    for d in dims:
        size *= d
    if len(data) - offset < size:
        sys.exit(f"{path}: truncated: {len(data) - offset} bytes of data, expected {size}")
    return torch.frombuffer(bytearray(data[offset : offset + size]), dtype=torch.uint8).reshape(
        (count,) + tuple(dims)
    )


def load_split(directory, prefix):
    images = read_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), 0x803, (28, 28))
    labels = read_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), 0x801, ())
    # The C program's float32 arithmetic, step for step: p / 255, then (x - mean) / std.
    x = images.to(torch.float32).unsqueeze(1) / torch.tensor(255.0, dtype=torch.float32)
    x = (x - torch.tensor(PIXEL_MEAN, dtype=torch.float32)) / torch.tensor(
        PIXEL_STD, dtype=torch.float32
    )
    return x.contiguous(), labels.to(torch.int64)


def read_weights(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != WEIGHTS_MAGIC:
        sys.exit(f"{path}: not a weights file written by --export-weights")
    (count,) = struct.unpack_from("<I", data, 8)
    offset = 12
    tensors = []
    for _ in range(count):
        (ndim,) = struct.unpack_from("<I", data, offset)
        offset += 4
        dims = struct.unpack_from("<" + "q" * ndim, data, offset)
        offset += 8 * ndim
        numel = 1
        for d in dims:
            numel *= d
        values = torch.frombuffer(bytearray(data[offset : offset + 4 * numel]), dtype=torch.float32)
        offset += 4 * numel
        tensors.append(values.reshape(dims).clone())
    return tensors


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv3 = torch.nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.classifier = torch.nn.Conv2d(64, 10, 7)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return self.classifier(x).flatten(1)

    def layers(self):
        return [self.conv1, self.conv2, self.conv3, self.classifier]


def read_convoy_log(path):
    """Step losses and epoch lines of the C program's --loss-log file."""
    steps, epochs = [], []
    if not path:
        return steps, epochs
    with open(path) as f:
        for line in f:
            words = line.split()
            if words and words[0] == "step":
                steps.append(float(words[2]))
            elif words and words[0] == "epoch":
                fields = dict(zip(words[2::2], words[3::2]))
                epochs.append(fields)
    return steps, epochs


def step_lr(args, step, total_steps):
    """The C program's learning rate at a step, computed in float32 as it does."""
    if args.schedule == "constant":
        return args.lr
    lr = torch.tensor(args.lr, dtype=torch.float32)
    left = torch.tensor(float(total_steps - step) / float(total_steps), dtype=torch.float32)
    return float(lr * left)


def evaluate(net, x, y, batch):
    correct = 0
    with torch.no_grad():
        for start in range(0, x.shape[0], batch):
            logits = net(x[start : start + batch])
            correct += int((logits.argmax(1) == y[start : start + batch]).sum())
    return correct / x.shape[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--weights", help="initial weights from train_fashion_mnist --export-weights")
    parser.add_argument("--convoy-log", help="the C program's --loss-log file, for the comparison")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--schedule",
        choices=["constant", "linear"],
        default="linear",
        help="learning rate: constant, or decayed linearly to 0 over the run (per step)",
    )
    parser.add_argument("--limit", type=int, default=0, help="train on the first N images only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="first steps to print side by side")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_x, train_y = load_split(args.data, "train")
    test_x, test_y = load_split(args.data, "t10k")
    count = train_x.shape[0] if args.limit <= 0 else min(args.limit, train_x.shape[0])

    net = Net()
    if args.weights:
        tensors = read_weights(args.weights)
        with torch.no_grad():
            for i, layer in enumerate(net.layers()):
                layer.weight.copy_(tensors[2 * i])
                layer.bias.copy_(tensors[2 * i + 1])
    else:
        # The C program's initialisation, from torch's generator: He normal, zero biases.
        with torch.no_grad():
            for layer in net.layers():
                torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                layer.bias.zero_()
    optimizer = torch.optim.SGD(
        net.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )
    convoy_steps, convoy_epochs = read_convoy_log(args.convoy_log)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, "
        f"lr {args.lr}, momentum {args.momentum}, weight decay {args.weight_decay}, "
        f"seed {args.seed}, {count} training images"
    )
    rng = SplitMix64(args.seed + 1)
    batches = count // args.batch
    step = 0
    torch_epochs = []
    largest = 0.0
    if convoy_steps:
        print(f"{'step':>5} {'convoy loss':>12} {'torch loss':>12} {'difference':>11}")
    for epoch in range(args.epochs):
        order = torch.tensor(shuffled(count, rng), dtype=torch.int64)
        start = time.monotonic()
        total = 0.0
        for b in range(batches):
            for group in optimizer.param_groups:
                group["lr"] = step_lr(args, step, args.epochs * batches)
            index = order[b * args.batch : (b + 1) * args.batch]
            logits = net(train_x[index])
            loss = F.cross_entropy(logits, train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            value = float(loss)
            total += value
            if step < args.steps and step < len(convoy_steps):
                c = convoy_steps[step]
                largest = max(largest, abs(c - value))
                print(f"{step:5d} {c:12.6f} {value:12.6f} {abs(c - value):11.2e}")
            elif step < args.steps and not convoy_steps:
                print(f"step {step:5d} torch loss {value:.6f}")
            step += 1
        seconds = time.monotonic() - start
        accuracy = evaluate(net, test_x, test_y, 1000)
        torch_epochs.append((total / max(batches, 1), accuracy, seconds))

    print(f"{'epoch':>5} {'':8} {'train loss':>10} {'test acc':>9} {'seconds':>8} {'images/s':>9}")
    for e, (loss, accuracy, seconds) in enumerate(torch_epochs):
        if e < len(convoy_epochs):
            c = convoy_epochs[e]
            print(
                f"{e + 1:5d} {'convoy':8} {float(c['train_loss']):10.4f} "
                f"{100 * float(c['test_accuracy']):8.2f}% {float(c['seconds']):8.1f} "
                f"{float(c['images_per_second']):9.0f}"
            )
        print(
            f"{e + 1:5d} {'torch':8} {loss:10.4f} {100 * accuracy:8.2f}% {seconds:8.1f} "
            f"{batches * args.batch / seconds:9.0f}"
        )
    if convoy_steps:
        shown = min(args.steps, len(convoy_steps))
        print(f"first {shown} steps: largest loss difference {largest:.2e}")
    if convoy_epochs and torch_epochs:
        c = 100 * float(convoy_epochs[-1]["test_accuracy"])
        t = 100 * torch_epochs[-1][1]
        print(f"final test accuracy: convoy {c:.2f}%, torch {t:.2f}% ({abs(c - t):.2f} points apart)")


if __name__ == "__main__":
    main()
