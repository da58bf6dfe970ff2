"""The explanation in words: the role of each axis, the distribution of the drops, this draw's drops."""

from __future__ import annotations

from .facts import Axis, Explanation

__all__ = ["axis_lines", "binomial_text", "draws_formula", "num", "pattern_text", "realised_text"]


def num(v: float) -> str:
    """``2`` for 2.0, ``1.111`` for 1.1111: a value as short as it reads."""
    v = float(v)
    if v == int(v):
        return str(int(v))
    return f"{v:.3f}".rstrip("0")


def names(axes: list[Axis], along: bool = False) -> str:
    if len(axes) == 1:
        return axes[0].along if along else axes[0].noun
    return "(" + ", ".join(a.short for a in axes) + ") positions"


def sizes(axes: list[Axis]) -> str:
    return "×".join(str(a.size) for a in axes)


def axis_lines(ex: Explanation) -> list[str]:
    lines = []
    width = max((len(a.name) for a in ex.axes), default=0)
    for a in ex.axes:
        size = f"size {a.size}" + (" (dynamic, shown as this)" if a.dynamic else "")
        if a.role == "size 1":
            what = "size 1: nothing to share, None and 1 mean the same here"
        elif a.index == 0 and a.shared:
            what = f"shared: one draw for the whole batch, reused by all {a.size} samples"
        elif a.index == 0:
            what = "independent: each sample draws its own mask"
        elif a.shared:
            what = f"shared: one draw reused at all {a.size} {a.along} (the mask is constant along this axis)"
        else:
            what = f"independent: its own draw at each of the {a.size} {a.noun}"
        lines.append(f"  {a.name.ljust(width)}  {size}: {what}")
    return lines


def binomial_text(ex: Explanation) -> str:
    d, m, u, p = ex.draws_per_sample, ex.elements_per_draw_in_sample, ex.elements_per_sample, f"{ex.rate:g}"
    mean = num(ex.rate * u)
    if u == 1:
        return f"each sample is one element, dropped with probability {p} (Bernoulli({p}))"
    if d == 1:
        return f"Bernoulli({p}): either none or all {u} elements of a sample are dropped (mean {mean})"
    units = names(ex.independent_in_sample) if ex.independent_in_sample else "elements"
    if m == 1:
        return f"Binomial({d}, {p}) of the {u} elements (mean {mean})"
    return (
        f"Binomial({d}, {p}) of the {d} {units}, each covering {m} elements, "
        f"so {m} × Binomial({d}, {p}) of the {u} elements of a sample (mean {mean})"
    )


def pattern_text(ex: Explanation) -> list[str]:
    """The plain-words summary of what one sample sees."""
    lines = []
    d, m, u = ex.draws_per_sample, ex.elements_per_draw_in_sample, ex.elements_per_sample
    ind, sh = ex.independent_in_sample, ex.shared_in_sample
    if ex.rank == 0:
        return ["The input is a single element: it is kept or dropped."]
    if ex.same_across_batch and ex.batch_size > 1:
        lines.append(
            f"Every sample drops the same units: axis 0 shares one draw, so all {ex.batch_size} samples of a "
            "batch get the same mask (a new one at each call)."
        )
    elif ex.batch_size > 1:
        lines.append("Each sample draws its own mask: different samples drop different units.")
    else:
        lines.append("The batch has one sample.")
    if u == 1:
        pass
    elif d == 1:
        lines.append(
            f"A sample is kept or dropped as a whole: its {u} elements share one draw (stochastic depth, DropPath)."
        )
    elif m == 1:
        lines.append(f"No sharing within a sample: each of its {u} elements is an independent draw (plain dropout).")
    else:
        lines.append(
            f"In a sample, a random subset of the {d} {names(ind)} is dropped, and the same subset is dropped "
            f"at all {sizes(sh)} {names(sh, along=True)}."
        )
    return lines


def realised_text(ex: Explanation) -> list[str]:
    counts = ex.dropped_counts()
    if not counts or ex.elements_per_sample == 1:
        return []
    d, m, u = ex.draws_per_sample, ex.elements_per_draw_in_sample, ex.elements_per_sample
    ind, sh = ex.independent_in_sample, ex.shared_in_sample
    out = [f"This draw (seed {ex.seed}, stream {ex.stream}):"]
    for s, k in counts:
        who = "every sample" if ex.same_across_batch else f"sample {s}"
        if d == 1:
            out.append(f"  {who}: {'dropped whole' if k else 'kept whole'} ({k * u} of {u} elements dropped)")
        elif m == 1:
            out.append(f"  {who}: {k} of {u} elements dropped")
        elif k == 0:
            out.append(f"  {who}: none of the {d} {names(ind)} is dropped (0 of {u} elements)")
        elif k == d:
            out.append(f"  {who}: all {d} {names(ind)} are dropped ({u} of {u} elements)")
        else:
            out.append(
                f"  {who}: the same {k} of {d} {names(ind)} are dropped at all {sizes(sh)} {names(sh, along=True)} "
                f"({k * m} of {u} elements)"
            )
    if not ex.same_across_batch and len(counts) < ex.batch_size:
        out.append(f"  (the other {ex.batch_size - len(counts)} samples are not listed)")
    return out


def draws_formula(ex: Explanation) -> str | None:
    dyn = [a for a in ex.axes if a.dynamic and not a.shared]
    if not dyn:
        return None
    syms = {a.index: (a.label or ("B" if a.index == 0 else f"n{a.index}")) for a in dyn}
    factors = [syms[i] if i in syms else str(n) for i, n in enumerate(ex.reduced) if i in syms or n != 1]
    if not factors:
        return None
    return "·".join(factors)
