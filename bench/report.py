"""Markdown tables (stdout) from the blocks of a run."""
import math
from collections import defaultdict

from contenders import CHECK_TOLERANCE

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


def geometric_mean(values):
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


# --- per-block numbers --------------------------------------------------------------------------

def sgemm_gflops(block):
    s = block.get("sgemm")
    return s["flops"] / s["median_s"] / 1e9 if s and s.get("median_s") else None


def best_torch_time(block):
    times = [e["median_s"] for e in block["contenders"].values()
             if e["kind"] == "torch" and e["median_s"]]
    return min(times) if times else None


def contender_rows(block):
    """{name: numbers} for one block: ms, GFLOP/s, % of SGEMM, ratio to the faster PyTorch
    layout (torch time / our time: > 1 means faster than PyTorch), and a note."""
    sgemm, torch_s = sgemm_gflops(block), best_torch_time(block)
    rows = {}
    for name, e in block["contenders"].items():
        t = e["median_s"]
        gflops = block["flops"] / t / 1e9 if t else None
        rows[name] = {
            "median_s": t, "gflops": gflops,
            "pct_sgemm": 100 * gflops / sgemm if gflops and sgemm else None,
            "vs_torch": torch_s / t if t and torch_s else None,
            "note": entry_note(e),
        }
    return rows


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

def header(machine, config):
    be = machine["im2row_backend"]
    v = machine["versions"]
    unset = machine.get("openblas_env_unset") or {}
    lines = ["# im2row microbenchmarks", "",
             f"- date: {machine['date']}; command: `{machine['command']}`",
             f"- CPU: {machine['cpu_model']}, {machine['cpus_available']} CPUs available; "
             f"im2row kernels: {be['isa']} (CPU supports {be['cpu_isa']}), "
             f"OpenMP {'on' if be['openmp'] else 'off'}, compiled: {be['compiled']}",
             f"- versions: im2row {v['im2row']}, numpy {v['numpy']}, torch {v['torch'] or '—'}, "
             f"threadpoolctl {v['threadpoolctl'] or '—'}, python {v['python']}",
             f"- numpy BLAS: {machine['openblas_kernel']}"]
    if unset:
        lines.append("- removed from this process's environment before numpy loaded OpenBLAS: "
                     + ", ".join(f"{k}={val}" for k, val in unset.items()))
    if machine.get("openblas_thread_timeout"):
        lines.append(f"- OPENBLAS_THREAD_TIMEOUT={machine['openblas_thread_timeout']} (idle "
                     f"OpenBLAS threads stop spinning soon instead of holding a core while the "
                     f"next contender is timed)")
    if machine.get("torch_note"):
        lines.append(f"- {machine['torch_note']}")
    lines += [f"- timing: {config['rounds']} interleaved rounds per case (each contender once "
              f"per round, order rotating); median time per call. im2row plans "
              f"(im2row.Conv2d) are built once outside the timed region and write into a "
              f"preallocated out=; PyTorch (torch.nn.functional.conv2d under no_grad) "
              f"allocates its output on every call.",
              "- vs PyTorch = time of the faster PyTorch layout / our time (> 1: we are faster). "
              "% SGEMM = GFLOP/s / the numpy float32 matmul probe timed in the same rounds."]
    if not config.get("blas_threads_controlled", True):
        lines.append("- threadpoolctl is missing: OpenBLAS thread counts were NOT limited "
                     "(pip install threadpoolctl)")
    return lines


def suite_section(blocks):
    lines = []
    for (n, threads), group in group_blocks(blocks, "suite").items():
        lines += ["", f"## Layer suite, N={n}, {threads} thread{'s' * (threads > 1)}", ""]
        rows, ratios = [], defaultdict(list)
        for block in group:
            numbers = contender_rows(block)
            for i, (name, r) in enumerate(numbers.items()):
                rows.append([block["label"] if i == 0 else "", name, fmt_ms(r["median_s"]),
                             _fmt(r["gflops"], "{:.1f}"), _fmt(r["pct_sgemm"], "{:.0f}%"),
                             fmt_ratio(r["vs_torch"]), r["note"]])
                ratios[name].append(r["vs_torch"])
        lines += markdown_table(["layer", "contender", "ms", "GFLOP/s", "% SGEMM",
                                 "vs PyTorch", "note"], rows)
        lines += ["", "Geometric mean of vs PyTorch: " + _geomeans(ratios)]
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
    return ", ".join(parts) if parts else "— (no PyTorch timings)"


def _fmt(value, pattern):
    return "—" if value is None else pattern.format(value)


def ratio_matrix_section(blocks):
    """The suite at a glance: vs PyTorch per layer (rows) and contender (columns)."""
    lines = []
    for (n, threads), group in group_blocks(blocks, "suite").items():
        if all(best_torch_time(b) is None for b in group):
            continue
        names = [k for k, e in group[0]["contenders"].items() if e["kind"] != "torch"]
        lines += ["", f"### vs PyTorch at a glance, N={n}, {threads} thread"
                  f"{'s' * (threads > 1)} (> 1: faster than PyTorch)", ""]
        rows = []
        for block in group:
            numbers = contender_rows(block)
            rows.append([block["label"]] + [fmt_ratio(numbers[k]["vs_torch"]) for k in names])
        lines += markdown_table(["layer"] + names, rows)
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
                if e["kind"] != "im2row":
                    continue
                rows.append([block["label"] if first else "", name]
                            + memory_cells(e, block["input_bytes"]))
                first = False
        lines += markdown_table(["layer", "method", "workspace", "x", "copied", "x",
                                 "packed weights", "measured peak", "x", "measured by"], rows)
    if lines:
        lines += ["", "Measured peak: the extension's own accounting of its scratch memory "
                  "(Conv2d.measure) for i2r/im2row; the tracemalloc peak of NumPy's allocations "
                  "during one call for im2col/numpy. PyTorch's memory is not measured."]
    return lines


def memory_cells(e, input_bytes):
    p = e["predicted"] or {}
    m = e["memory"] or {}
    peak = m.get("peak")
    return [fmt_bytes(p.get("workspace")), fmt_multiple(p.get("workspace"), input_bytes),
            fmt_bytes(p.get("copied")), fmt_multiple(p.get("copied"), input_bytes),
            fmt_bytes(p.get("packed_weights")), fmt_bytes(peak),
            fmt_multiple(peak, input_bytes), m.get("source", "—")]


def scaling_section(blocks):
    lines = []
    for (n, threads), group in group_blocks(blocks, "scaling").items():
        lines += ["", f"## Scaling with the image size: 3x3, 64 -> 64 channels, N={n}, "
                  f"{threads} thread{'s' * (threads > 1)}", ""]
        rows = []
        for block in group:
            numbers = contender_rows(block)
            for i, (name, e) in enumerate(block["contenders"].items()):
                r = numbers[name]
                p = e["predicted"] or {}
                peak = (e["memory"] or {}).get("peak")
                rows.append([block["label"] if i == 0 else "", name, fmt_ms(r["median_s"]),
                             _fmt(r["gflops"], "{:.1f}"), fmt_ratio(r["vs_torch"]),
                             fmt_bytes(p.get("workspace")),
                             fmt_multiple(p.get("workspace"), block["input_bytes"]),
                             fmt_bytes(peak), r["note"]])
        lines += markdown_table(["H=W", "contender", "ms", "GFLOP/s", "vs PyTorch",
                                 "workspace", "x input", "measured peak", "note"], rows)
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
            ours, ref = c.get("im2row NHWC"), c["numpy matmul"]
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


def render(result):
    """The whole markdown report of a run."""
    blocks = result["blocks"]
    lines = header(result["machine"], result["config"])
    lines += suite_section(blocks) + ratio_matrix_section(blocks) + memory_section(blocks)
    lines += scaling_section(blocks) + gemm_section(blocks)
    if result.get("interrupted"):
        lines += ["", "**Interrupted: the tables above are partial.**"]
    return "\n".join(lines) + "\n"
