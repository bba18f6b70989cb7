"""The training and decoder ops against PyTorch: conv2d_backward and conv_transpose2d.

    python bench/training.py                  # quick layers at N=8 + decoder layers, 1 and 2
                                              # threads (a few minutes)
    python bench/training.py --layers rn50_l1_3x3_64_56 --threads 1

Backward: grad_input + grad_weight + grad_bias of the suite's --quick layers (bench/layers.py)
at N=8. PyTorch's backward is its autograd time (forward + backward, the gradients of the
input, weight and bias) minus its forward, both timed in the same rounds, in NCHW and
channels_last; im2row runs conv2d_backward (NCHW and NHWC) and a plan's backward (NHWC).
Transposed: UNet 2x2 s2, DCGAN 4x4 s2 and 3x3 s1 decoder layers against
torch.nn.functional.conv_transpose2d in both memory formats. Every contender of a case is timed
in the same interleaved rounds (bench/timing.py); medians; ratio = the faster PyTorch layout's
time / im2row's fastest; % of the FMA peak measured in this run. Workspace: what
im2row's weight gradient allocates (the C planner's count), beside the im2col matrix a
col2im-based backward materialises per image (PyTorch's own allocations are not measured).
"""
import os
import sys

if __name__ == "__main__":
    for variable in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        os.environ.pop(variable, None)   # before numpy loads OpenBLAS

import argparse  # noqa: E402

import numpy as np  # noqa: E402

import fma  # noqa: E402
import im2row  # noqa: E402
import layers as layer_defs  # noqa: E402
from contenders import load_torch  # noqa: E402
from machine import cpu_flags, describe_machine  # noqa: E402
from report import fmt_bytes  # noqa: E402
from timing import Progress, median, reps_for, run_rounds, time_call, TimingOptions  # noqa: E402

# (name, C_in, H, C_out, kernel, stride, padding)
DECODER_LAYERS = (
    ("unet_up_2x2s2_512_28", 512, 28, 256, 2, 2, 0),
    ("unet_up_2x2s2_128_112", 128, 112, 64, 2, 2, 0),
    ("dcgan_4x4s2_512_4", 512, 4, 256, 4, 2, 1),
    ("dcgan_4x4s2_256_8", 256, 8, 128, 4, 2, 1),
    ("dcgan_4x4s2_128_16", 128, 16, 64, 4, 2, 1),
    ("dcgan_4x4s2_64_32", 64, 32, 3, 4, 2, 1),
    ("dec_3x3s1_64_56", 64, 56, 64, 3, 1, 1),
)
MAX_CASE_GFLOP = 8          # forward GFLOP of a backward case, at most (as --quick)


def _nhwc(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def backward_contenders(torch, layer, n, threads, rng):
    """{name: callable}, the FLOPs of one backward (input and weight gradients), and the
    weight gradient's workspace."""
    kw = layer.conv_kwargs()
    x = rng.standard_normal(layer.input_shape(n, "NCHW")).astype(np.float32)
    w = (rng.standard_normal(layer.weight_shape("NCHW")) * 0.1).astype(np.float32)
    gy = rng.standard_normal(layer.output_shape(n, "NCHW")).astype(np.float32)
    xh, wh, gh = _nhwc(x), np.ascontiguousarray(w.transpose(2, 3, 1, 0)), _nhwc(gy)
    plan = im2row.Conv2d(wh, None, layout="NHWC", **kw)
    run = {
        "im2row NCHW": lambda: im2row.conv2d_backward(gy, x, w, num_threads=threads, **kw),
        "im2row NHWC": lambda: im2row.conv2d_backward(gh, xh, wh, layout="NHWC",
                                                      num_threads=threads, **kw),
        "plan NHWC": lambda: plan.backward(gh, xh, num_threads=threads),
    }
    if torch is not None:
        F = torch.nn.functional
        for fmt in ("NCHW", "channels_last"):
            memory = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
            xt = torch.from_numpy(x).contiguous(memory_format=memory).requires_grad_()
            wt = torch.from_numpy(w).contiguous(memory_format=memory).requires_grad_()
            bt = torch.zeros(layer.oc, requires_grad=True)
            gt = torch.from_numpy(gy).contiguous(memory_format=memory)

            def both(xt=xt, wt=wt, bt=bt, gt=gt):
                F.conv2d(xt, wt, bt, **kw).backward(gt)

            def forward(xt=xt, wt=wt, bt=bt):
                with torch.no_grad():
                    F.conv2d(xt, wt, bt, **kw)
            run[f"torch {fmt} fwd+bwd"] = both
            run[f"torch {fmt} fwd"] = forward
    spec = im2row._args.make_spec(xh.shape, wh.shape, np.float32, layer.stride, layer.padding,
                                  layer.dilation, layer.groups, "NHWC", "bench")
    workspace = None
    if im2row._backend.native is not None:
        workspace = im2row._backend.native.predict_grad_weight(
            im2row._api.spec_geometry(spec), threads, im2row._backend.isa(), False)[0]
    im2col = spec.oh * spec.ow * spec.c * spec.kh * spec.kw * 4
    return run, 2 * layer.flops(n), workspace, im2col


def transpose_contenders(torch, spec, n, threads, rng):
    name, cin, h, cout, k, s, p = spec
    x = rng.standard_normal((n, cin, h, h)).astype(np.float32)
    w = (rng.standard_normal((cin, cout, k, k)) * 0.1).astype(np.float32)
    xh, wh = _nhwc(x), np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    plan = im2row.ConvTranspose2d(wh, None, s, p, layout="NHWC")
    run = {
        "im2row NCHW": lambda: im2row.conv_transpose2d(x, w, None, s, p, num_threads=threads),
        "im2row NHWC": lambda: im2row.conv_transpose2d(xh, wh, None, s, p, layout="NHWC",
                                                       num_threads=threads),
        "plan NHWC": lambda: plan(xh, num_threads=threads),
    }
    if torch is not None:
        F = torch.nn.functional
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        xc = xt.contiguous(memory_format=torch.channels_last)
        wc = wt.contiguous(memory_format=torch.channels_last)
        run["torch NCHW"] = lambda: F.conv_transpose2d(xt, wt, None, s, p)
        run["torch channels_last"] = lambda: F.conv_transpose2d(xc, wc, None, s, p)
    flops = 2 * n * cin * h * h * cout * k * k
    return run, flops


def time_all(run, options, progress, label):
    samplers = {}
    for name, fn in run.items():
        fn()
        samplers[name] = (fn, reps_for(time_call(fn), options))
    progress.begin(label)
    times = run_rounds(samplers, options.rounds,
                       on_round=lambda r: progress.round(r, options.rounds))
    progress.end()
    return {name: median(series) for name, series in times.items()}


def _ratio_cells(ours, theirs, flops, peak):
    best = min(ours.values())
    cells = [f"{t * 1e3:.2f}" for t in ours.values()]
    rate = flops / best / 1e9
    pct = f"{100 * rate / peak:.0f}%" if peak else "-"
    ratio = f"{theirs / best:.2f}" if theirs else "-"
    return cells, f"{rate:.0f}", pct, ratio


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", help="backward layers (suite names; default: --quick's)")
    parser.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-transpose", action="store_true")
    args = parser.parse_args(argv)
    threads_list = [int(t) for t in args.threads.split(",")]
    torch, note = load_torch()
    if torch is None:
        print(note, file=sys.stderr)
    options = TimingOptions(rounds=args.rounds, sample_s=0.05)
    progress = Progress(0)
    names = args.layers or ",".join(layer_defs.QUICK_NAMES)
    layers = layer_defs.select_layers(layer_defs.NETWORK_SUITE, names)
    layers = [l for l in layers if l.flops(args.batch) <= MAX_CASE_GFLOP * 1e9]
    record = fma.measure_peak(threads_list, cpu_flags())
    info = describe_machine(torch, note)
    print(f"# Training ops: {info['cpu_model']}, {info['cpus_available']} CPUs, {info['date']}")
    print(f"\n`{info['command']}`; versions: {info['versions']}; im2row kernels: "
          f"{info['im2row_backend']['isa']}\n")
    print(fma.describe(record))
    print()
    rng = np.random.default_rng(0)
    for threads in threads_list:
        if torch is not None:
            torch.set_num_threads(threads)
        peak = fma.peak_gflops(record, threads)
        print(f"## Backward, N={args.batch}, {threads} thread(s)\n")
        print("| layer | im2row NCHW ms | im2row NHWC ms | plan NHWC ms | torch NCHW ms | "
              "torch channels_last ms | GFLOP/s | % peak | vs torch | grad_weight workspace "
              "| im2col matrix |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        ratios = []
        for layer in layers:
            run, flops, workspace, im2col = backward_contenders(torch, layer, args.batch,
                                                                threads, rng)
            med = time_all(run, options, progress, f"{layer.name} backward {threads}t")
            ours = {k: med[k] for k in ("im2row NCHW", "im2row NHWC", "plan NHWC")}
            tb = {fmt: med[f"torch {fmt} fwd+bwd"] - med[f"torch {fmt} fwd"]
                  for fmt in ("NCHW", "channels_last")} if torch else {}
            theirs = min(tb.values()) if tb else None
            cells, rate, pct, ratio = _ratio_cells(ours, theirs, flops, peak)
            if theirs:
                ratios.append(theirs / min(ours.values()))
            torch_cells = [f"{tb[f] * 1e3:.2f}" if tb else "-" for f in ("NCHW", "channels_last")]
            print(f"| {layer.name} | " + " | ".join(cells + torch_cells) +
                  f" | {rate} | {pct} | {ratio} | "
                  f"{fmt_bytes(workspace) if workspace is not None else '-'} | "
                  f"{fmt_bytes(im2col * args.batch)} |")
        if ratios:
            print(f"\nBackward geomean vs the faster PyTorch layout, {threads} thread(s): "
                  f"{np.exp(np.mean(np.log(ratios))):.2f}x (worst {min(ratios):.2f}x)\n")
        if args.no_transpose:
            continue
        print(f"## conv_transpose2d, N={args.batch}, {threads} thread(s)\n")
        print("| layer | im2row NCHW ms | im2row NHWC ms | plan NHWC ms | torch NCHW ms | "
              "torch channels_last ms | GFLOP/s | % peak | vs torch |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        ratios = []
        for spec in DECODER_LAYERS:
            run, flops = transpose_contenders(torch, spec, args.batch, threads, rng)
            med = time_all(run, options, progress, f"{spec[0]} transposed {threads}t")
            ours = {k: med[k] for k in ("im2row NCHW", "im2row NHWC", "plan NHWC")}
            theirs = min(med["torch NCHW"], med["torch channels_last"]) if torch else None
            cells, rate, pct, ratio = _ratio_cells(ours, theirs, flops, peak)
            if theirs:
                ratios.append(theirs / min(ours.values()))
            torch_cells = ([f"{med[k] * 1e3:.2f}" for k in ("torch NCHW", "torch channels_last")]
                           if torch else ["-", "-"])
            print(f"| {spec[0]} | " + " | ".join(cells + torch_cells) +
                  f" | {rate} | {pct} | {ratio} |")
        if ratios:
            print(f"\nconv_transpose2d geomean vs the faster PyTorch layout, {threads} "
                  f"thread(s): {np.exp(np.mean(np.log(ratios))):.2f}x (worst "
                  f"{min(ratios):.2f}x)\n")


if __name__ == "__main__":
    main()
