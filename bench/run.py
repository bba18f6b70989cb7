"""im2row microbenchmarks: im2row against PyTorch and ONNX Runtime (and NumPy), time and memory.

    python bench/run.py                      # the network suite: 120 layers, N=1 and 8, 1 and
                                             # all threads (time-capped: --budget, default 60 min)
    python bench/run.py --quick              # a sample of every layer class, about a minute
    python bench/run.py --networks           # ResNet-50 and MobileNetV2 forward passes
    python bench/run.py --suite classic      # the older twelve-layer suite
    python bench/run.py --scaling            # time and memory against the image size
    python bench/run.py --gemm               # the package's GEMM alone against numpy matmul
    python bench/run.py --json run.json --plot run.png
    python bench/run.py --compare old.json new.json
    python bench/run.py --layer mine:64,56,128,3x3,1,1 --layers mine,rn50_l3_3x3_256_14

Markdown tables go to stdout, progress to stderr; a short headline ends every report. See
--help for every option.
"""
# First, before anything imports numpy: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set on some
# machines) are read when OpenBLAS loads and slow current OpenBLAS down, so run again without
# them. What was removed is passed on, to be recorded with the results.
import os
import sys

_OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_UNSET_VARIABLE = "IM2ROW_BENCH_UNSET_OPENBLAS"   # machine.UNSET_VARIABLE


def _restart_without_openblas_overrides():
    found = {k: os.environ[k] for k in _OPENBLAS_OVERRIDES if k in os.environ}
    if not found:
        return
    env = {k: v for k, v in os.environ.items() if k not in _OPENBLAS_OVERRIDES}
    env[_UNSET_VARIABLE] = ";".join(f"{k}={v}" for k, v in found.items())
    args = getattr(sys, "orig_argv", None)
    argv = [sys.executable] + (args[1:] if args else [os.path.abspath(__file__)] + sys.argv[1:])
    try:
        os.execve(sys.executable, argv, env)
    except OSError:       # cannot re-exec: unsetting in place works while numpy is not loaded
        for k in found:
            del os.environ[k]
        os.environ[_UNSET_VARIABLE] = env[_UNSET_VARIABLE]


# OpenBLAS's idle threads spin for about 2**28 cycles (~70 ms) after each call by default,
# holding the second core while the next contender of the round is timed. A short timeout
# (2**4 cycles; the user's own setting wins) keeps the interleaved rounds fair. Read when
# OpenBLAS loads, so set before numpy is imported.
_OPENBLAS_THREAD_TIMEOUT = ("OPENBLAS_THREAD_TIMEOUT", "4")

if __name__ == "__main__":
    _restart_without_openblas_overrides()
    os.environ.setdefault(*_OPENBLAS_THREAD_TIMEOUT)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402

import fma  # noqa: E402
import im2row  # noqa: E402
import layers as layer_defs  # noqa: E402
import networks  # noqa: E402
import studies  # noqa: E402
from compare import render_comparison  # noqa: E402
from contenders import (IM2ROW_METHODS, LAYOUTS, ThreadControl, im2row_contenders,  # noqa: E402
                        load_onnxruntime, load_torch, onnx_contenders, suite_im2row_contenders,
                        torch_contenders)
from headline import summarise  # noqa: E402
from machine import available_cpus, describe_machine  # noqa: E402
from plot import INSTALL_HINT, matplotlib_available, save_plot  # noqa: E402
from report import GIB, render  # noqa: E402
from timing import Progress, RunBudget, TimingOptions  # noqa: E402

# Per mode: rounds, sample length, SGEMM probe size, per-call limit (ms), batch sizes, time
# budget (minutes), the size cap of a case at N > 1 (GFLOP), the FMA probe's loop length (s),
# and the whole networks' input size, width, rounds and batch sizes (None: the suite's).
MODES = {
    "full": dict(rounds=7, sample_ms=20.0, sgemm_size=1024, max_call_ms=None, batch="1,8",
                 budget_min=60.0, max_case_gflop=40.0, fma_s=0.1, net_size=224, net_width=1.0,
                 net_rounds=5, net_batch=None),
    "quick": dict(rounds=3, sample_ms=5.0, sgemm_size=512, max_call_ms=150.0, batch="1,8",
                  budget_min=1.5, max_case_gflop=8.0, fma_s=0.05, net_size=224, net_width=1.0,
                  net_rounds=3, net_batch=None),
    "smoke": dict(rounds=2, sample_ms=0.0, sgemm_size=64, max_call_ms=None, batch="1,2",
                  budget_min=None, max_case_gflop=None, fma_s=0.002, net_size=32,
                  net_width=0.25, net_rounds=2, net_batch="1"),
}
SCALING_SIZES = (56, 112, 224, 448, 1024, 2048)
SMOKE_SCALING_SIZES = (8, 16)
SMOKE_MEMORY_BUDGET = 512 << 10          # small enough that the smoke run shows "would need"
GEMM_SQUARES = (256, 512, 768, 1024)
SMOKE_GEMM_SQUARES = (32, 64)
MEMORY_CURVE_SIZES = (56, 79, 112, 158, 224, 317, 448, 634, 896, 1267, 1792, 2048)


# --- command line -------------------------------------------------------------------------------

def build_parser():
    p = argparse.ArgumentParser(
        prog="python bench/run.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Layer spec: {layer_defs.SPEC_FORM} (see bench/layers.py). --quick samples: "
               + ", ".join(layer_defs.QUICK_NAMES) + ". Suites: " + ", ".join(
                   f"{k} ({len(v)} layers)" for k, v in layer_defs.SUITES.items()))
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help=f"about a minute: {len(layer_defs.QUICK_NAMES)} layers sampled from "
                           f"the network suite (every layer class: stems, 1x1, shallow and "
                           f"deep 3x3, depthwise, dilated, 1x7/7x1, 5x5, 11x11, wide maps), 3 "
                           f"rounds, short samples, N=8 only up to 8 GFLOP, a 1.5-minute "
                           f"budget; a contender slower than --max-call-ms (150) per call and "
                           f"2x the fastest on a case is skipped (noted in the table)")
    mode.add_argument("--smoke", action="store_true",
                      help="tiny layers, every study, seconds: checks that everything runs")
    what = p.add_argument_group("what to run")
    what.add_argument("--suite", nargs="?", const="nets", choices=sorted(layer_defs.SUITES),
                      help="the layer suite: nets (default: every distinct convolution of "
                           "ResNet-50, MobileNetV2, EfficientNet-B0, VGG-16 and layers of "
                           "UNet, YOLO, DeepLab, Inception, AlexNet, super-resolution) or "
                           "classic (the older 12 layers); given with --scaling, --gemm or "
                           "--networks, also runs the suite")
    what.add_argument("--layers", metavar="NAMES",
                      help="comma-separated subset of the suite and --layer names, in order")
    what.add_argument("--layer", action="append", default=[], metavar="SPEC",
                      help="add a layer, e.g. mine:64,56,128,3x3,1,1[,groups=G][,dilation=D]")
    what.add_argument("--layer-file", metavar="PATH",
                      help="add layers from a file, one spec per line ('#' comments)")
    what.add_argument("--batch", metavar="N,N", help="batch sizes (default 1,8)")
    what.add_argument("--threads", metavar="T,T",
                      help="thread counts, numbers or 'all' (default: 1,all; scaling: all)")
    what.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    what.add_argument("--no-onnx", action="store_true", help="leave ONNX Runtime out")
    what.add_argument("--methods", metavar="M,M",
                      help="also time plans of these im2row methods in the suite ("
                           + ", ".join(m for m in IM2ROW_METHODS if m != "auto") + ")")
    what.add_argument("--networks", action="store_true",
                      help="whole ResNet-50 and MobileNetV2 forward passes: im2row.conv2d "
                           "calls, im2row.Conv2d plans, torch.nn.functional.conv2d (same "
                           "NumPy glue) and torch.nn modules")
    what.add_argument("--network-names", metavar="NAMES",
                      help=f"subset of {','.join(networks.NETWORK_NAMES)} for --networks")
    what.add_argument("--scaling", action="store_true",
                      help="time and memory of a 3x3 64->64 layer against H=W (56..2048)")
    what.add_argument("--scaling-sizes", metavar="S,S",
                      help=f"image sizes for --scaling (default "
                           f"{','.join(map(str, SCALING_SIZES))})")
    what.add_argument("--memory-budget", type=float, metavar="GIB",
                      help="--scaling runs no method predicted to need more (default: "
                           "min(4, half the available memory))")
    what.add_argument("--gemm", action="store_true",
                      help="the package's GEMM alone against numpy matmul")
    what.add_argument("--gemm-squares", metavar="S,S",
                      help=f"square GEMM sizes for --gemm (default "
                           f"{','.join(map(str, GEMM_SQUARES))})")
    timing = p.add_argument_group("timing")
    timing.add_argument("--rounds", type=int, help="interleaved rounds per case")
    timing.add_argument("--sample-ms", type=float, help="repeat short calls up to this per sample")
    timing.add_argument("--max-call-ms", type=float,
                        help="skip a contender whose call takes longer and 2x the "
                             "fastest's (default: none; --quick: 150)")
    timing.add_argument("--sgemm-size", type=int, help="SGEMM probe size (default 1024; "
                                                       "--quick 512)")
    timing.add_argument("--budget", type=float, metavar="MIN",
                        help="time budget of the suite and --networks in minutes (default "
                             "60; --quick 1.5; 0: none): a case that would overrun its share "
                             "runs fewer rounds (at least 3), and cases are not run once it is "
                             "spent (listed under 'Not run')")
    timing.add_argument("--max-case-gflop", type=float, metavar="G",
                        help="do not run a suite case at N > 1 of more GFLOP (default 40; "
                             "--quick 8; 0: no cap); listed under 'Not run'")
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="save every raw timing and the machine")
    out.add_argument("--plot", metavar="PATH.png", help="save a figure (needs matplotlib)")
    out.add_argument("--load", metavar="PATH.json",
                     help="do not run: print the tables (and --plot) of a saved run")
    out.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                     help="do not run: print time in A / time in B per case and contender")
    out.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    return p


def int_list(text, what, parser, allow_all=False):
    values = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        if allow_all and item == "all":
            values.append(available_cpus())
        elif item.isdigit() and int(item) > 0:
            values.append(int(item))
        else:
            parser.error(f"{what}: expected positive integers{' or all' * allow_all}, "
                         f"got {item!r}")
    if not values:
        parser.error(f"{what}: empty list")
    return sorted(set(values), key=values.index)


def settings_from_args(args, parser):
    """Everything a run needs, from the mode defaults and the options given."""
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    d = MODES[mode]
    max_call_ms = args.max_call_ms if args.max_call_ms is not None else d["max_call_ms"]
    options = TimingOptions(
        rounds=args.rounds or d["rounds"],
        sample_s=(args.sample_ms if args.sample_ms is not None else d["sample_ms"]) / 1e3,
        max_call_s=max_call_ms / 1e3 if max_call_ms else float("inf"))
    if options.rounds < 1:
        parser.error("--rounds must be at least 1")
    suite = args.suite or "nets"
    try:
        extra = [layer_defs.parse_layer_spec(s) for s in args.layer]
        if args.layer_file:
            extra += layer_defs.read_layer_file(args.layer_file)
        if mode == "smoke":
            base = layer_defs.SMOKE_SUITE
        elif args.layers:      # a named subset may come from any suite
            base = layer_defs.all_named_layers()
        elif mode == "quick":
            base = layer_defs.quick_layers(suite)
        else:
            base = layer_defs.SUITES[suite]
        layers = layer_defs.select_layers(layer_defs.merge_layers(base, extra), args.layers)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    methods = [m.strip() for m in (args.methods or "").split(",") if m.strip()]
    for m in methods:
        if m not in IM2ROW_METHODS:
            parser.error(f"--methods: unknown method {m!r} (known: {', '.join(IM2ROW_METHODS)})")
    names = [m.strip() for m in (args.network_names or ",".join(networks.NETWORK_NAMES))
             .split(",") if m.strip()]
    for name in names:
        if name not in networks.NETWORK_NAMES:
            parser.error(f"--network-names: unknown network {name!r} (known: "
                         f"{', '.join(networks.NETWORK_NAMES)})")
    studies_given = args.scaling or args.gemm or args.networks
    threads = int_list(args.threads, "--threads", parser, True) if args.threads else None
    budget_min = args.budget if args.budget is not None else d["budget_min"]
    max_gflop = args.max_case_gflop if args.max_case_gflop is not None else d["max_case_gflop"]
    return {
        "mode": mode, "options": options, "layers": layers,
        "batches": int_list(args.batch or d["batch"], "--batch", parser),
        "threads": threads or int_list("1,all", "--threads", parser, True),
        "scaling_threads": threads or [available_cpus()],
        "sgemm_size": args.sgemm_size or d["sgemm_size"],
        "suite": "smoke" if mode == "smoke" else suite,
        "methods": methods,
        "run_suite": mode == "smoke" or bool(args.suite) or not studies_given,
        "run_scaling": mode == "smoke" or args.scaling,
        "run_gemm": mode == "smoke" or args.gemm,
        "run_networks": mode == "smoke" or args.networks,
        "network_names": names,
        "network_batches": int_list(args.batch or d["net_batch"] or d["batch"], "--batch",
                                    parser),
        "network_size": d["net_size"], "network_width": d["net_width"],
        "network_rounds": args.rounds or d["net_rounds"],
        "budget_s": budget_min * 60 if budget_min else None,
        "max_case_flops": max_gflop * 1e9 if max_gflop else None,
        "fma_seconds": d["fma_s"],
        "scaling_sizes": (int_list(args.scaling_sizes, "--scaling-sizes", parser)
                          if args.scaling_sizes else
                          SMOKE_SCALING_SIZES if mode == "smoke" else SCALING_SIZES),
        "memory_budget": (int(args.memory_budget * GIB) if args.memory_budget
                          else SMOKE_MEMORY_BUDGET if mode == "smoke" else default_budget()),
        "gemm_squares": (int_list(args.gemm_squares, "--gemm-squares", parser)
                         if args.gemm_squares else
                         SMOKE_GEMM_SQUARES if mode == "smoke" else GEMM_SQUARES),
    }


def default_budget():
    """min(4 GiB, half of MemAvailable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return min(4 * GIB, int(line.split()[1]) * 1024 // 2)
    except OSError:
        pass
    return 4 * GIB


# --- running ------------------------------------------------------------------------------------

def run_studies(s, peers, control, progress, result, budget):
    """Append the records of every selected study to ``result`` as each case finishes (so an
    interrupted run keeps what it has): suite, scaling and GEMM blocks to "blocks", networks
    to "networks", cases not run to "not_run"."""
    options, torch, onnx = s["options"], peers["torch"], peers["onnx"]
    selected = []
    if s["run_suite"]:
        contenders = (suite_im2row_contenders(s["methods"]) + torch_contenders(torch)
                      + onnx_contenders(onnx))
        selected.append(("blocks", studies.run_suite(
            s["layers"], s["batches"], s["threads"], contenders, options, control, progress,
            s["sgemm_size"], budget=budget, max_case_flops=s["max_case_flops"],
            memory_budget=s["memory_budget"], not_run=result["not_run"])))
    if s["run_scaling"]:
        contenders = (im2row_contenders(layouts=("NHWC",))
                      + torch_contenders(torch, ("channels_last",)))
        selected.append(("blocks", studies.run_scaling(
            s["scaling_sizes"], s["scaling_threads"], contenders, options, control, progress,
            s["memory_budget"], s["sgemm_size"])))
    if s["run_gemm"]:
        shapes = studies.gemm_shapes(s["layers"], s["gemm_squares"])
        selected.append(("blocks", studies.run_gemm(shapes, s["threads"], options, control,
                                                    progress)))
    if s["run_networks"]:
        selected.append(("networks", networks.run_networks(
            s["network_names"], s["network_batches"], s["threads"], s["network_rounds"], control,
            progress, torch, size=s["network_size"], width=s["network_width"],
            budget=budget, not_run=result["not_run"])))
    for key, study in selected:     # generators: nothing runs before this loop
        for record in study:
            result[key].append(record)


def budgeted_case_count(s):
    """Cases under the time budget: the suite's and the networks' (the scaling and GEMM
    studies have their own size limits)."""
    total = 0
    if s["run_suite"]:
        total += len(s["layers"]) * len(s["batches"]) * len(s["threads"])
    if s["run_networks"]:
        total += len(s["network_names"]) * len(s["network_batches"]) * len(s["threads"])
    return total


def case_count(s):
    total = budgeted_case_count(s)
    if s["run_scaling"]:
        total += len(s["scaling_sizes"]) * len(s["scaling_threads"])
    if s["run_gemm"]:
        total += len(studies.gemm_shapes(s["layers"], s["gemm_squares"])) * len(s["threads"])
    return total


def memory_curve(sizes, threads):
    """Predicted workspace of each method (NHWC) for the scaling layer at these sizes: pure
    arithmetic (im2row.workspace_bytes), nothing is allocated."""
    curve = {"sizes": list(sizes), "threads": threads, "input_bytes": [], "workspace": {}}
    base = studies.SCALING_LAYER
    for size in sizes:
        layer = base.with_size(size)
        curve["input_bytes"].append(4 * layer.c * size * size)
        for contender in im2row_contenders(layouts=("NHWC",)):
            predicted = im2row.workspace_bytes(layer.input_shape(1, "NHWC"),
                                               layer.weight_shape("NHWC"), layout="NHWC",
                                               method=contender.method, num_threads=threads,
                                               **layer.conv_kwargs())
            curve["workspace"].setdefault(contender.method, []).append(predicted["workspace"])
    return curve


def fma_thread_counts(s):
    counts = set(s["threads"])
    if s["run_scaling"]:
        counts |= set(s["scaling_threads"])
    return sorted(counts)


def run(s, args):
    torch, torch_note = (None, "PyTorch left out (--no-torch)") if args.no_torch else load_torch()
    onnx, onnx_note = ((None, "ONNX Runtime left out (--no-onnx)") if args.no_onnx
                       else load_onnxruntime())
    machine = describe_machine(torch, torch_note, onnx_note)
    if not args.quiet:
        note = machine["openblas_env_unset"]
        print(f"numpy BLAS: {machine['openblas_kernel']}"
              + (f" (removed {', '.join(note)} from the environment)" if note else ""),
              file=sys.stderr)
        for text in (torch_note, onnx_note):
            if text:
                print(text, file=sys.stderr)
    fma_start = fma.measure_peak(fma_thread_counts(s), machine["cpu_flags"],
                                 seconds=s["fma_seconds"])
    if not args.quiet:
        print(fma.describe(fma_start), file=sys.stderr)
    control = ThreadControl(torch)
    config = {"mode": s["mode"], "rounds": s["options"].rounds,
              "sample_s": s["options"].sample_s, "max_call_s": _finite(s["options"].max_call_s),
              "batches": s["batches"], "threads": s["threads"],
              "scaling_threads": s["scaling_threads"], "sgemm_size": s["sgemm_size"],
              "layers": [layer.spec() for layer in s["layers"]],
              "scaling_sizes": s["scaling_sizes"], "memory_budget_bytes": s["memory_budget"],
              "blas_threads_controlled": control.blas_controlled, "layouts": list(LAYOUTS),
              "suite": s["suite"], "methods": s["methods"], "budget_s": s["budget_s"],
              "max_case_flops": s["max_case_flops"], "network_names": s["network_names"],
              "network_size": s["network_size"], "network_width": s["network_width"],
              "network_rounds": s["network_rounds"]}
    result = {"schema": 2, "machine": machine, "config": config, "blocks": [],
              "networks": [], "not_run": [], "fma": fma_start,
              "memory_curve": memory_curve(sorted(set(MEMORY_CURVE_SIZES)
                                                  | set(s["scaling_sizes"])),
                                           max(s["scaling_threads"])),
              "interrupted": False}
    progress = Progress(case_count(s), enabled=not args.quiet)
    budget = RunBudget(s["budget_s"], budgeted_case_count(s))
    no_grad = torch.no_grad() if torch is not None else contextlib.nullcontext()
    try:
        with no_grad:
            run_studies(s, {"torch": torch, "onnx": onnx}, control, progress, result, budget)
    except KeyboardInterrupt:
        result["interrupted"] = True
        print("\ninterrupted: reporting what has finished", file=sys.stderr)
    # measured again at the end: a busy moment of a shared machine only lowers a rate
    result["fma"] = fma.combine([fma_start, fma.measure_peak(
        fma_thread_counts(s), machine["cpu_flags"], seconds=s["fma_seconds"])])
    result["headline"] = summarise(result)
    return result


def _finite(x):
    return None if x == float("inf") else x


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.compare:
        sys.stdout.write(render_comparison(*args.compare))
        return 0
    if args.plot and not matplotlib_available():
        parser.error(INSTALL_HINT)
    if args.load:
        with open(args.load) as f:
            result = json.load(f)
    else:
        result = run(settings_from_args(args, parser), args)
    sys.stdout.write(render(result))
    if args.json and not args.load:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"saved {args.json}", file=sys.stderr)
    if args.plot:
        save_plot(result, args.plot)
        print(f"saved {args.plot}", file=sys.stderr)
    return 130 if result.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
