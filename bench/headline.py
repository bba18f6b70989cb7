"""The headline printed at the end of every run and saved in the JSON: how im2row stands.

Per im2row contender (``conv2d`` / ``plan`` in each layout, method "auto"), thread count and
batch size: the geometric mean over the layer suite of its ratio against the case's fastest
peer (the peer's time / im2row's: > 1 means im2row is faster), and its worst layer. Then the
whole networks' ratios (against the same network with torch.nn.functional.conv2d, and as
torch.nn modules) and the measured FMA peak.
"""
import math
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
    return {"suite": suite, "fastest_peer_counts": fastest,
            "networks": network_summary(result.get("networks", [])),
            "fma_peak": fma.get("peak", []), "fma_error": fma.get("error"),
            "fma_per_core": [r for r in fma.get("rates", []) if r["threads"] == 1],
            "not_run": len(result.get("not_run", []))}


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
    if summary["not_run"]:
        lines.append(f"\n{summary['not_run']} case(s) not run (size cap or time budget): see "
                     f"'Not run' above.")
    return lines
