"""--plot PATH.png: GFLOP/s per layer per contender, and memory (and time) against image size."""
from contenders import PEER_KINDS
from report import contender_rows, group_blocks, peaks_by_threads, sgemm_gflops

INSTALL_HINT = ("--plot needs matplotlib, which is not installed: pip install .[bench] "
                "(or pip install matplotlib)")


def matplotlib_available():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def save_plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suite_groups = group_blocks(result["blocks"], "suite")
    scaling_groups = group_blocks(result["blocks"], "scaling")
    panels = len(suite_groups) + 1 + bool(scaling_groups)
    widest = max((len(g) for g in suite_groups.values()), default=0)
    fig, axes = plt.subplots(panels, 1, figsize=(max(13, 0.5 * widest), 4.2 * panels),
                             squeeze=False)
    axes = list(axes[:, 0])
    peaks = peaks_by_threads(result)
    for ax, ((n, threads), group) in zip(axes, suite_groups.items()):
        plot_suite(ax, group, n, threads, peaks.get(threads))
    plot_memory(axes[len(suite_groups)], result.get("memory_curve"), scaling_groups)
    if scaling_groups:
        plot_scaling_time(axes[-1], scaling_groups)
    fig.suptitle(f"im2row benchmarks: {result['machine']['cpu_model']}, "
                 f"{result['machine']['date']}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (4.2 * panels)))   # room for the title
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_suite(ax, group, n, threads, peak=None):
    names = list(group[0]["contenders"])
    kinds = {name: e["kind"] for name, e in group[0]["contenders"].items()}
    labels = [b["label"] for b in group]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [contender_rows(b)[name]["gflops"] or 0 for b in group]
        ax.bar([x + (i - len(names) / 2 + 0.5) * width for x in range(len(group))], values,
               width, label=name, hatch="//" if kinds[name] in PEER_KINDS else None)
    rates = sorted(r for r in map(sgemm_gflops, group) if r)
    if rates:
        ax.axhline(rates[len(rates) // 2], color="k", linestyle="--", linewidth=0.8,
                   label="SGEMM probe (median)")
    if peak:
        ax.axhline(peak, color="r", linestyle=":", linewidth=0.8, label="FMA peak")
    ax.set_xticks(range(len(group)))
    ax.set_xticklabels(labels, rotation=20 if len(labels) <= 20 else 90, fontsize=7)
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"Layer suite, N={n}, {threads} thread{'s' * (threads > 1)} (missing bar: "
                 f"skipped)")
    ax.legend(fontsize=7, ncol=4)


def plot_memory(ax, curve, scaling_groups):
    """Predicted workspace per method against H=W (log-log), with the measured peaks of the
    scaling study as markers."""
    if curve:
        sizes = curve["sizes"]
        ax.plot(sizes, curve["input_bytes"], "k--", label="input itself (x1)")
        for method, values in curve["workspace"].items():
            ax.plot(sizes, values, marker=".", label=f"{method} workspace (predicted)")
        ax.set_title(f"Memory against image size: 3x3, 64 -> 64 channels, N=1, "
                     f"{curve['threads']} threads (im2row.workspace_bytes)")
    for (n, threads), group in scaling_groups.items():
        for name in group[0]["contenders"]:
            points = [(b["layer"]["h"], (b["contenders"][name]["memory"] or {}).get("peak"))
                      for b in group]
            points = [(s, p) for s, p in points if p]
            if points:
                ax.scatter(*zip(*points), marker="x", label=f"{name} measured ({threads} thr)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("H = W")
    ax.set_ylabel("bytes")
    ax.legend(fontsize=7, ncol=2)


def plot_scaling_time(ax, scaling_groups):
    for (n, threads), group in scaling_groups.items():
        for name in group[0]["contenders"]:
            points = [(b["layer"]["h"], contender_rows(b)[name]["gflops"]) for b in group]
            points = [(s, g) for s, g in points if g]
            if points:
                ax.plot(*zip(*points), marker="o", label=f"{name} ({threads} thr)")
    ax.set_xscale("log")
    ax.set_xlabel("H = W")
    ax.set_ylabel("GFLOP/s")
    ax.set_title("Speed against image size (scaling study)")
    ax.legend(fontsize=7, ncol=3)
