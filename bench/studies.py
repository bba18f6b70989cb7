"""The three studies: the layer suite, image-size scaling, and the GEMM alone.

Each produces *blocks*: one case (a layer at a batch size) at one thread count, with every
contender's per-round times, its correctness check and its memory. Blocks are plain dicts, as
saved in the JSON file, so the report, the plot and --compare all read the same thing.
"""
import math
from dataclasses import replace

import im2row
from contenders import CHECK_TOLERANCE, Case, Im2rowContender, MatmulContender, sgemm_probe
from layers import Layer
from report import fmt_bytes
from timing import median, reps_for, run_rounds, time_call, timed


# --- one block ----------------------------------------------------------------------------------

def time_case(case, threads, contenders, options, progress, *, study, label, sgemm_size=None,
              with_memory=False, preskipped=None, budget=None):
    """Time every contender on one case at one thread count, interleaved in rounds.

    ``preskipped`` maps contender names to the reason they are not run. Runners (plans, packed
    weights) are built here, before the timed rounds; the first call of each is checked against
    a float64 reference and, with ``with_memory``, measures the call's scratch memory. A
    contender slower than ``options.max_call_s`` per call *and* ``options.slow_factor`` times
    the fastest contender of the case is skipped (--quick). With a ``budget`` (a
    timing.RunBudget) a case whose rounds would overrun its allowance runs fewer rounds.
    """
    preskipped = preskipped or {}
    results, runners = {}, {}
    for contender in contenders:
        entry = results[contender.name] = _new_entry(contender)
        if with_memory:
            entry["predicted"] = _predicted(contender, case, threads)
        if contender.name in preskipped:
            entry["skipped"] = preskipped[contender.name]
            continue
        try:
            runners[contender.name] = _first_call(contender, case, threads, options, entry,
                                                  with_memory)
        except Exception as exc:     # one broken contender must not stop the others
            entry["skipped"] = f"error: {type(exc).__name__}: {exc}"
    _skip_too_slow(results, runners, options)
    samplers = {}
    for name, entry in results.items():
        if entry["skipped"]:
            progress.note(f"  {label}: {name} skipped ({entry['skipped']})")
            continue
        if entry["check_error"] is not None and entry["check_error"] > CHECK_TOLERANCE:
            progress.note(f"  {label}: {name} gives a WRONG result "
                          f"(relative error {entry['check_error']:.1e})")
        entry["reps"] = reps_for(entry["call_s"], options)
        samplers[name] = (runners[name], entry["reps"])
    round_s = sum(results[name]["call_s"] * reps for name, (_, reps) in samplers.items())
    sgemm = None
    if sgemm_size:
        probe = sgemm_probe(sgemm_size)
        probe()
        probe_s = time_call(probe)
        sgemm = {"size": sgemm_size, "flops": 2 * sgemm_size ** 3,
                 "reps": reps_for(probe_s, options)}
        samplers["sgemm"] = (probe, sgemm["reps"])
        round_s += probe_s * sgemm["reps"]
    rounds = budget.rounds(options.rounds, round_s) if budget else options.rounds
    if rounds < options.rounds:
        progress.note(f"  {label}: {rounds} rounds instead of {options.rounds} (one round "
                      f"takes {round_s:.1f} s; --budget)")
    times = run_rounds(samplers, rounds, on_round=lambda r: progress.round(r, rounds))
    for name, series in times.items():
        target = sgemm if name == "sgemm" else results[name]
        target["times_s"] = series
        target["median_s"] = median(series)
    return {"study": study, "label": label, "layer": case.layer.as_dict(),
            "spec": case.layer.spec(), "n": case.n, "threads": threads, "flops": case.flops,
            "input_bytes": case.input_bytes, "output_bytes": case.output_bytes,
            "rounds": rounds, "rounds_wanted": options.rounds, "contenders": results,
            "sgemm": sgemm}


def _new_entry(contender):
    return {"kind": contender.kind, "layout": contender.layout,
            "method": getattr(contender, "method", None), "api": getattr(contender, "api", None),
            "baseline": getattr(contender, "baseline", False), "times_s": [], "median_s": None,
            "reps": None, "call_s": None, "skipped": None, "too_slow": False,
            "check_error": None, "memory": None, "predicted": None}


def _predicted(contender, case, threads):
    try:
        return contender.predicted_memory(case, threads)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _first_call(contender, case, threads, options, entry, with_memory):
    """Build the runner, make its first call (checked against the reference; with
    ``with_memory`` it also measures memory) and estimate the time of one call."""
    case.poison_outputs()
    runner = contender.runner(case, threads)
    entry["memory"], call_s = timed(lambda: runner.first_call(with_memory))
    result = runner.take_result_nchw()
    if result is not None:
        entry["check_error"] = case.check(result)
    del result
    # The first call pays page faults and one-time setup; time a warm one too, unless the
    # first was clearly too slow for this mode anyway.
    if call_s < options.sample_s or options.max_call_s < call_s < 3 * options.max_call_s:
        call_s = min(call_s, time_call(runner))
    entry["call_s"] = call_s
    return runner


def _skip_too_slow(results, runners, options):
    calls = [results[name]["call_s"] for name in runners]
    if not calls or options.max_call_s == math.inf:
        return
    fastest = min(calls)
    for name in runners:
        entry = results[name]
        call_s = entry["call_s"]
        if call_s > options.max_call_s and call_s > options.slow_factor * fastest:
            entry["skipped"] = (f"too slow for this mode: {call_s * 1e3:.3g} ms per "
                                f"call, > --max-call-ms {options.max_call_s * 1e3:g} and > "
                                f"{options.slow_factor:g}x the fastest contender")
            entry["too_slow"] = True


# --- the layer suite ----------------------------------------------------------------------------

def run_suite(layers, batches, thread_counts, contenders, options, control, progress,
              sgemm_size, *, budget=None, max_case_flops=None, memory_budget=None,
              not_run=None):
    """Every layer at every batch size and thread count, one block per case (a generator).
    Thread counts run from the largest down; memory is measured at the first (largest); a
    contender far over the per-call limit at more threads is not tried at fewer.

    Not run, and listed in ``not_run`` with the reason: a case at N > 1 of more than
    ``max_case_flops``, and every case once the ``budget`` (timing.RunBudget) is spent. A
    contender predicted to need more than ``memory_budget`` bytes is skipped ("would need")."""
    not_run = [] if not_run is None else not_run
    for layer in layers:
        for n in batches:
            case = Case(layer, n)
            preskipped = {}
            for i, threads in enumerate(sorted(thread_counts, reverse=True)):
                why = _why_not_run(case, budget, max_case_flops)
                if why:
                    not_run.append({"study": "suite", "label": layer.name, "n": n,
                                    "threads": threads, "flops": case.flops, "reason": why})
                    progress.end()
                    if budget:
                        budget.case_done()
                    continue
                progress.begin(f"suite {layer.name} N={n} threads={threads}")
                if memory_budget:
                    preskipped.update(_over_budget(case, contenders, threads, memory_budget))
                with control.use(threads):
                    block = time_case(case, threads, contenders, options, progress,
                                      study="suite", label=layer.name, sgemm_size=sgemm_size,
                                      with_memory=(i == 0), preskipped=preskipped,
                                      budget=budget)
                progress.end()
                if budget:
                    budget.case_done()
                yield block
                preskipped.update(_clearly_too_slow(block, options))


def _why_not_run(case, budget, max_case_flops):
    if max_case_flops and case.n > 1 and case.flops > max_case_flops:
        return (f"{case.flops / 1e9:.0f} GFLOP, over the size cap for N > 1 "
                f"(--max-case-gflop {max_case_flops / 1e9:g})")
    if budget and budget.expired:
        return f"the time budget (--budget {budget.total_s / 60:g} min) was spent"
    return None


def _clearly_too_slow(block, options):
    """Contenders so far over the per-call limit at this thread count that fewer threads
    cannot bring them under it: not tried again (saves a slow first call in --quick)."""
    return {name: (f"too slow for this mode: already {e['call_s'] * 1e3:.3g} ms per call at "
                   f"{block['threads']} threads")
            for name, e in block["contenders"].items()
            if e["too_slow"] and e["call_s"] > 2 * options.max_call_s}


# --- scaling with the image size ------------------------------------------------------------

SCALING_LAYER = Layer("scaling", c=64, h=56, w=56, oc=64, kh=3, kw=3, padding=(1, 1))


def run_scaling(sizes, thread_counts, contenders, options, control, progress, budget_bytes,
                sgemm_size=None):
    """The 3x3 64->64 layer (N=1) at each H=W in ``sizes``. A method whose predicted workspace
    (im2row.workspace_bytes, computed before anything is allocated) exceeds the budget is
    reported as 'would need X GiB' and not run; so is every method of a size whose input and
    output alone exceed it. No per-call time limit here: large sizes are the point."""
    options = replace(options, max_call_s=math.inf)
    for size in sizes:
        layer = SCALING_LAYER.with_size(size, name=f"{size}x{size}")
        case = Case(layer, 1)            # arrays are made on first use, after the budget check
        for threads in sorted(thread_counts, reverse=True):
            progress.begin(f"scaling {layer.name} threads={threads}")
            preskipped = _over_budget(case, contenders, threads, budget_bytes)
            with control.use(threads):
                block = time_case(case, threads, contenders, options, progress,
                                  study="scaling", label=layer.name, sgemm_size=sgemm_size,
                                  with_memory=True, preskipped=preskipped)
            block["budget_bytes"] = budget_bytes
            progress.end()
            yield block


def _over_budget(case, contenders, threads, budget_bytes):
    """{contender name: 'would need X GiB ...'} for what must not run within the budget."""
    data = case.input_bytes + case.output_bytes * 2    # input, our output, PyTorch's output
    if data > budget_bytes:
        why = (f"would need {fmt_bytes(data)} for input and outputs alone "
               f"(budget {fmt_bytes(budget_bytes)})")
        return {c.name: why for c in contenders}
    skipped = {}
    for contender in contenders:
        predicted = contender.predicted_memory(case, threads)
        if predicted and data + predicted["workspace"] > budget_bytes:
            skipped[contender.name] = (f"would need {fmt_bytes(predicted['workspace'])} of "
                                       f"workspace (budget {fmt_bytes(budget_bytes)} with "
                                       f"{fmt_bytes(data)} of input and outputs)")
    return skipped


# --- the GEMM alone -----------------------------------------------------------------------------

def gemm_shapes(layers, squares):
    """(label, M, K, N) of the GEMMs behind the suite's layers (N=1): the whole im2row matrix
    (M = OH*OW) and one output column's (M = OH), K = C/g*KH*KW, N = OC/g; then squares.
    Grouped layers are left out (their per-group GEMMs are tiny: a batch of GEMVs)."""
    shapes, seen = [], set()
    for layer in layers:
        if layer.groups != 1:
            continue
        oh, ow = layer.out_hw
        k = layer.c * layer.kh * layer.kw
        for label, m in ((f"{layer.name} im2row", oh * ow), (f"{layer.name} column", oh)):
            if (m, k, layer.oc) not in seen:
                seen.add((m, k, layer.oc))
                shapes.append((label, m, k, layer.oc))
    for s in squares:
        if (s, s, s) not in seen:
            seen.add((s, s, s))
            shapes.append((f"square {s}", s, s, s))
    return shapes


def run_gemm(shapes, thread_counts, options, control, progress):
    """The package's GEMM (method "im2row" on a 1x1 stride-1 NHWC convolution, which lowers to
    nothing: M = N*H*W rows of K = C, times K x OC weights) against numpy matmul, same shapes,
    same rounds. Without the compiled extension only numpy runs."""
    contenders = [Im2rowContender("im2row", "NHWC"), MatmulContender()]
    if not im2row.backend_info()["compiled"]:
        contenders = contenders[1:]
    for label, m, k, n in shapes:
        layer = Layer(label.replace(" ", "_"), c=k, h=m, w=1, oc=n, kh=1, kw=1)
        case = Case(layer, 1, bias=False)
        for threads in sorted(thread_counts, reverse=True):
            progress.begin(f"gemm {label} (M={m} K={k} N={n}) threads={threads}")
            with control.use(threads):
                block = time_case(case, threads, contenders, options, progress, study="gemm",
                                  label=label, with_memory=True)
            block["gemm"] = {"m": m, "k": k, "n": n}
            progress.end()
            yield block

