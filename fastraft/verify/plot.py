"""``latency.png``: latency over time per operation kind, fault windows shaded by kind.

Place in the architecture: the last step of a verification run (``nemesis.run``), reading
the run's ``history.jsonl`` and ``nemesis.jsonl``. matplotlib is optional (``pip install
fastraft[plot]``): without it ``plot_run`` draws nothing and says so, and this module still
imports.
"""

from __future__ import annotations

import json
from pathlib import Path

from .history import read_history

__all__ = ["plot_run", "latencies", "fault_windows"]

_COLORS = {"partition": "tab:red", "kill": "tab:purple", "pause": "tab:orange",
           "degrade": "tab:olive", "wipe": "tab:brown", "transfer": "tab:cyan",
           "disk": "tab:pink", "final": "tab:gray"}


def latencies(events) -> dict:
    """``{f: [(invoke time, latency, status), ...]}``: one point per completed operation
    (``info`` ones at their completion, marked)."""
    pending: dict = {}
    out: dict = {}
    for ev in events:
        if ev.type == "invoke":
            pending[ev.process] = ev
            continue
        inv = pending.pop(ev.process, None)
        if inv is None:
            continue
        out.setdefault(inv.f, []).append((inv.time, ev.time - inv.time, ev.type))
    return out


def fault_windows(nemesis_events) -> list:
    """``[(start, end, kind, detail), ...]`` from the nemesis log's start / heal lines."""
    windows, open_ = [], None
    for e in nemesis_events:
        if e.get("action") == "start":
            open_ = e
        elif e.get("action") == "heal" and open_ is not None:
            windows.append((open_["time"], e["time"], open_["fault"], open_.get("detail", "")))
            open_ = None
    return windows


def plot_run(out) -> str:
    """Draw ``<out>/latency.png``; returns a line for the summary."""
    out = Path(out)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install 'fastraft[plot]')"
    try:
        events = read_history(out / "history.jsonl")
        nem = [json.loads(line) for line in (out / "nemesis.jsonl").read_text().splitlines()
               if line.strip()]
    except (OSError, ValueError) as exc:
        return f"plot skipped: {exc}"
    lat = latencies(events)
    kinds = sorted(lat)
    fig, axes = plt.subplots(len(kinds) or 1, 1, sharex=True, squeeze=False,
                             figsize=(14, 1.8 * max(1, len(kinds)) + 1))
    windows = fault_windows(nem)
    for row, (ax, f) in enumerate(zip(axes[:, 0], kinds)):
        seen = set() if row == 0 else {w[2] for w in windows}   # fault legend: top row
        for start, end, kind, _ in windows:
            label = kind if kind not in seen else None
            seen.add(kind)
            ax.axvspan(start, end, color=_COLORS.get(kind, "tab:gray"), alpha=0.18,
                       label=label, lw=0)
        pts = lat[f]
        for status, marker, color in (("ok", ".", "tab:blue"), ("fail", "x", "tab:green"),
                                      ("info", "^", "black")):
            xs = [t for t, _, s in pts if s == status]
            ys = [max(d * 1000, 0.01) for _, d, s in pts if s == status]
            if xs:
                ax.scatter(xs, ys, s=3 if status == "ok" else 8, marker=marker, color=color,
                           label=f"{status} ({len(xs)})", linewidths=0.5)
        ax.set_yscale("log")
        ax.set_ylabel(f"{f}\nms")
        ax.legend(loc="upper right", fontsize=6, ncol=8, markerscale=2)
    axes[-1, 0].set_xlabel("seconds since the start of the history")
    fig.suptitle(f"latency per operation, fault windows shaded ({out.name})")
    fig.tight_layout()
    path = out / "latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot: {path}"
