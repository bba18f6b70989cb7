"""The headline printed at the end of every run and saved in the JSON: how im2row stands.

Per im2row contender (``conv2d`` / ``plan`` in each layout, method "auto"), thread count and
batch size: the geometric mean over the layer suite of its ratio against the case's fastest
peer (the peer's time / im2row's: > 1 means im2row is faster), and its worst layer. Then the
whole networks' ratios (against the same network with torch.nn.functional.conv2d, and as
torch.nn modules) and the measured FMA peak.
"""
import math
import statistics
from collections import Counter, defaultdict

from contenders import PEER_KINDS
from networks import network_ratios

HEADLINE_APIS = ("conv2d", "plan")


def geometric_mean(values):
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def peer_time(block):
    """(name, seconds) of the block's fastest peer, or (None, None)."""
    best = min(((e["median_s"], name) for name, e in block["contenders"].items()
                if e["kind"] in PEER_KINDS and e["median_s"]), default=None)
    return (None, None) if best is None else (best[1], best[0])


def headline_contenders(block):
    """The block's contenders the headline covers: im2row's auto conv2d and plan."""
    return [name for name, e in block["contenders"].items()
            if e["kind"] == "im2row" and e.get("method") == "auto"
            and e.get("api") in HEADLINE_APIS]


def suite_summary(blocks):
    """[{contender, threads, n, geomean, layers, worst: {label, ratio}, below_095}] sorted by
    contender, threads, n; plus {peer name: how many cases it was the fastest peer}."""
    ratios, fastest = defaultdict(list), Counter()
    for block in blocks:
        if block.get("study") != "suite":
            continue
        peer, peer_s = peer_time(block)
        if peer is None:
            continue
        fastest[peer] += 1
        for name in headline_contenders(block):
            t = block["contenders"][name]["median_s"]
            if t:
                ratios[(name, block["threads"], block["n"])].append((peer_s / t,
                                                                     block["label"]))
    rows = []
    for (name, threads, n), values in sorted(ratios.items()):
        worst_ratio, worst_label = min(values)
        rows.append({"contender": name, "threads": threads, "n": n,
                     "geomean": geometric_mean([r for r, _ in values]), "layers": len(values),
                     "worst": {"label": worst_label, "ratio": worst_ratio},
                     "below_095": sum(r < 0.95 for r, _ in values)})
    return rows, dict(fastest.most_common())


def is_gemm_bound(layer):
    """The issue's GEMM-bound class: 3x3, not grouped, at least 64 input channels."""
    return (layer["kh"], layer["kw"], layer["groups"]) == (3, 3, 1) and layer["c"] >= 64


def peak_summary(blocks, peaks):
    """[{contender, threads, median_pct, worst_pct, worst_label, layers}]: % of the FMA peak
    of im2row's contenders on the GEMM-bound layers (every batch size), per thread count."""
    pct = defaultdict(list)
    for block in blocks:
        peak = peaks.get(block["threads"])
        if block.get("study") != "suite" or not peak or not is_gemm_bound(block["layer"]):
            continue
        for name in headline_contenders(block):
            t = block["contenders"][name]["median_s"]
            if t:
                pct[(name, block["threads"])].append(
                    (100 * block["flops"] / t / 1e9 / peak, f"{block['label']} N={block['n']}"))
    rows = []
    for (name, threads), values in sorted(pct.items()):
        worst, label = min(values)
        rows.append({"contender": name, "threads": threads, "layers": len(values),
                     "median_pct": statistics.median(v for v, _ in values),
                     "worst_pct": worst, "worst_label": label})
    return rows


def network_summary(records):
    """[{network, n, threads, variant, vs_functional, vs_modules}] for im2row's variants."""
    rows = []
    for record in records:
        for name, (vs_functional, vs_modules) in network_ratios(record).items():
            rows.append({"network": record["label"], "n": record["n"],
                         "threads": record["threads"], "variant": name,
                         "vs_functional": vs_functional, "vs_modules": vs_modules})
    return rows


def summarise(result):
    """The headline's numbers (JSON-ready)."""
    suite, fastest = suite_summary(result.get("blocks", []))
    fma = result.get("fma") or {}
    peaks = {p["threads"]: p["gflops"] for p in fma.get("peak", [])}
    return {"suite": suite, "fastest_peer_counts": fastest,
            "gemm_bound_peak": peak_summary(result.get("blocks", []), peaks),
            "networks": network_summary(result.get("networks", [])),
            "fma_peak": fma.get("peak", []), "fma_error": fma.get("error"),
            "fma_per_core": [r for r in fma.get("rates", []) if r["threads"] == 1],
            "not_run": len(result.get("not_run", []))}


def busy_cores(peaks, expected=0.75):
    """Warnings where T threads' FMA peak is below ``expected`` x T times one thread's: the
    cores were not free (other processes), so that thread count's timings are suspect."""
    one = next((p["gflops"] for p in peaks if p["threads"] == 1), None)
    return [f"{p['threads']} threads reached only {p['gflops'] / one:.1f}x one thread's FMA "
            f"peak: the cores were busy (other processes?); {p['threads']}-thread ratios are "
            f"unreliable" for p in peaks
            if one and p["threads"] > 1 and p["gflops"] < expected * p["threads"] * one]


def _x(value):
    return "—" if value is None else f"{value:.2f}x"


def render_headline(summary):
    """At most ~25 lines of markdown."""
    lines = ["", "## Headline", ""]
    if summary["fma_error"]:
        lines.append(f"- FMA peak: not measured ({summary['fma_error']})")
    elif summary["fma_peak"]:
        per_core = ", ".join(f"{r['isa']} {r['gflops']:.0f}" for r in summary["fma_per_core"])
        total = ", ".join(f"{p['threads']} threads {p['gflops']:.0f}"
                          for p in summary["fma_peak"] if p["threads"] > 1)
        lines.append(f"- FMA peak: {per_core} GFLOP/s per core" + (f"; {total}" if total else ""))
        lines += [f"- WARNING: {text}" for text in busy_cores(summary["fma_peak"])]
    if summary["suite"]:
        counts = summary["fastest_peer_counts"]
        lines.append("- im2row against the fastest peer per case (its time / im2row's; > 1: "
                     "faster). Fastest peer: " + ", ".join(f"{k} in {v} cases" for k, v in
                                                           counts.items()))
        batches = sorted({r["n"] for r in summary["suite"]})
        header = ["contender", "threads"]
        for n in batches:
            header += [f"N={n} geomean", f"N={n} worst layer"]
        table = defaultdict(dict)
        for r in summary["suite"]:
            table[(r["contender"], r["threads"])][r["n"]] = r
        lines += ["", "| " + " | ".join(header) + " |",
                  "|---|---:|" + "---:|---|" * len(batches)]
        for (name, threads), by_n in table.items():
            cells = [name, str(threads)]
            for n in batches:
                r = by_n.get(n)
                cells += ([f"{_x(r['geomean'])} ({r['layers']}, {r['below_095']} < 0.95)",
                           f"{_x(r['worst']['ratio'])} {r['worst']['label']}"]
                          if r else ["—", "—"])
            lines.append("| " + " | ".join(cells) + " |")
    by_threads = defaultdict(list)
    for r in summary.get("gemm_bound_peak", []):
        by_threads[r["threads"]].append(r)
    if by_threads:
        lines.append("")
    for threads, rows in sorted(by_threads.items()):
        lines.append(f"- GEMM-bound layers (3x3, C >= 64; {rows[0]['layers']} cases), % of the "
                     f"FMA peak at {threads} thread{'s' * (threads > 1)}, median (worst): "
                     + ", ".join(f"{r['contender']} {r['median_pct']:.0f}% "
                                 f"({r['worst_pct']:.0f}%)" for r in rows))
    if summary["networks"]:
        lines += ["", "Whole networks (torch F conv2d time / im2row's, torch.nn time / "
                  "im2row's; the faster torch layout):", ""]
        names = list(dict.fromkeys(r["variant"] for r in summary["networks"]))
        lines += ["| network | N | threads | " + " | ".join(names) + " |",
                  "|---|---:|---:|" + "---:|" * len(names)]
        table, order = defaultdict(dict), {}
        for r in summary["networks"]:
            order.setdefault(r["network"], len(order))
            table[(r["network"], r["n"], r["threads"])][r["variant"]] = r
        for (network, n, threads), by_variant in sorted(
                table.items(), key=lambda item: (order[item[0][0]],) + item[0][1:]):
            cells = [f"{_x(by_variant[v]['vs_functional'])} / {_x(by_variant[v]['vs_modules'])}"
                     if v in by_variant else "—" for v in names]
            lines.append(f"| {network} | {n} | {threads} | " + " | ".join(cells) + " |")
    if not summary["suite"] and not summary["networks"]:
        lines.append("- nothing to compare: no suite case timed im2row's conv2d or plan (method "
                     "auto) beside a peer, and no whole network ran")
    if summary["not_run"]:
        lines.append(f"\n{summary['not_run']} case(s) not run (size cap or time budget): see "
                     f"'Not run' above.")
    return lines
