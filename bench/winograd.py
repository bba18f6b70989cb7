"""Winograd (method="winograd") against the peers, with its error beside its time.

    python bench/winograd.py                 # every 3x3 stride-1 layer of the suite, N=1 and 8,
                                             # 1 and 2 threads, then ResNet-50 (N=1)
    python bench/winograd.py --quick         # the target layers at N=1, ResNet-50 once
    python bench/winograd.py --layers rn50_l1_3x3_64_56 --threads 1
    python bench/winograd.py --smoke         # tiny layers and a narrow ResNet-50, seconds

Layers: the network suite's (bench/layers.py) 3x3 stride-1 undilated ungrouped convolutions.
Contenders, timed in the same interleaved rounds (bench/studies.py time_case): Winograd plans
in both layouts and the one-shot ``conv2d(method="winograd")`` (NHWC), the exact "auto" plan
(NHWC), PyTorch in both memory formats and ONNX Runtime. GFLOP/s count the direct
convolution's 2*N*OC*OH*OW*C*9 flops (an "effective" rate: Winograd does fewer), % of the FMA
peak measured in this run. Error: of each tile size on the whole N=1 output, max and RMS of
|result - float64 reference| over max |reference|, unit-normal input, weights scaled by
1/sqrt(fan-in). Targets (issue 11): >= 1.6x the fastest peer on the layers with C, OC >= 64 on
maps >= 14x14, 1 and 2 threads, N=1 and 8; ResNet-50 with Winograd on its 3x3 stride-1 layers
>= 1.3x the same network with PyTorch's convolutions.
"""
import os
import sys

if __name__ == "__main__":
    for variable in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        os.environ.pop(variable, None)   # before numpy loads OpenBLAS
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse  # noqa: E402

import numpy as np  # noqa: E402

import fma  # noqa: E402
import im2row  # noqa: E402
import layers as layer_defs  # noqa: E402
import networks  # noqa: E402
from contenders import (Case, Im2rowContender, ThreadControl, load_onnxruntime,  # noqa: E402
                        load_torch, onnx_contenders, torch_contenders)
from machine import cpu_flags, describe_machine  # noqa: E402
from report import fmt_bytes  # noqa: E402
from studies import time_case  # noqa: E402
from timing import Progress, TimingOptions  # noqa: E402

WINOGRAD = ("plan winograd NHWC", "plan winograd NCHW", "conv2d winograd NHWC")
EXACT = "plan NHWC"
PEERS = ("torch NCHW", "torch channels_last", "onnxruntime NCHW")
MAX_CASE_GFLOP = 16
SMOKE_SPECS = ("tiny3x3:16,12,16,3x3,1,1", "tiny3x3_odd:17,9,33,3x3,1,1")


def winograd_layers(names=None):
    layers = [layer for layer in layer_defs.NETWORK_SUITE
              if (layer.kh, layer.kw, layer.stride, layer.dilation, layer.groups) ==
              (3, 3, (1, 1), (1, 1), 1)]
    if names:
        layers = layer_defs.select_layers(layers, names)
    return layers


def is_target(layer):
    """The layers issue 11's 1.6x target is about: C, OC >= 64 on maps of 14x14 or more."""
    oh, ow = layer.out_hw
    return layer.c >= 64 and layer.oc >= 64 and min(oh, ow) >= 14


def winograd_error(layer, tile, seed=0):
    """(max, RMS) of |F(tile) - float64| / max |float64| on the layer's N=1 output."""
    case = Case(layer, 1, seed=seed)
    x, w = case.x("NHWC"), case.weight("NHWC")
    kw = dict(layer.conv_kwargs(), layout="NHWC")
    ref = im2row.conv2d(x.astype(np.float64), w.astype(np.float64),
                        case.bias.astype(np.float64), method="blocked", **kw)
    got = im2row.conv2d(x, w, case.bias, method=f"winograd{tile}", **kw)
    err = np.abs(got.astype(np.float64) - ref)
    scale = np.abs(ref).max()
    return float(err.max() / scale), float(np.sqrt(np.mean(err ** 2)) / scale)


def geomean(values):
    return float(np.exp(np.mean(np.log(values)))) if values else None


def layer_table(layers, n, threads, contenders, options, progress, peak, errors):
    """Prints the table of one (N, threads); returns {contender: [ratio on target layers]}."""
    print(f"## {n} image(s), {threads} thread(s)\n")
    names = WINOGRAD + (EXACT,) + PEERS
    print("| layer | tile | " + " | ".join(f"{c} ms" for c in names) +
          " | GFLOP/s | % peak | vs fastest peer | max err | RMS err | workspace |")
    print("|---|---:|" + "---:|" * (len(names) + 6))
    ratios = {c: [] for c in WINOGRAD + (EXACT,)}
    for layer in layers:
        if layer.flops(n) > MAX_CASE_GFLOP * 1e9:
            print(f"| {layer.name} | (over {MAX_CASE_GFLOP} GFLOP at N={n}: not run) |")
            continue
        case = Case(layer, n)
        block = time_case(case, threads, contenders, options, progress, study="winograd",
                          label=f"{layer.name} N={n} {threads}t")
        med = {k: e["median_s"] for k, e in block["contenders"].items()}
        peer = min((med[p] for p in PEERS if med.get(p)), default=None)
        ours = [med[c] for c in WINOGRAD if med.get(c)]
        best = min(ours) if ours else None
        ws = im2row.workspace_bytes(layer.input_shape(n, "NHWC"), layer.weight_shape("NHWC"),
                                    layout="NHWC", method="winograd", num_threads=threads,
                                    **layer.conv_kwargs())
        tile = int(ws["method"][-1])
        cells = [f"{med[c] * 1e3:.2f}" if med.get(c) else "-" for c in names]
        rate = block["flops"] / best / 1e9 if best else None
        cells += [f"{rate:.0f}" if rate else "-",
                  f"{100 * rate / peak:.0f}%" if rate and peak else "-",
                  f"{peer / best:.2f}" if best and peer else "-"]
        cells += [f"{e:.1e}" for e in errors[(layer.name, tile)]]
        cells.append(fmt_bytes(ws["workspace"]))
        print(f"| {layer.name} | {tile} | " + " | ".join(cells) + " |")
        for c in ratios:
            if is_target(layer) and peer and med.get(c):
                ratios[c].append(peer / med[c])
    print()
    return ratios


def network_table(n, threads, rounds, progress, torch, size, width=1.0):
    net = networks.resnet50(width=width)
    x = networks.network_input(n, size)
    record = networks.time_network(net, x, threads, rounds, progress, torch, size,
                                   winograd=True)
    progress.end()
    v = record["variants"]
    functional = min((e["median_s"] for e in v.values() if e["kind"] == "torch_functional"
                      and e["median_s"]), default=None)
    modules = min((e["median_s"] for e in v.values() if e["kind"] == "torch_nn"
                   and e["median_s"]), default=None)
    print(f"## ResNet-50, N={n}, {size}x{size}, {threads} thread(s), {rounds} rounds "
          f"(logits against {record['reference']})\n")
    print("| variant | ms | vs torch F | vs torch.nn | logit error |")
    print("|---|---:|---:|---:|---:|")
    for name, e in v.items():
        t = e["median_s"]
        if not t:
            print(f"| {name} | {e['skipped'] or '-'} | | | |")
            continue
        err = e["logit_error"]
        vs = [f"{ref / t:.2f}" if ref else "-" for ref in (functional, modules)]
        print(f"| {name} | {t * 1e3:.1f} | {vs[0]} | {vs[1]} | {err:.1e} |")
    print()
    best = min(e["median_s"] for e in v.values() if e["kind"] == "winograd" and e["median_s"])
    return functional / best if functional else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", help="layer names (default: every 3x3 stride-1 layer)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="the target layers at N=1, 3 rounds, ResNet-50 at 1 thread")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny layers, 1 round, a narrow ResNet-50 at 64x64: checks that "
                             "everything runs")
    parser.add_argument("--no-network", action="store_true")
    args = parser.parse_args(argv)
    threads_list = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    layers = winograd_layers(args.layers)
    size, width = 224, 1.0
    if args.quick:
        layers = [layer for layer in layers if is_target(layer)]
        batches, args.rounds = [1], 3
    if args.smoke:
        layers = [layer_defs.parse_layer_spec(spec) for spec in SMOKE_SPECS]
        batches, threads_list, args.rounds, size, width = [1], [1], 1, 64, 0.125
    torch, torch_note = load_torch()
    if torch is not None:
        torch.set_grad_enabled(False)   # inference, as run.py times PyTorch
    loaded, onnx_note = load_onnxruntime()
    for note in (torch_note, onnx_note):
        if note:
            print(note, file=sys.stderr)
    contenders = ([Im2rowContender("winograd", "NHWC"), Im2rowContender("winograd", "NCHW"),
                   Im2rowContender("winograd", "NHWC", "conv2d"), Im2rowContender("auto", "NHWC")]
                  + torch_contenders(torch) + onnx_contenders(loaded))
    options = TimingOptions(rounds=args.rounds, sample_s=0.05)
    progress = Progress(0)
    control = ThreadControl(torch)
    record = fma.measure_peak(threads_list, cpu_flags())
    info = describe_machine(torch, torch_note, onnx_note)
    print(f"# Winograd: {info['cpu_model']}, {info['cpus_available']} CPUs, {info['date']}\n")
    print(f"`{info['command']}`; versions: {info['versions']}; im2row kernels: "
          f"{info['im2row_backend']['isa']}\n")
    print(fma.describe(record) + "\n")
    errors = {}
    print("## Error (N=1, whole output; relative to max |float64 reference|)\n")
    print("| layer | F(2x2) max | F(2x2) RMS | F(4x4) max | F(4x4) RMS |")
    print("|---|---:|---:|---:|---:|")
    for layer in layers:
        for tile in (2, 4):
            errors[(layer.name, tile)] = winograd_error(layer, tile)
        print(f"| {layer.name} | " + " | ".join(
            f"{errors[(layer.name, t)][i]:.1e}" for t in (2, 4) for i in (0, 1)) + " |")
    print()
    headline = []
    for threads in threads_list:
        peak = fma.peak_gflops(record, threads)
        for n in batches:
            with control.use(threads):
                ratios = layer_table(layers, n, threads, contenders, options, progress, peak,
                                     errors)
            cells = ", ".join(f"{c} {geomean(r):.2f}x (worst {min(r):.2f}x)"
                              for c, r in ratios.items() if r) or "none measured"
            headline.append(f"- N={n}, {threads} thread(s), target layers: {cells}")
    if not args.no_network:
        for threads in ([1] if args.quick else threads_list):
            with control.use(threads):
                ratio = network_table(1, threads, args.rounds, progress, torch, size, width)
            if ratio:
                headline.append(f"- ResNet-50 N=1, {size}x{size}, {threads} thread(s): best "
                                f"Winograd variant {ratio:.2f}x the same network with PyTorch's "
                                f"convolutions")
    print("## Headline (geomean of the fastest peer's time / the contender's)\n")
    print("\n".join(headline))


if __name__ == "__main__":
    main()
