"""--compare A.json B.json: per case and contender, time in A / time in B (> 1: B is faster).

Runs on different days see different machine speeds, so the SGEMM probe's ratio is shown
alongside: if it moved too, the machine did, not the code.
"""
import json

from report import fmt_ms, geometric_mean, markdown_table


def load_run(path):
    with open(path) as f:
        run = json.load(f)
    if "blocks" not in run:
        raise ValueError(f"{path} is not a saved benchmark run (no 'blocks'); make one with "
                         f"--json PATH")
    return run


def block_key(block):
    return (block["study"], block["label"], block["n"], block["threads"])


def ratio_rows(run_a, run_b):
    """[(key, contender, time A, time B, A/B)] for every timing present in both runs."""
    b_blocks = {block_key(b): b for b in run_b["blocks"]}
    rows = []
    for a in run_a["blocks"]:
        b = b_blocks.get(block_key(a))
        if b is None:
            continue
        pairs = [(name, entry.get("median_s"), b["contenders"].get(name, {}).get("median_s"))
                 for name, entry in a["contenders"].items()]
        if a.get("sgemm") and b.get("sgemm"):
            pairs.append(("sgemm probe", a["sgemm"].get("median_s"), b["sgemm"].get("median_s")))
        for name, ta, tb in pairs:
            if ta and tb:
                rows.append((block_key(a), name, ta, tb, ta / tb))
    return rows


def render_comparison(path_a, path_b):
    run_a, run_b = load_run(path_a), load_run(path_b)
    rows = ratio_rows(run_a, run_b)
    lines = [f"# {path_b} against {path_a}", "",
             f"- A: {run_a['machine']['date']}, {run_a['machine']['cpu_model']}",
             f"- B: {run_b['machine']['date']}, {run_b['machine']['cpu_model']}",
             "- ratio = time in A / time in B (> 1: B is faster). The SGEMM probe's ratio shows "
             "how much the machine itself moved.", ""]
    if not rows:
        return "\n".join(lines + ["No case appears in both runs."]) + "\n"
    table, by_contender = [], {}
    for (study, label, n, threads), name, ta, tb, ratio in rows:
        table.append([study, label, n, threads, name, fmt_ms(ta), fmt_ms(tb), f"{ratio:.3f}"])
        by_contender.setdefault(name, []).append(ratio)
    lines += markdown_table(["study", "case", "N", "threads", "contender", "A ms", "B ms",
                             "A/B"], table)
    lines += ["", "Geometric mean A/B per contender: " + ", ".join(
        f"{name} {geometric_mean(v):.3f}" for name, v in by_contender.items())]
    return "\n".join(lines) + "\n"
