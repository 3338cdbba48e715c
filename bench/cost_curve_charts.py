"""The PNG charts of ``cost_curve.py``: one figure per part, from its results dict.

Place in the architecture: a helper of the benchmark script ``bench/cost_curve.py`` (outside
the package), split from it to keep each module short. It imports matplotlib only inside
``charts`` (the optional ``plot`` extra), with the Agg backend (no display needed); without
matplotlib ``charts`` says why and draws nothing. The figures: ``inflight.png`` (writes/s and
p50/p99 against requests in flight), ``value_size.png`` (writes/s, MB/s against the disk's
sequential speed, p50/p99 against value size), ``keys.png`` (bytes per key, write rates,
snapshot time and size, restart and catch-up times, peak memory against key count) and
``nodes.png`` (writes/s and p50/p99 against cluster size).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["charts"]

def plain_log(ax, axis: str = "y", base: float = 10) -> None:
    """A log scale whose tick labels are plain numbers (1, 2, 5, 10, not 10^0)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis_obj = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log", base=base)
    if base == 10:
        axis_obj.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis_obj.set_major_formatter(FuncFormatter(lambda v, _pos: human(v)))
    axis_obj.set_minor_formatter(NullFormatter())


def human(v: float) -> str:
    """1, 0.5, 200, 10k, 2M: a tick label."""
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def latency_axis(ax, xs, rows, xlabel: str) -> None:
    ax.plot(xs, [r["p50_ms"] for r in rows], "o-", label="p50")
    ax.plot(xs, [r["p99_ms"] for r in rows], "s-", label="p99")
    plain_log(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("latency, ms")
    ax.legend()


def chart_inflight(plt, r: dict, out: Path) -> Path:
    rows = r["rows"]
    xs = [x["inflight"] for x in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    a.plot(xs, [x["writes_per_s"] for x in rows], "o-")
    a.set_ylabel("writes/s")
    latency_axis(b, xs, rows, "requests in flight")
    for ax in (a, b):
        plain_log(ax, "x", 2)
        ax.set_xlabel("requests in flight")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"fastraft: writes against requests in flight (3 nodes, "
                 f"{r['value_size']} B values)")
    return save(plt, fig, out / "inflight.png")


def chart_size(plt, r: dict, out: Path) -> Path:
    rows = r["rows"]
    xs = [x["value_size"] for x in rows]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))
    a.plot(xs, [x["writes_per_s"] for x in rows], "o-")
    a.set_ylabel("writes/s")
    plain_log(a)
    b.plot(xs, [x["values_mb_s"] for x in rows], "o-", label="values MB/s")
    b.plot(xs, [3 * x["values_mb_s"] for x in rows], "s--", label="x3 (three WALs)")
    b.axhline(r["disk"]["mb_s"], color="red",
              label=f"disk, sequential: {r['disk']['mb_s']} MB/s")
    b.set_ylabel("MB/s")
    plain_log(b)
    b.legend(fontsize=8)
    latency_axis(c, xs, rows, "value bytes")
    for ax in (a, b, c):
        plain_log(ax, "x", 2)
        ax.set_xlabel("value bytes")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"fastraft: writes against value size (3 nodes, {r['inflight']} in flight)")
    return save(plt, fig, out / "value_size.png")


def chart_keys(plt, r: dict, out: Path) -> Path:
    runs = r["runs"]
    xs = [x["keys"] for x in runs]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    (a, b, c), (d, e, f) = axes
    for nid in sorted(runs[0]["after_snapshot"]):
        a.plot(xs, [x["after_snapshot"][nid]["bytes_per_key"] for x in runs], "o-",
               label=f"node {nid}")
    kv, target = r["key_value_bytes"], r["target_overhead_bytes"]
    a.axhline(kv, color="grey", ls=":", label="key + value bytes")
    a.axhline(kv + target, color="red", ls="--", label=f"target ({target} B overhead)")
    a.set_ylabel("RSS bytes per key")
    a.set_ylim(bottom=0)
    b.plot(xs, [x["fill"]["writes_per_s"] for x in runs], "o-", label="fill (new keys)")
    b.plot(xs, [x["steady"]["writes_per_s"] for x in runs], "s-", label="random overwrites")
    b.set_ylabel("writes/s")
    b.set_ylim(bottom=0)
    c.plot(xs, [max(v["seconds"] for v in x["snapshot"].values()) for x in runs], "o-")
    c.set_ylabel("snapshot time, s (slowest node)")
    d.plot(xs, [max(v["file_mb"] or 0 for v in x["snapshot"].values()) for x in runs], "o-")
    d.set_ylabel("snapshot file, MB")
    e.plot(xs, [x["restart"]["caught_up_s"] for x in runs], "o-", label="restart")
    e.plot(xs, [x["wiped_follower"]["caught_up_s"] for x in runs], "s-",
           label="wiped follower")
    e.set_ylabel("to caught up, s")
    f.plot(xs, [max(v["hwm_mb"] for v in x["after_snapshot"].values()) for x in runs], "o-",
           label="peak RSS of a node")
    f.plot(xs, [x["peak_total_mb"] for x in runs], "s-", label="all nodes + children")
    f.set_ylabel("MB")
    for ax in axes.flat:
        plain_log(ax, "x")
        ax.set_xlabel("keys")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle("fastraft: against key count (3 nodes, 16 B keys, 100 B values)")
    return save(plt, fig, out / "keys.png")


def chart_nodes(plt, r: dict, out: Path) -> Path:
    rows = r["rows"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for n, c in enumerate(sorted({x["inflight"] for x in rows})):
        sub = [x for x in rows if x["inflight"] == c]
        xs = [x["nodes"] for x in sub]
        color = f"C{n}"
        a.plot(xs, [x["writes_per_s"] for x in sub], "o-", color=color, label=f"{c} in flight")
        b.plot(xs, [x["p50_ms"] for x in sub], "o-", color=color, label=f"p50, {c} in flight")
        b.plot(xs, [x["p99_ms"] for x in sub], "s--", color=color, label=f"p99, {c} in flight")
    a.set_ylabel("writes/s")
    b.set_ylabel("latency, ms")
    for ax in (a, b):
        plain_log(ax)
        ax.set_xlabel("nodes")
        ax.set_xticks(sorted({x["nodes"] for x in rows}))
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("fastraft: writes against cluster size (100 B values)")
    return save(plt, fig, out / "nodes.png")


def save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def charts(res: dict, out: Path) -> tuple[list[str], str | None]:
    """Draw the PNGs of the parts in ``res`` into ``out``: (paths, None), or ([], why not)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return [], (f"Charts skipped: matplotlib is not installed ({exc}); install the `plot` "
                    f"extra (`pip install 'fastraft[plot]'`).")
    paths = []
    for part, fn in (("inflight", chart_inflight), ("size", chart_size),
                     ("keys", chart_keys), ("nodes", chart_nodes)):
        if part in res:
            paths.append(str(fn(plt, res[part], out)))
    return paths, None
