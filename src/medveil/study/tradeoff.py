"""The study's accuracy–privacy view: each preset as one point (accuracy against what leaks).

Read from a run's gathered metrics (:func:`medveil.study.metrics.collect_metrics`): for every
preset, the mean test accuracy over the study's models, keyless re-identification top-1 (A1) and
keyless look-alikes (``nearest_public`` under A1) above the mean-image yardstick. The full
frontier over stage settings is ``benchmarks/frontier.py``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["TradeoffPoint", "tradeoff_figure", "tradeoff_points"]


@dataclass(frozen=True, kw_only=True)
class TradeoffPoint:
    """One preset: accuracy, and what a keyless attacker gets (``nan`` where not measured)."""

    preset: str
    accuracy: float
    reid_top1: float
    lookalike_above_yardstick: float


def _mean(values: list[float]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _score(rows: list[dict[str, Any]], preset: str, attack: str, column: str) -> float:
    return _mean([
        r.get(column) for r in rows
        if r["preset"] == preset and r["attack"] == attack and r["threat"] == "A1"
    ])


def tradeoff_points(metrics: dict[str, Any]) -> tuple[float, list[TradeoffPoint]]:
    """Plaintext accuracy and one :class:`TradeoffPoint` per preset with privacy results.

    Examples
    --------
    >>> metrics = {
    ...     "utility": [
    ...         {"scheme": "plaintext", "accuracy": 0.9},
    ...         {"scheme": "svd", "accuracy": 0.8},
    ...     ],
    ...     "privacy": [
    ...         {"preset": "svd", "attack": "reid", "threat": "A1", "top1_mean": 1.0},
    ...         {"preset": "svd", "attack": "mean_image", "threat": "A1", "ssim_mean": 0.3},
    ...         {"preset": "svd", "attack": "nearest_public", "threat": "A1", "ssim_mean": 0.4},
    ...     ],
    ... }
    >>> plain, points = tradeoff_points(metrics)
    >>> plain, points[0].preset, round(points[0].lookalike_above_yardstick, 3)
    (0.9, 'svd', 0.1)
    """
    utility, privacy = metrics["utility"], metrics["privacy"]
    plain = _mean([r["accuracy"] for r in utility if r["scheme"] == "plaintext"])
    points = []
    for preset in dict.fromkeys(r["preset"] for r in privacy):
        yardstick = _score(privacy, preset, "mean_image", "ssim_mean")
        points.append(TradeoffPoint(
            preset=preset,
            accuracy=_mean([r["accuracy"] for r in utility if r["scheme"] == preset]),
            reid_top1=_score(privacy, preset, "reid", "top1_mean"),
            lookalike_above_yardstick=_score(privacy, preset, "nearest_public", "ssim_mean")
            - yardstick,
        ))
    return plain, points


def tradeoff_figure(plain: float, points: list[TradeoffPoint]) -> bytes:
    """PNG: accuracy against re-identification and against look-alike SSIM above the yardstick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    for ax, attr, label, line in (
        (axes[0], "reid_top1", "keyless re-identification top-1 (%)", 1.0),
        (axes[1], "lookalike_above_yardstick", "keyless look-alike SSIM above the yardstick",
         0.0),
    ):
        scale = 100.0 if attr == "reid_top1" else 1.0
        for i, p in enumerate(points):
            x, y = scale * getattr(p, attr), 100 * p.accuracy
            ax.scatter([x], [y], color=f"C{i}", marker="osD^v<>ph*"[i % 10])
            ax.annotate(p.preset, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=9)
        if not math.isnan(plain):
            ax.axhline(100 * plain, color="gray", ls="--", lw=1, label="plaintext")
            # "best" keeps the legend off the points (a fixed corner hid one).
            ax.legend(fontsize=8, loc="best")
        ax.axvline(line, color="tab:red", ls=":", lw=1)
        ax.margins(x=0.12, y=0.08)  # room for the labels of the outermost points
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))  # SSIM differences have long labels
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
