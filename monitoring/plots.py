"""PNG pictures of what the bench, the recs evaluation and the moderation flags measured, for reports
and READMEs. matplotlib with the Agg backend: no display is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

LATENCY_BUDGET_MS = 250.0  # the p99 budget of the alert ReelstreamLatencyP99OverBudget (monitoring/rules.yml)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bench_timeline(series: Mapping[str, Sequence], path: str | Path, title: str = "reelstream bench pipeline") -> Path:
    """Throughput and latency over the bench run.

    `series`: "throughput" as [[seconds since start, events/s], ...] (phase 1, sampled from the worker's
    counters) and "latency" as [[seconds since start of phase 2, latency ms], ...] (one point per event).
    """
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5))
    thr = np.asarray(series.get("throughput") or [], dtype=float).reshape(-1, 2)
    top.plot(thr[:, 0], thr[:, 1], marker=".", color="tab:blue")
    top.set(title="Throughput (phase 1: produced as fast as possible)", xlabel="seconds", ylabel="events/s")
    top.grid(alpha=0.3)

    lat = np.asarray(series.get("latency") or [], dtype=float).reshape(-1, 2)
    bottom.scatter(lat[:, 0], lat[:, 1], s=4, alpha=0.35, color="tab:gray", label="event")
    if len(lat):
        for q, color in ((50, "tab:green"), (99, "tab:red")):
            x, y = _rolling_percentile(lat, q)
            bottom.plot(x, y, color=color, label=f"p{q} (1 s windows)")
    bottom.axhline(LATENCY_BUDGET_MS, color="black", linestyle="--", linewidth=1, label="p99 budget")
    bottom.set(title="Event-to-recommendation latency (phase 2: fixed rate)", xlabel="seconds", ylabel="ms (log)")
    bottom.set_yscale("log")
    top_ms = max(LATENCY_BUDGET_MS, float(lat[:, 1].max()) if len(lat) else 0.0)
    bottom.set_ylim(top=top_ms * 5)  # room for the legend above the points
    bottom.yaxis.set_major_formatter(ScalarFormatter())
    bottom.yaxis.set_minor_formatter(NullFormatter())
    bottom.grid(alpha=0.3, which="both")
    bottom.legend(loc="upper center", ncol=4, fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def _rolling_percentile(points: np.ndarray, q: float, window: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile q of the y values in consecutive `window`-second bins of x (empty bins skipped)."""
    bins = np.floor(points[:, 0] / window)
    xs, ys = [], []
    for b in np.unique(bins):
        ys.append(np.percentile(points[bins == b, 1], q))
        xs.append((b + 0.5) * window)
    return np.asarray(xs), np.asarray(ys)


def hit_rate_curves(curves: Mapping[str, Sequence], path: str | Path, title: str = "HR@10 over the replay") -> Path:
    """HR@10 per model along the prequential replay, cumulative and per window of evaluated events.

    `curves`: {model: [[evaluated events, hits@10], ...]}, both cumulative (models.recs.evaluate)."""
    fig, (cumulative, windowed) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for name, points in curves.items():
        pts = np.asarray(points, dtype=float).reshape(-1, 2)
        if not len(pts):
            continue
        (line,) = cumulative.plot(pts[:, 0], pts[:, 1] / pts[:, 0], label=name)
        # At most 20 windows: late drift shows here, the cumulative curve hides it.
        ends = pts[:: -(-len(pts) // 20)]
        n, hits = np.diff(ends[:, 0], prepend=0.0), np.diff(ends[:, 1], prepend=0.0)
        windowed.step(ends[:, 0], hits / np.maximum(n, 1), where="pre", color=line.get_color(), label=name)
    cumulative.set(title=title, ylabel="HR@10 (cumulative)")
    windowed.set(xlabel="evaluated events", ylabel="HR@10 per window")
    for ax in (cumulative, windowed):
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    cumulative.legend()
    return _save(fig, path)


def flag_counts(flags: Sequence[Mapping]) -> dict[str, dict[str, int]]:
    """{category: {action: n}} from moderation-flags records; a flag counts once under each category it names
    (allowed comments name none)."""
    out: dict[str, dict[str, int]] = {}
    for flag in flags:
        for category in {r.split(">=")[0] for r in flag.get("reasons") or ()}:
            per = out.setdefault(category, {})
            per[flag["action"]] = per.get(flag["action"], 0) + 1
    return dict(sorted(out.items()))


def flag_rates(
    counts: Mapping[str, Mapping[str, float]], comments: int, path: str | Path, title: str = "Moderation flags"
) -> Path:
    """Share of all `comments` flagged per category, stacked by action (counts: see `flag_counts`)."""
    categories = list(counts)
    actions = sorted({a for per in counts.values() for a in per}, key=["review", "block"].index)
    fig, ax = plt.subplots(figsize=(9, 5))
    bottom = np.zeros(len(categories))
    colors = {"review": "tab:orange", "block": "tab:red"}
    for action in actions:
        values = np.asarray([counts[c].get(action, 0.0) for c in categories]) * 100.0 / max(comments, 1)
        ax.bar(categories, values, bottom=bottom, label=action, color=colors[action])
        bottom += values
    ax.set(title=f"{title} ({comments} comments)", xlabel="category", ylabel="% of comments")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return _save(fig, path)
