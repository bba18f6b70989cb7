"""Whole networks (--networks): ResNet-50 and MobileNetV2 forward passes, four ways.

The networks have random weights (a fixed seed) and BatchNorm in inference form. The same
network runs as

* ``conv2d NCHW|NHWC``: every convolution an ``im2row.conv2d`` call (BatchNorm folded into its
  weights and bias), the rest NumPy glue (ReLU/ReLU6, residual adds, max and average pooling,
  the final linear layer);
* ``plan NCHW|NHWC``: the same with an ``im2row.Conv2d`` plan per convolution, built once, the
  ReLU fused into the plan (ReLU6 as a fused ReLU, then a NumPy minimum);
* ``torch F NCHW|channels_last``: the same NumPy glue with ``torch.nn.functional.conv2d`` as
  the convolution (the folded weights; no copies between NumPy and PyTorch);
* ``torch.nn NCHW|channels_last``: the network as torch.nn modules (Conv2d, BatchNorm2d
  unfolded, ReLU, MaxPool2d, ...), eval mode, no_grad.

All variants' logits must agree (relative to the logits' scale); each variant's time per
forward pass is the median over interleaved rounds, like the layer suite's. The architectures
follow torchvision (ResNet-50 v1.5: the stride on the 3x3; MobileNetV2 1.0); ``width`` scales
every channel count (for tests).
"""
import math
from dataclasses import dataclass, field

import numpy as np

import im2row
from timing import median, run_rounds

BN_EPS = 1e-5
LOGIT_TOLERANCE = 1e-3          # max |logits - reference| / max |reference|
CLASSES = 1000
NETWORK_NAMES = ("resnet50", "mobilenet_v2")


# --- the networks' parameters -------------------------------------------------------------------

@dataclass
class ConvBN:
    """A bias-free convolution, its BatchNorm (inference: running statistics) and activation
    ("relu", "relu6" or None). ``weight`` is (OC, C/groups, K, K) float32."""
    index: int
    c: int
    oc: int
    k: int
    stride: int
    padding: int
    groups: int
    act: object
    weight: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray

    def folded(self):
        """(weight, bias) of the same affine map with the BatchNorm folded in: weight *
        gamma / sqrt(var + eps) per output channel, bias = beta - mean * that scale."""
        scale = self.gamma.astype(np.float64) / np.sqrt(self.var.astype(np.float64) + BN_EPS)
        weight = (self.weight * scale[:, None, None, None]).astype(np.float32)
        bias = (self.beta - self.mean * scale).astype(np.float32)
        return weight, bias

    def conv_kwargs(self):
        return dict(stride=self.stride, padding=self.padding, groups=self.groups)

    def out_hw(self, h, w):
        return tuple((size + 2 * self.padding - self.k) // self.stride + 1 for size in (h, w))

    def flops(self, n, h, w):
        """FLOPs on an (n, C, h, w) input."""
        oh, ow = self.out_hw(h, w)
        return 2 * n * self.oc * oh * ow * (self.c // self.groups) * self.k * self.k


@dataclass
class Block:
    """convs in sequence; then, if ``residual``, the block's input (through ``shortcut`` if
    given) is added and ``post_act`` applied."""
    convs: list
    residual: bool = False
    shortcut: object = None
    post_act: object = None


@dataclass
class Network:
    name: str
    stem: ConvBN
    stem_pool: bool               # a 3x3 stride-2 max pool after the stem
    blocks: list
    head: list                    # convolutions after the blocks
    fc_weight: np.ndarray         # (CLASSES, features)
    fc_bias: np.ndarray
    convs: list = field(default_factory=list)

    def conv_inputs(self, size):
        """(conv, H, W) of every convolution, in order, for a size x size input."""
        h = w = size
        yield self.stem, h, w
        h, w = self.stem.out_hw(h, w)
        if self.stem_pool:
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        for block in self.blocks:
            if block.shortcut is not None:
                yield block.shortcut, h, w
            for conv in block.convs:
                yield conv, h, w
                h, w = conv.out_hw(h, w)
        for conv in self.head:
            yield conv, h, w
            h, w = conv.out_hw(h, w)

    def conv_flops(self, n, size):
        """FLOPs of every convolution for an n x 3 x size x size input."""
        return sum(conv.flops(n, h, w) for conv, h, w in self.conv_inputs(size))


class _Maker:
    """Random parameters with a fixed seed: He-normal weights, BatchNorm near identity."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.convs = []

    def conv(self, c, oc, k, stride=1, groups=1, act="relu", gamma=(0.5, 1.5)):
        rng = self.rng
        fan_in = c // groups * k * k
        weight = rng.standard_normal((oc, c // groups, k, k), dtype=np.float32)
        weight *= np.float32(math.sqrt(2.0 / fan_in))
        conv = ConvBN(len(self.convs), c, oc, k, stride, k // 2, groups, act, weight,
                      rng.uniform(*gamma, oc).astype(np.float32),
                      (0.1 * rng.standard_normal(oc)).astype(np.float32),
                      (0.1 * rng.standard_normal(oc)).astype(np.float32),
                      rng.uniform(0.5, 1.5, oc).astype(np.float32))
        self.convs.append(conv)
        return conv

    def fc(self, features):
        weight = self.rng.standard_normal((CLASSES, features), dtype=np.float32)
        weight *= np.float32(1 / math.sqrt(features))
        return weight, (0.01 * self.rng.standard_normal(CLASSES)).astype(np.float32)


def _channels(c, width):
    return max(8, int(round(c * width / 8)) * 8) if width != 1 else c


def resnet50(width=1.0, seed=0):
    """ResNet-50 v1.5 (torchvision): 7x7 stem + max pool, [3, 4, 6, 3] bottlenecks. The last
    BatchNorm of each block has a small gamma so the residual sum stays in range."""
    m = _Maker(seed)
    stem_c = _channels(64, width)
    stem = m.conv(3, stem_c, 7, stride=2)
    blocks, c = [], stem_c
    for planes, count, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        planes = _channels(planes, width)
        for b in range(count):
            s = stride if b == 0 else 1
            convs = [m.conv(c, planes, 1), m.conv(planes, planes, 3, stride=s),
                     m.conv(planes, planes * 4, 1, act=None, gamma=(0.1, 0.3))]
            shortcut = (m.conv(c, planes * 4, 1, stride=s, act=None)
                        if b == 0 else None)
            blocks.append(Block(convs, residual=True, shortcut=shortcut, post_act="relu"))
            c = planes * 4
    fc_weight, fc_bias = m.fc(c)
    return Network("resnet50", stem, True, blocks, [], fc_weight, fc_bias, m.convs)


def mobilenet_v2(width=1.0, seed=0):
    """MobileNetV2 1.0 (torchvision): 3x3 stem, inverted residuals (1x1 expansion with ReLU6,
    depthwise 3x3 with ReLU6, linear 1x1 projection; a residual add when the shape stays),
    a 1x1 head to 1280 with ReLU6, average pool, linear."""
    m = _Maker(seed)
    c = _channels(32, width)
    stem = m.conv(3, c, 3, stride=2, act="relu6")
    blocks = []
    for t, oc, count, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                 (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        oc = _channels(oc, width)
        for b in range(count):
            s = stride if b == 0 else 1
            hidden = c * t
            convs = [m.conv(c, hidden, 1, act="relu6")] if t != 1 else []
            convs += [m.conv(hidden, hidden, 3, stride=s, groups=hidden, act="relu6"),
                      m.conv(hidden, oc, 1, act=None, gamma=(0.1, 0.3))]
            blocks.append(Block(convs, residual=(s == 1 and c == oc)))
            c = oc
    head_c = _channels(1280, width)
    head = [m.conv(c, head_c, 1, act="relu6")]
    fc_weight, fc_bias = m.fc(head_c)
    return Network("mobilenet_v2", stem, False, blocks, head, fc_weight, fc_bias, m.convs)


BUILDERS = {"resnet50": resnet50, "mobilenet_v2": mobilenet_v2}


# --- the forward pass and its NumPy glue ---------------------------------------------------------

class Glue:
    """The non-convolution layers in NumPy, for one layout (arrays in that layout; in-place
    where the input is a fresh intermediate)."""

    def __init__(self, layout):
        self.layout = layout
        self.spatial = (2, 3) if layout == "NCHW" else (1, 2)

    @staticmethod
    def relu(x):
        return np.maximum(x, 0, out=x)

    @staticmethod
    def relu6(x):
        return np.clip(x, 0, 6, out=x)

    @staticmethod
    def add(x, y):
        return np.add(x, y, out=x)

    def activation(self, x, act):
        return x if act is None else self.relu(x) if act == "relu" else self.relu6(x)

    def maxpool3x3s2(self, x):
        """3x3 max pool, stride 2, padding 1 (padding never wins: -inf)."""
        h_axis, w_axis = self.spatial
        h, w = x.shape[h_axis], x.shape[w_axis]
        oh, ow = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        pad = [(0, 0)] * 4
        pad[h_axis], pad[w_axis] = (1, 2 * oh - h), (1, 2 * ow - w)
        padded = np.pad(x, pad, constant_values=-np.inf)
        out = None
        for i in range(3):
            for j in range(3):
                index = [slice(None)] * 4
                index[h_axis] = slice(i, i + 2 * oh - 1, 2)
                index[w_axis] = slice(j, j + 2 * ow - 1, 2)
                window = padded[tuple(index)]
                out = window.copy() if out is None else np.maximum(out, window, out=out)
        return out

    def global_avgpool(self, x):
        """(N, C) means over the spatial axes."""
        return x.mean(axis=self.spatial, dtype=np.float32)

    @staticmethod
    def linear(x, weight, bias):
        return x @ weight.T + bias


def forward(net, x, conv, glue):
    """Logits (N, CLASSES) of ``net`` on ``x`` (in the glue's layout); ``conv(c, x)`` runs the
    ConvBN ``c`` with its activation."""
    x = conv(net.stem, x)
    if net.stem_pool:
        x = glue.maxpool3x3s2(x)
    for block in net.blocks:
        identity = x
        for c in block.convs:
            x = conv(c, x)
        if block.residual:
            if block.shortcut is not None:
                identity = conv(block.shortcut, identity)
            x = glue.activation(glue.add(x, identity), block.post_act)
    for c in net.head:
        x = conv(c, x)
    return glue.linear(glue.global_avgpool(x), net.fc_weight, net.fc_bias)


def hwio(weight):
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


class Im2rowCalls:
    """conv(c, x) = im2row.conv2d on the folded weights, then the activation in NumPy."""

    def __init__(self, net, layout, threads, allow_winograd=False):
        self.layout, self.threads, self.glue = layout, threads, Glue(layout)
        self.allow_winograd = allow_winograd
        self.params = {}
        for c in net.convs:
            weight, bias = c.folded()
            self.params[c.index] = (weight if layout == "NCHW" else hwio(weight), bias)

    def __call__(self, c, x):
        weight, bias = self.params[c.index]
        y = im2row.conv2d(x, weight, bias, layout=self.layout, num_threads=self.threads,
                          allow_winograd=self.allow_winograd, **c.conv_kwargs())
        return self.glue.activation(y, c.act)


class Im2rowPlans:
    """conv(c, x) = a prepared im2row.Conv2d plan, ReLU fused (ReLU6: fused ReLU, then min)."""

    def __init__(self, net, layout, threads, allow_winograd=False):
        self.threads, self.glue, self.plans, self.relu6 = threads, Glue(layout), {}, set()
        for c in net.convs:
            weight, bias = c.folded()
            self.plans[c.index] = im2row.Conv2d(
                weight if layout == "NCHW" else hwio(weight), bias, layout=layout,
                activation="relu" if c.act else None, allow_winograd=allow_winograd,
                **c.conv_kwargs())
            if c.act == "relu6":
                self.relu6.add(c.index)

    def __call__(self, c, x):
        y = self.plans[c.index](x, num_threads=self.threads)
        return np.minimum(y, 6, out=y) if c.index in self.relu6 else y


class TorchFunctional:
    """conv(c, x) = torch.nn.functional.conv2d on the folded weights, NumPy arrays in and out
    without copies (an NHWC array is a channels_last tensor); the activation in NumPy."""

    def __init__(self, torch, net, layout):
        self.torch, self.layout, self.glue = torch, layout, Glue(layout)
        self.conv2d = torch.nn.functional.conv2d
        self.params = {}
        for c in net.convs:
            weight, bias = (torch.from_numpy(a) for a in c.folded())
            if layout == "NHWC":
                weight = weight.contiguous(memory_format=torch.channels_last)
            self.params[c.index] = (weight, bias)

    def __call__(self, c, x):
        weight, bias = self.params[c.index]
        t = self.torch.from_numpy(x)
        if self.layout == "NHWC":
            y = self.conv2d(t.permute(0, 3, 1, 2), weight, bias, **c.conv_kwargs())
            y = y.permute(0, 2, 3, 1).numpy()
        else:
            y = self.conv2d(t, weight, bias, **c.conv_kwargs()).numpy()
        return self.glue.activation(y, c.act)


def torch_module(torch, net):
    """The network as torch.nn modules with the same parameters, BatchNorm unfolded, eval."""
    nn = torch.nn

    def conv_bn(c):
        conv = nn.Conv2d(c.c, c.oc, c.k, stride=c.stride, padding=c.padding, groups=c.groups,
                         bias=False)
        bn = nn.BatchNorm2d(c.oc, eps=BN_EPS)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(c.weight))
            bn.weight.copy_(torch.from_numpy(c.gamma))
            bn.bias.copy_(torch.from_numpy(c.beta))
            bn.running_mean.copy_(torch.from_numpy(c.mean))
            bn.running_var.copy_(torch.from_numpy(c.var))
        layers = [conv, bn]
        if c.act == "relu":
            layers.append(nn.ReLU(inplace=True))
        elif c.act == "relu6":
            layers.append(nn.ReLU6(inplace=True))
        return nn.Sequential(*layers)

    class Residual(nn.Module):
        def __init__(self, block):
            super().__init__()
            self.body = nn.Sequential(*map(conv_bn, block.convs))
            self.shortcut = conv_bn(block.shortcut) if block.shortcut is not None else None
            self.residual, self.post_relu = block.residual, block.post_act == "relu"

        def forward(self, x):
            y = self.body(x)
            if not self.residual:
                return y
            y = y + (self.shortcut(x) if self.shortcut is not None else x)
            return torch.relu(y) if self.post_relu else y

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            layers = [conv_bn(net.stem)]
            if net.stem_pool:
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
            layers += [Residual(b) for b in net.blocks] + [conv_bn(c) for c in net.head]
            self.features = nn.Sequential(*layers)
            self.fc = nn.Linear(net.fc_weight.shape[1], CLASSES)
            with torch.no_grad():
                self.fc.weight.copy_(torch.from_numpy(net.fc_weight))
                self.fc.bias.copy_(torch.from_numpy(net.fc_bias))

        def forward(self, x):
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(
                self.features(x), 1), 1))

    return Model().eval()


# --- the variants ---------------------------------------------------------------------------------

def variants(net, x_nchw, threads, torch=None, winograd=False):
    """{name: (kind, layout, fn)}: each fn() runs one forward pass and returns the logits as
    a NumPy array. Everything is prepared here (plans built, weights folded). winograd: also
    "conv2d+winograd NHWC" and "plan+winograd NCHW|NHWC" (kind "winograd"), where
    allow_winograd=True lets the planner run Winograd on the 3x3 stride-1 layers."""
    x_nhwc = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
    inputs = {"NCHW": x_nchw, "NHWC": x_nhwc}
    out = {}
    for layout in ("NCHW", "NHWC"):
        calls = Im2rowCalls(net, layout, threads)
        out[f"conv2d {layout}"] = ("conv2d", layout, _forward_fn(net, inputs[layout], calls))
    for layout in ("NCHW", "NHWC"):
        plans = Im2rowPlans(net, layout, threads)
        out[f"plan {layout}"] = ("plan", layout, _forward_fn(net, inputs[layout], plans))
    if winograd:
        calls = Im2rowCalls(net, "NHWC", threads, allow_winograd=True)
        out["conv2d+winograd NHWC"] = ("winograd", "NHWC",
                                       _forward_fn(net, inputs["NHWC"], calls))
        for layout in ("NCHW", "NHWC"):
            plans = Im2rowPlans(net, layout, threads, allow_winograd=True)
            out[f"plan+winograd {layout}"] = ("winograd", layout,
                                              _forward_fn(net, inputs[layout], plans))
    if torch is None:
        return out
    for layout, fmt in (("NCHW", "NCHW"), ("NHWC", "channels_last")):
        functional = TorchFunctional(torch, net, layout)
        out[f"torch F {fmt}"] = ("torch_functional", layout,
                                 _forward_fn(net, inputs[layout], functional))
    model = torch_module(torch, net)
    model_cl = torch_module(torch, net).to(memory_format=torch.channels_last)
    x_t = torch.from_numpy(x_nchw)
    x_cl = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2)
    out["torch.nn NCHW"] = ("torch_nn", "NCHW", lambda: model(x_t).numpy())
    out["torch.nn channels_last"] = ("torch_nn", "NHWC", lambda: model_cl(x_cl).numpy())
    return out


def _forward_fn(net, x, conv):
    return lambda: forward(net, x, conv, conv.glue)


def logit_error(logits, reference):
    """max |logits - reference| / max |reference|."""
    scale = max(float(np.abs(reference).max()), 1e-30)
    return float(np.abs(logits.astype(np.float64) - reference).max()) / scale


def network_input(n, size, seed=0):
    return np.random.default_rng(seed + 1).standard_normal((n, 3, size, size),
                                                           dtype=np.float32)


def run_networks(names, batches, thread_counts, rounds, control, progress, torch=None, *,
                 size=224, width=1.0, budget=None, not_run=None):
    """One record per (network, batch size, thread count), a generator. Variants run
    interleaved in ``rounds`` rounds (one forward pass each per round); the first pass of each
    is checked against the reference (torch.nn NCHW, or the first variant without torch)."""
    not_run = [] if not_run is None else not_run
    for name in names:
        net = BUILDERS[name](width=width)
        for n in batches:
            x = network_input(n, size)
            for threads in sorted(thread_counts, reverse=True):
                label = f"{name} N={n} threads={threads}"
                if budget and budget.expired:
                    not_run.append({"study": "networks", "label": name, "n": n,
                                    "threads": threads, "reason": "the time budget was spent"})
                    progress.end()
                    continue
                progress.begin(f"network {label}")
                with control.use(threads):
                    record = time_network(net, x, threads, rounds, progress, torch, size)
                progress.end()
                if budget:
                    budget.case_done()
                yield record


def time_network(net, x, threads, rounds, progress, torch, size, winograd=False):
    n = x.shape[0]
    record = {"study": "networks", "label": net.name, "n": n, "threads": threads,
              "size": size, "flops": net.conv_flops(n, size), "rounds": rounds,
              "reference": None, "variants": {}}
    runs = variants(net, x, threads, torch, winograd)
    logits = {}
    for name, (kind, layout, fn) in runs.items():
        entry = record["variants"][name] = {"kind": kind, "layout": layout, "times_s": [],
                                            "median_s": None, "logit_error": None,
                                            "skipped": None}
        try:
            logits[name] = np.asarray(fn(), dtype=np.float64)
        except Exception as exc:    # one broken variant must not stop the others
            entry["skipped"] = f"error: {type(exc).__name__}: {exc}"
    reference = "torch.nn NCHW" if "torch.nn NCHW" in logits else next(iter(logits), None)
    record["reference"] = reference
    for name, value in logits.items():
        error = logit_error(value, logits[reference])
        record["variants"][name]["logit_error"] = error
        if error > LOGIT_TOLERANCE:
            progress.note(f"  {net.name}: {name} gives DIFFERENT logits (relative error "
                          f"{error:.1e} against {reference})")
    samplers = {name: (runs[name][2], 1) for name in logits}
    times = run_rounds(samplers, rounds, on_round=lambda r: progress.round(r, rounds))
    for name, series in times.items():
        record["variants"][name]["times_s"] = series
        record["variants"][name]["median_s"] = median(series)
    return record


# --- ratios ---------------------------------------------------------------------------------------

def best_time(record, kind):
    times = [v["median_s"] for v in record["variants"].values()
             if v["kind"] == kind and v["median_s"]]
    return min(times) if times else None


def network_ratios(record):
    """{variant: (vs the faster torch F layout, vs the faster torch.nn layout)} for im2row's
    variants: the torch time / im2row's (> 1: im2row faster); None where not measured."""
    functional, modules = best_time(record, "torch_functional"), best_time(record, "torch_nn")
    ratios = {}
    for name, v in record["variants"].items():
        if v["kind"] in ("conv2d", "plan"):
            t = v["median_s"]
            ratios[name] = (functional / t if t and functional else None,
                            modules / t if t and modules else None)
    return ratios
