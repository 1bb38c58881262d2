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
