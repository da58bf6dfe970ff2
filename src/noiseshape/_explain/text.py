"""The text report: the four pictures in NumPy's layout, the words and the equivalent spellings."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .._spec import _fmt
from .equivalents import equivalents
from .facts import Explanation
from .words import axis_lines, binomial_text, draws_formula, num, pattern_text, realised_text

__all__ = ["format_grid", "render_text"]


def format_grid(cells: np.ndarray, gaps: list[int | None]) -> str:
    """Nested brackets in NumPy's layout, with ``...`` where indices are skipped."""
    width = max((len(c) for c in cells.ravel()), default=1)

    def block(a: np.ndarray, axis: int, indent: int) -> str:
        if a.ndim == 0:
            return str(a[()]).rjust(width)
        gap = gaps[axis]
        if a.ndim == 1:
            items = [str(c).rjust(width) for c in a]
            if gap is not None:
                items.insert(gap, "...")
            return "[" + " ".join(items) + "]"
        parts = [block(a[k], axis + 1, indent + 1) for k in range(a.shape[0])]
        if gap is not None:
            parts.insert(gap, "...")
        sep = "\n" * (a.ndim - 1) + " " * (indent + 1)
        return "[" + sep.join(parts) + "]"

    return block(cells, 0, 0)


def _cells(a: np.ndarray, fmt: Callable[[Any], str]) -> np.ndarray:
    out = np.empty(a.shape, dtype=object)
    for idx in np.ndindex(*a.shape):
        out[idx] = fmt(a[idx])
    return out


def render_text(ex: Explanation) -> str:
    """The whole report ``noiseshape explain`` prints."""
    pics = ex.pictures()
    _, rgaps = ex.reduced_shown()
    shape = _fmt(ex.shape)
    given = _fmt(tuple("None" if n is None else n for n in ex.given_shape)).replace("'", "")
    spec = ex.spec_text or "no noise_shape (full-shape dropout)"
    out = [f"{spec} on an input of shape {given}, rate {ex.rate:g}", ""]
    dyn = [a for a in ex.axes if a.dynamic]
    if dyn:
        out.append(
            "Dynamic sizes are shown as: "
            + ", ".join(f"{a.name} = {a.size}" for a in dyn)
            + " (counts below use these sizes)."
        )
    if ex.summarised:
        out.append("Large axes are summarised (... marks skipped indices):")
        for a, idx, g in zip(ex.axes, ex.shown, ex.gaps):
            if g is not None:
                out.append(f"  {a.name}: indices {', '.join(map(str, idx[:g]))}, ..., {', '.join(map(str, idx[g:]))}")
    if dyn or ex.summarised:
        out.append("")
    n = math.prod(ex.shape)
    out += [f"input x, shape {shape}: the values 1..{n}", format_grid(_cells(pics["input"], str), ex.gaps), ""]
    out += [
        f"reduced mask, drawn at the noise shape {_fmt(ex.reduced)} (1 = keep, 0 = drop)",
        format_grid(_cells(pics["reduced"], lambda v: str(int(v))), rgaps),
        "",
        f"mask broadcast to the input shape {shape}",
        format_grid(_cells(pics["mask"], lambda v: str(int(v))), ex.gaps),
        "",
        f"output = x * mask / keep_prob = x * mask * {num(ex.scale)}"
        if ex.t
        else "output = x * mask / keep_prob: nothing is kept, so every element is 0",
        format_grid(_cells(pics["output"], num), ex.gaps),
        "",
        "Axes (axis 0 is the batch):",
        *axis_lines(ex),
        "",
        f"The mask is drawn at shape {_fmt(ex.reduced)} and broadcast to {shape}.",
    ]
    formula = draws_formula(ex)
    total = f"{formula} ({ex.draws_total} for the sizes shown)" if formula else f"{ex.draws_total}"
    per_draw = math.prod(ex.shape) // max(ex.draws_total, 1)
    out.append(
        f"Independent draws: {ex.draws_per_sample} per sample, {total} in total; "
        f"each draw keeps or drops {per_draw} element{'s' if per_draw != 1 else ''}."
    )
    out += pattern_text(ex)
    out.append(f"Dropped per sample: {binomial_text(ex)}.")
    out += realised_text(ex)
    out += [
        "",
        f"RNG: Philox4x32-10, seed {ex.seed}, stream {ex.stream}"
        + (f", batch_offset {ex.batch_offset}" if ex.batch_offset else "")
        + f"; a draw keeps when its 16-bit lane is below t = {ex.t}: "
        + (
            f"keep probability t/65536 = {ex.keep_prob:.6g}, kept values scaled by 65536/t = {ex.scale:.6g}."
            if ex.t
            else "nothing is kept (keep probability 0), so the output is all zeros."
        ),
        "",
        "Equivalent spellings:",
    ]
    eq = equivalents(ex)
    out.append(f"  Keras             {eq['keras']}")
    out.append(f"  Flax              {eq['flax']}")
    for k, line in enumerate(eq["noiseshape.torch"]):
        out.append(f"  {'noiseshape.torch' if k == 0 else '':<16}  {line}")
    for k, item in enumerate(eq["torch.nn"]):
        head = "torch.nn" if k == 0 else ""
        if item["layer"] is None:
            out.append(f"  {head:<16}  none: {item['caveat']}")
        else:
            out.append(f"  {head:<16}  {item['layer']}")
            out.append(f"  {'':<16}    caveat: {item['caveat']}")
    out.append(f"  noiseshape.numpy  {eq['noiseshape.numpy']}")
    jax = eq["noiseshape.jax"]
    out.append(f"  noiseshape.jax    key = {jax['key']}  # noiseshape.jax.seed_of(key) == {ex.seed}")
    out += [f"  {'':<16}  {line}" for line in jax["functions"]]
    for flavour in ("linen", "nnx"):
        out += [f"  {'':<16}  {line}" for line in jax[flavour]]
        out.append(f"  {'':<16}    called as {jax[flavour + '_call']}")
    return "\n".join(out) + "\n"
