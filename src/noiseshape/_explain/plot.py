"""``noiseshape explain --plot``: the reduced and the broadcast mask, one panel per shown sample.

Summarised axes are said in the title (which samples and indices are not shown) and marked in the
panels with dashed lines where indices are skipped, whatever the rank.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .._spec import _fmt
from .facts import Explanation

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap

__all__ = ["PLOT_HINT", "Panel", "panels", "plot"]

PLOT_HINT = "--plot needs matplotlib, which is not installed: pip install 'noiseshape[plot]'"
KEPT, DROPPED = "#2166ac", "#e0e0e0"


@dataclass
class Panel:
    """One sample's mask as a 2-D grid: columns are the last axis, rows the axes between."""

    title: str
    grid: np.ndarray
    xlabel: str
    xticks: list[str]
    ylabel: str
    yticks: list[str]
    col_gap: int | None  # indices are skipped between columns col_gap - 1 and col_gap
    row_gaps: list[int]  # indices are skipped between rows r - 1 and r, for each r


def plot(ex: Explanation, path: str) -> None:
    """Draw the reduced and the broadcast mask, one panel per sample. Raises ImportError without matplotlib."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    pics = ex.pictures()
    rshown, rgaps = ex.reduced_shown()
    rows = [
        (f"reduced mask, noise shape {_fmt(ex.reduced)}", panels(ex, pics["reduced"], rshown, rgaps)),
        (f"mask broadcast to the input shape {_fmt(ex.shape)}", panels(ex, pics["mask"], ex.shown, ex.gaps)),
    ]
    ncols = max(len(row) for _, row in rows)
    cell_w = max(p.grid.shape[1] for _, row in rows for p in row)
    heights = [0.4 * max(p.grid.shape[0] for p in row) + 1.5 for _, row in rows]
    width = max(6.5, ncols * (0.4 * cell_w + 1.3))
    fig = Figure(figsize=(width, sum(heights) + 1.2), layout="constrained")
    subs = fig.subfigures(2, 1, height_ratios=heights)
    assert isinstance(subs, np.ndarray)
    cmap = ListedColormap([DROPPED, KEPT])
    for (title, row), sub in zip(rows, subs):
        sub.suptitle(title, fontsize=10, x=0.02, ha="left")
        for c, ax in enumerate(sub.subplots(1, ncols, squeeze=False)[0]):
            if c < len(row):
                _draw(ax, row[c], cmap)
            else:
                ax.set_visible(False)
    fig.legend(
        handles=[Patch(color=KEPT, label="kept"), Patch(color=DROPPED, label="dropped")],
        loc="outside lower center",
        ncol=2,
        frameon=False,
    )
    spec = ex.spec_text or "full-shape dropout"
    title = f"{spec}, input {_fmt(ex.shape)}, rate {ex.rate:g}, seed {ex.seed}"
    if ex.summarised:  # wrapped to the figure's width (about 11 characters an inch at this size)
        note = f"not shown: {ex.left_out_text()} (dashed lines mark skipped indices)"
        title += "\n" + textwrap.fill(note, int(width * 11))
    fig.suptitle(title, fontsize=11)
    fig.savefig(path)


def _draw(ax: Axes, panel: Panel, cmap: Colormap) -> None:
    grid = panel.grid
    ax.imshow(grid.astype(int), cmap=cmap, vmin=0, vmax=1, aspect="equal")
    ax.set_xticks(range(grid.shape[1]), panel.xticks, fontsize=7)
    ax.set_yticks(range(grid.shape[0]), panel.yticks, fontsize=7)
    ax.set_xticks(np.arange(-0.5, grid.shape[1]), minor=True)
    ax.set_yticks(np.arange(-0.5, grid.shape[0]), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel(panel.xlabel, fontsize=8)
    ax.set_ylabel(panel.ylabel, fontsize=8)
    ax.set_title(panel.title, fontsize=9)
    dashes = (0, (2, 2))
    if panel.col_gap is not None:
        ax.axvline(panel.col_gap - 0.5, color="black", linewidth=1.5, linestyle=dashes)
    for r in panel.row_gaps:
        ax.axhline(r - 0.5, color="black", linewidth=1.5, linestyle=dashes)


def _row_gaps(lead: list[list[int]], gaps: list[int | None]) -> list[int]:
    """Rows (combinations of the leading axes' shown indices, last fastest) that follow skipped indices.

    A row follows a skip when the outermost axis that changes from the previous row moves across that
    axis' gap.
    """
    combos = list(np.ndindex(*[len(idx) for idx in lead]))
    out = []
    for r in range(1, len(combos)):
        changed = next(a for a in range(len(lead)) if combos[r][a] != combos[r - 1][a])
        if gaps[changed] is not None and combos[r][changed] == gaps[changed]:
            out.append(r)
    return out


def panels(ex: Explanation, mask: np.ndarray, shown: list[list[int]], gaps: list[int | None]) -> list[Panel]:
    """One :class:`Panel` per shown sample of ``mask`` (the displayed part of a mask; axis 0 is the batch)."""
    names = [a.short for a in ex.axes]
    if mask.ndim == 1:
        xticks = [str(i) for i in shown[0]]
        return [Panel("all samples", mask.reshape(1, -1), names[0], xticks, "", [""], gaps[0], [])]
    out = []
    lead, lead_gaps = shown[1:-1], gaps[1:-1]
    yticks = [",".join(str(lead[a][i]) for a, i in enumerate(c)) for c in np.ndindex(*[len(s) for s in lead])]
    row_gaps = _row_gaps(lead, lead_gaps) if lead else []
    ylabel = ", ".join(names[1:-1])
    xticks = [str(i) for i in shown[-1]]
    for k, s in enumerate(shown[0]):
        grid = mask[k].reshape(-1, mask.shape[-1])
        title = "all samples (shared)" if len(shown[0]) == 1 and ex.same_across_batch else f"sample {s}"
        out.append(Panel(title, grid, names[-1], xticks, ylabel, yticks if lead else [""], gaps[-1], row_gaps))
    return out
