"""Figures for asset metadata: saved as PNG files and embedded as markdown images.

matplotlib is imported on first use, so loading the code location does not pay for it.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from chameleon_assets.core.artifacts import atomic_file


if TYPE_CHECKING:
    import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    with atomic_file(path, "wb") as fh:
        fh.write(buf.getvalue())
    return base64.b64encode(buf.getvalue()).decode()


def file_b64(path: Path) -> str:
    """A PNG file as base64, for ``markdown_image``."""
    return base64.b64encode(Path(path).read_bytes()).decode()


def markdown_image(b64: str, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{b64})"


def heatmap(matrix: "np.ndarray", labels: Sequence[str], title: str, path: Path) -> str:
    """Annotated heatmap of a (k x k) matrix; writes ``path`` and returns the PNG as base64."""
    import numpy as np

    plt = _pyplot()
    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * k, 0.8 + 0.6 * k))
    lim = float(np.abs(matrix).max()) or 1.0
    im = ax.imshow(matrix, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    if k <= 12:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{matrix[i, j]:.2g}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title)
    return _save(fig, path)


def grouped_bars(
    table: dict[str, Sequence[float]],
    labels: Sequence[str],
    title: str,
    path: Path,
    ylabel: str = "weight",
    errors: dict[str, Sequence[float]] | None = None,
    xlabel: str | None = None,
) -> str:
    """One group of bars per label, one bar per entry of ``table`` (with ``errors``:
    symmetric error bars of those half-widths); returns the PNG as base64."""
    import numpy as np

    plt = _pyplot()
    names = list(table)
    k = len(labels)
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(2.0 + 0.9 * k, 3.5))
    x = np.arange(k)
    for i, name in enumerate(names):
        yerr = (errors or {}).get(name)
        ax.bar(x + i * width - 0.4 + width / 2, table[name], width, label=name, yerr=yerr,
               capsize=2 if yerr is not None else 0, error_kw={"elinewidth": 0.8})
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    if names:
        ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def line_plot(series: dict[str, Sequence[float]], xlabel: str, ylabel: str, title: str, path: Path) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, ys in series.items():
        ax.plot(range(1, len(ys) + 1), ys, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def weight_trajectory(steps: Sequence[int], trajectory: Sequence[Sequence[float]], names: Sequence[str],
                      total_steps: int, title: str, path: Path) -> str:
    """One line per domain: its weight from each update step on (``trajectory[i]`` holds from
    ``steps[i]`` to the next), drawn as steps up to ``total_steps``; returns the PNG as base64."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    w = np.asarray(trajectory, dtype=np.float64)
    x = [*steps, total_steps]
    for j, name in enumerate(names):
        ax.step(x, [*w[:, j], w[-1, j]], where="post", label=name)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("domain weight")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def weights_over(
    x: Sequence[float],
    panels: dict[str, "np.ndarray"],
    labels: Sequence[str],
    xlabel: str,
    path: Path,
    mark: float | None = None,
    mark_label: str = "configured",
) -> str:
    """One panel per entry of ``panels`` (title -> len(x) x k weights), one line per label,
    on a log x-axis, with a dashed vertical line at ``mark``; returns the PNG as base64."""
    import numpy as np

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False, sharey=True)
    for ax, (title, weights) in zip(axes[0], panels.items()):
        weights = np.asarray(weights)
        for j, label in enumerate(labels):
            ax.plot(x, weights[:, j], marker="o", markersize=3, label=label)
        if mark is not None:
            ax.axvline(mark, color="black", linestyle="--", linewidth=1, label=f"{mark_label} ({mark:g})")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(title)
    axes[0][0].set_ylabel("domain weight")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _save(fig, path)


def spectrum(eigenvalues: Sequence[float], path: Path, ridge: float | None = None, title: str = "") -> str:
    """The positive eigenvalues, largest first, on a log y-axis, with a dashed horizontal
    line at ``ridge`` (directions below it are damped by the ridge); returns the PNG as base64."""
    import numpy as np

    plt = _pyplot()
    s = np.asarray(eigenvalues, dtype=np.float64)
    positive = s[s > 1e-12 * max(float(s.max(initial=0.0)), 1e-300)]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(np.arange(1, len(positive) + 1), positive, marker="o", label="eigenvalue of K_c")
    if ridge is not None and ridge > 0:
        ax.axhline(ridge, color="black", linestyle="--", linewidth=1, label=f"ridge lambda k = {ridge:.3g}")
    if len(positive):
        ax.set_yscale("log")
    ax.set_xlabel("eigenvalue index (largest first)")
    ax.set_ylabel("eigenvalue")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)
