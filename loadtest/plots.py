"""Small PNG plots (matplotlib, Agg backend: no display needed), ~500x300 px each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["bars", "cdf", "lines"]

_SIZE = (6.0, 3.4)
_DPI = 80


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    _plt().close(fig)
    return path


def cdf(
    path: Path,
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    scale: float = 1000.0,
    logx: bool = False,
) -> Path:
    """Empirical CDF of each series (values multiplied by ``scale``, default s -> ms)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=_SIZE)
    for label, values in series.items():
        xs = sorted(v * scale for v in values)
        if not xs:
            continue
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})")
    if logx:
        ax.set_xscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def lines(
    path: Path,
    x: Sequence[float],
    ys: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logy: bool = False,
    marker: str = "o",
    secondary: Mapping[str, Sequence[float]] | None = None,
    secondary_label: str = "",
) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=_SIZE)
    for label, y in ys.items():
        ax.plot(x, y, marker=marker, markersize=3, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if secondary:
        ax2 = ax.twinx()
        for label, y in secondary.items():
            ax2.plot(x, y, linestyle="--", marker="x", markersize=3, color="gray", label=label)
        ax2.set_ylabel(secondary_label)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8)
    return _save(fig, path)


def bars(
    path: Path,
    labels: Sequence[str],
    groups: Mapping[str, Sequence[float]],
    *,
    title: str,
    ylabel: str,
    logy: bool = False,
) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=_SIZE)
    n = max(len(groups), 1)
    width = 0.8 / n
    for i, (name, values) in enumerate(groups.items()):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, values, width=width, label=name)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    if len(groups) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)
