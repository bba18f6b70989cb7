"""Markdown tables (stdout) from the blocks of a run."""
from collections import defaultdict

from contenders import CHECK_TOLERANCE, PEER_KINDS
from fma import describe as fma_description
from headline import geometric_mean, peer_time, render_headline, summarise
from networks import LOGIT_TOLERANCE, network_ratios

GIB = 1 << 30


# --- formatting ---------------------------------------------------------------------------------

def markdown_table(headers, rows):
    """Lines of a markdown table; numbers right-aligned (by a '---:' rule)."""
    def is_number(text):
        return str(text).replace(".", "", 1).rstrip("x%").strip().isdigit()

    def numeric(column):
        cells = [row[column] for row in rows if row[column] not in ("", "—")]
        return bool(cells) and all(map(is_number, cells))
    align = ["---:" if numeric(i) else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def fmt_ms(seconds):
    if seconds is None:
        return "—"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def fmt_bytes(n):
    if n is None:
        return "—"
    for unit, size in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def fmt_multiple(n, base):
    return "—" if n is None or not base else f"{n / base:.2f}x"


def fmt_ratio(r):
    return "—" if r is None else f"{r:.2f}"


# --- per-block numbers --------------------------------------------------------------------------

def sgemm_gflops(block):
    s = block.get("sgemm")
    return s["flops"] / s["median_s"] / 1e9 if s and s.get("median_s") else None


def fastest_peer(block):
    """(name, median seconds) of the case's fastest peer (PyTorch in either layout, ONNX
    Runtime), or (None, None) if no peer ran."""
    return peer_time(block)


def best_peer_time(block):
    return fastest_peer(block)[1]


def contender_rows(block, peak=None):
    """{name: numbers} for one block: ms, GFLOP/s, % of SGEMM, % of the FMA peak (``peak``:
    GFLOP/s at the block's thread count, None if not measured), and the ratio to the fastest
    peer (its time / this contender's: > 1 means faster than every peer), and a note."""
    sgemm, peer_s = sgemm_gflops(block), best_peer_time(block)
    rows = {}
    for name, e in block["contenders"].items():
        t = e["median_s"]
        gflops = block["flops"] / t / 1e9 if t else None
        rows[name] = {
            "median_s": t, "gflops": gflops,
            "pct_sgemm": 100 * gflops / sgemm if gflops and sgemm else None,
            "pct_peak": 100 * gflops / peak if gflops and peak else None,
            "vs_peer": peer_s / t if t and peer_s else None,
            "note": entry_note(e),
        }
    return rows


def peaks_by_threads(result):
    """{threads: FMA peak GFLOP/s} of a run (empty if the probe did not run)."""
    return {p["threads"]: p["gflops"] for p in (result.get("fma") or {}).get("peak", [])}


def entry_note(e, with_reps=True):
    """Skipped (and why), a wrong result, or how many calls one sample made."""
    if e["skipped"]:
        return "skipped: " + e["skipped"]
    if e["check_error"] is not None and e["check_error"] > CHECK_TOLERANCE:
        return f"WRONG RESULT (relative error {e['check_error']:.1e})"
    if with_reps and e["reps"] and e["reps"] > 1:
        return f"{e['reps']} calls/sample"
    return ""


def group_blocks(blocks, study):
    """{(n, threads): [blocks]} of one study, in run order."""
    groups = defaultdict(list)
    for b in blocks:
        if b["study"] == study:
            groups[(b["n"], b["threads"])].append(b)
    return dict(sorted(groups.items()))


# --- sections -----------------------------------------------------------------------------------

def header(machine, config, fma_line=None):
    be = machine["im2row_backend"]
    v = machine["versions"]
    unset = machine.get("openblas_env_unset") or {}
    lines = ["# im2row microbenchmarks", "",
             f"- date: {machine['date']}; command: `{machine['command']}`",
             f"- CPU: {machine['cpu_model']}, {machine['cpus_available']} CPUs available; "
             f"im2row kernels: {be['isa']} (CPU supports {be['cpu_isa']}), "
             f"OpenMP {'on' if be['openmp'] else 'off'}, compiled: {be['compiled']}",
             f"- versions: im2row {v['im2row']}, numpy {v['numpy']}, torch {v['torch'] or '—'}, "
             f"onnxruntime {v.get('onnxruntime') or '—'}, threadpoolctl "
             f"{v['threadpoolctl'] or '—'}, python {v['python']}",
             f"- numpy BLAS: {machine['openblas_kernel']}"]
    load = machine.get("load_average_at_start")
    if load is not None:
        busy = load > 0.75
        lines.append(f"- load average (1 min) when the run started: {load:.2f}"
                     + (" — other processes were probably using the CPUs: the timings, the "
                        "multi-thread ones above all, may be unreliable" if busy else ""))
    if unset:
        lines.append("- removed from this process's environment before numpy loaded OpenBLAS: "
                     + ", ".join(f"{k}={val}" for k, val in unset.items()))
    if machine.get("openblas_thread_timeout"):
        lines.append(f"- OPENBLAS_THREAD_TIMEOUT={machine['openblas_thread_timeout']} (idle "
                     f"OpenBLAS threads stop spinning soon instead of holding a core while the "
                     f"next contender is timed)")
    for note in ("torch_note", "onnx_note"):
        if machine.get(note):
            lines.append(f"- {machine[note]}")
    if fma_line:
        lines.append(f"- {fma_line}")
    lines += [f"- timing: {config['rounds']} interleaved rounds per case (each contender once "
              f"per round, order rotating); median time per call. `conv2d` = one "
              f"im2row.conv2d call (the weights packed in every call); `plan` = an "
              f"im2row.Conv2d built once outside the timed region; both write into a "
              f"preallocated out=. `numpy im2col` = im2row's im2col method (column matrix, "
              f"NumPy matmul), the baseline. Peers: PyTorch (torch.nn.functional.conv2d under "
              f"no_grad; allocates its output on every call) in NCHW and channels_last, and "
              f"ONNX Runtime (a one-node Conv model, intra-op threads = the thread count, "
              f"ORT_ENABLE_ALL, output bound once).",
              "- vs peer = time of the case's fastest peer / this contender's time (> 1: faster "
              "than every peer). % peak = GFLOP/s / the FMA peak at that thread count."]
    if not config.get("blas_threads_controlled", True):
        lines.append("- threadpoolctl is missing: OpenBLAS thread counts were NOT limited "
                     "(pip install threadpoolctl)")
    return lines


def suite_section(blocks, peaks=None):
    """Per (N, threads): every layer and contender. The % peak column only if the FMA peak
    was measured."""
    peaks = peaks or {}
    lines = []
    for (n, threads), group in group_blocks(blocks, "suite").items():
        peak = peaks.get(threads)
        lines += ["", f"## Layer suite, N={n}, {threads} thread{'s' * (threads > 1)}", ""]
        rows, ratios = [], defaultdict(list)
        for block in group:
            numbers = contender_rows(block, peak)
            for i, (name, r) in enumerate(numbers.items()):
                rows.append([block["label"] if i == 0 else "", name, fmt_ms(r["median_s"]),
                             _fmt(r["gflops"], "{:.1f}")]
                            + ([_fmt(r["pct_peak"], "{:.0f}%")] if peak else [])
                            + [fmt_ratio(r["vs_peer"]), _round_note(block, r["note"], i)])
                if block["contenders"][name]["kind"] not in PEER_KINDS:
                    ratios[name].append(r["vs_peer"])
        lines += markdown_table(["layer", "contender", "ms", "GFLOP/s"]
                                + (["% peak"] if peak else []) + ["vs peer", "note"], rows)
        lines += ["", "Geometric mean of vs peer: " + _geomeans(ratios)]
        if peak:
            lines.append(f"FMA peak at {threads} thread{'s' * (threads > 1)}: {peak:.1f} "
                         f"GFLOP/s.")
        rates = [sgemm_gflops(b) for b in group if sgemm_gflops(b)]
        if rates:
            size = group[0]["sgemm"]["size"]
            lines.append(f"SGEMM probe ({size}^3 float32 matmul): median "
                         f"{sorted(rates)[len(rates) // 2]:.1f} GFLOP/s over the cases "
                         f"(range {min(rates):.1f}-{max(rates):.1f}).")
    return lines


def _geomeans(ratios):
    parts = []
    for name, values in ratios.items():
        g = geometric_mean(values)
        if g is not None:
            parts.append(f"{name} {g:.2f} ({len([v for v in values if v])})")
    return ", ".join(parts) if parts else "— (no peer timings)"


def _round_note(block, note, index):
    """The note of a row; the case's first row also says if the budget cut its rounds."""
    wanted = block.get("rounds_wanted")
    if index == 0 and wanted and block["rounds"] < wanted:
        cut = f"{block['rounds']} of {wanted} rounds (--budget)"
        return f"{cut}; {note}" if note else cut
    return note


def _fmt(value, pattern):
    return "—" if value is None else pattern.format(value)


def ratio_matrix_section(blocks):
    """The suite at a glance: vs peer per layer (rows) and contender (columns), and which
    peer was the fastest."""
    lines = []
    for (n, threads), group in group_blocks(blocks, "suite").items():
        if all(best_peer_time(b) is None for b in group):
            continue
        names = [k for k, e in group[0]["contenders"].items() if e["kind"] not in PEER_KINDS]
        lines += ["", f"### vs the fastest peer at a glance, N={n}, {threads} thread"
                  f"{'s' * (threads > 1)} (> 1: faster than every peer)", ""]
        rows = []
        for block in group:
            numbers = contender_rows(block)
            rows.append([block["label"]] + [fmt_ratio(numbers[k]["vs_peer"])
                                            if k in numbers else "—" for k in names]
                        + [fastest_peer(block)[0] or "—"])
        lines += markdown_table(["layer"] + names + ["fastest peer"], rows)
    return lines


def memory_section(blocks):
    """Per layer and im2row method: predicted workspace and copied bytes
    (im2row.workspace_bytes) and the measured peak, each also as a multiple of the input."""
    lines = []
    for (n, threads), group in group_blocks(blocks, "suite").items():
        group = [b for b in group if any(e["predicted"] for e in b["contenders"].values())]
        if not group:
            continue
        lines += ["", f"## Memory, N={n} (workspace with {threads} thread"
                  f"{'s' * (threads > 1)}; x = multiple of the input's size)", ""]
        rows = []
        for block in group:
            first = True
            for name, e in block["contenders"].items():
                if e["kind"] != "im2row" or e.get("api") == "conv2d":
                    continue
                rows.append([block["label"] if first else "", name]
                            + memory_cells(e, block["input_bytes"]))
                first = False
        lines += markdown_table(["layer", "method", "workspace", "x", "copied", "x",
                                 "packed weights", "measured peak", "x", "measured by"], rows)
    if lines:
        lines += ["", "Measured peak: the extension's own accounting of its scratch memory "
                  "(Conv2d.measure) for the compiled methods; the tracemalloc peak of NumPy's "
                  "allocations during one call for im2col/numpy. A conv2d call uses what its "
                  "plan does. PyTorch's and ONNX Runtime's memory is not measured."]
    return lines


def memory_cells(e, input_bytes):
    p = e["predicted"] or {}
    m = e["memory"] or {}
    peak = m.get("peak")
    return [fmt_bytes(p.get("workspace")), fmt_multiple(p.get("workspace"), input_bytes),
            fmt_bytes(p.get("copied")), fmt_multiple(p.get("copied"), input_bytes),
            fmt_bytes(p.get("packed_weights")), fmt_bytes(peak),
            fmt_multiple(peak, input_bytes), m.get("source", "—")]


def scaling_section(blocks, peaks=None):
    peaks = peaks or {}
    lines = []
    for (n, threads), group in group_blocks(blocks, "scaling").items():
        peak = peaks.get(threads)
        lines += ["", f"## Scaling with the image size: 3x3, 64 -> 64 channels, N={n}, "
                  f"{threads} thread{'s' * (threads > 1)}", ""]
        rows = []
        for block in group:
            numbers = contender_rows(block, peak)
            for i, (name, e) in enumerate(block["contenders"].items()):
                r = numbers[name]
                p = e["predicted"] or {}
                measured = (e["memory"] or {}).get("peak")
                rows.append([block["label"] if i == 0 else "", name, fmt_ms(r["median_s"]),
                             _fmt(r["gflops"], "{:.1f}")]
                            + ([_fmt(r["pct_peak"], "{:.0f}%")] if peak else [])
                            + [fmt_ratio(r["vs_peer"]), fmt_bytes(p.get("workspace")),
                               fmt_multiple(p.get("workspace"), block["input_bytes"]),
                               fmt_bytes(measured), r["note"]])
        lines += markdown_table(["H=W", "contender", "ms", "GFLOP/s"]
                                + (["% peak"] if peak else []) + ["vs peer", "workspace",
                                                                  "x input", "measured peak",
                                                                  "note"], rows)
        budget = group[0].get("budget_bytes")
        if budget:
            lines.append(f"\nMemory budget: {fmt_bytes(budget)} (--memory-budget); methods "
                         f"predicted to exceed it (im2row.workspace_bytes, input and outputs "
                         f"included) were not run.")
    return lines


def gemm_section(blocks):
    lines = []
    for (n, threads), group in group_blocks(blocks, "gemm").items():
        lines += ["", f"## GEMM alone: im2row's GEMM (method im2row on a 1x1 NHWC convolution) "
                  f"vs numpy matmul, {threads} thread{'s' * (threads > 1)}", ""]
        rows, ratios = [], []
        for block in group:
            g, c = block["gemm"], block["contenders"]
            ours, ref = c.get("plan im2row NHWC") or c.get("im2row NHWC"), c["numpy matmul"]
            ratio = (ref["median_s"] / ours["median_s"]
                     if ours and ours["median_s"] and ref["median_s"] else None)
            ratios.append(ratio)
            copied = ((ours or {}).get("predicted") or {}).get("copied")
            rows.append([block["label"], g["m"], g["k"], g["n"],
                         fmt_ms(ours and ours["median_s"]), _gflops(block, ours),
                         fmt_ms(ref["median_s"]), _gflops(block, ref), fmt_ratio(ratio),
                         fmt_bytes(copied),
                         "; ".join(entry_note(e, with_reps=False) for e in (ours, ref)
                                   if e and entry_note(e, with_reps=False))])
        lines += markdown_table(["shape", "M", "K", "N", "im2row ms", "GFLOP/s", "numpy ms",
                                 "GFLOP/s", "numpy/im2row", "copied", "note"], rows)
        g = geometric_mean(ratios)
        lines.append("\nGeometric mean numpy time / im2row time: "
                     + ("—" if g is None else f"{g:.2f}") + " (> 1: the package's GEMM is "
                     "faster; 'copied' = bytes the call copied, 0 means a pure GEMM)")
    return lines


def _gflops(block, entry):
    if not entry or not entry["median_s"]:
        return "—"
    return f"{block['flops'] / entry['median_s'] / 1e9:.1f}"


def not_run_section(not_run):
    if not not_run:
        return []
    rows = [[e["study"], e["label"], e["n"], e["threads"], e["reason"]] for e in not_run]
    return ["", "## Not run", ""] + markdown_table(["study", "case", "N", "threads", "why"],
                                                   rows)


def networks_section(records):
    """Per network, batch size and thread count: each variant's time per forward pass, the
    convolutions' GFLOP/s, its ratios to the faster torch F / torch.nn layout, logit error."""
    lines = []
    for record in records:
        ratios = network_ratios(record)
        lines += ["", f"## Network {record['label']}, N={record['n']}, {record['threads']} "
                  f"thread{'s' * (record['threads'] > 1)} ({record['size']}x{record['size']} "
                  f"input, {record['rounds']} rounds, logits checked against "
                  f"{record['reference']})", ""]
        rows = []
        for name, v in record["variants"].items():
            t = v["median_s"]
            vs_f, vs_nn = ratios.get(name, (None, None))
            error = v["logit_error"]
            note = ("skipped: " + v["skipped"] if v["skipped"] else
                    f"DIFFERENT LOGITS (relative error {error:.1e})"
                    if error is not None and error > LOGIT_TOLERANCE else "")
            rows.append([name, fmt_ms(t), _fmt(record["flops"] / t / 1e9 if t else None,
                                               "{:.1f}"),
                         fmt_ratio(vs_f), fmt_ratio(vs_nn),
                         "—" if error is None else f"{error:.1e}", note])
        lines += markdown_table(["variant", "ms", "conv GFLOP/s", "vs torch F", "vs torch.nn",
                                 "logit error", "note"], rows)
    if lines:
        lines += ["", "vs torch F / vs torch.nn = time of the faster layout of the same network "
                  "with torch.nn.functional.conv2d (NumPy glue) / as torch.nn modules, divided by "
                  "this variant's time (> 1: faster). conv GFLOP/s = the convolutions' FLOPs / "
                  "the whole forward pass's time."]
    return lines


def render(result):
    """The whole markdown report of a run: the detailed tables, then the headline."""
    blocks = result["blocks"]
    peaks = peaks_by_threads(result)
    fma_line = fma_description(result.get("fma"))
    lines = header(result["machine"], result["config"], fma_line)
    lines += suite_section(blocks, peaks) + ratio_matrix_section(blocks)
    lines += memory_section(blocks) + scaling_section(blocks, peaks) + gemm_section(blocks)
    lines += networks_section(result.get("networks", []))
    lines += not_run_section(result.get("not_run", []))
    if result.get("interrupted"):
        lines += ["", "**Interrupted: the tables above are partial.**"]
    lines += render_headline(result.get("headline") or summarise(result))
    return "\n".join(lines) + "\n"
