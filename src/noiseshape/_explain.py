"""``noiseshape explain``: what a noise shape means for one input shape, in pictures and in words.

Everything here is pure Python and NumPy: the masks come from the reference implementation of the
RNG contract (:mod:`noiseshape._rng`), which is bit-identical to what the compiled frontends draw.
Axis 0 is taken as the batch axis, as in Keras and Flax.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import numpy as np

from . import _rng
from ._errors import fail
from ._spec import NoiseSpec, _fmt, _spec_text, check_rate, check_u64, resolve

__all__ = ["Explanation", "explain", "parse_dims", "parse_noise_shape", "parse_shape", "render_text", "to_json"]

OP = "noiseshape explain"
DYNAMIC = ("none", "_", "?")
DEFAULT_DYNAMIC_SIZE = 2
LAST_AXIS_LIMIT, LAST_AXIS_EDGE = 8, 3  # the last axis is shown whole up to 8, else its first and last 3
AXIS_LIMIT, AXIS_EDGE = 4, 2  # the other axes: whole up to 4, else first and last 2
ROW_BUDGET = 16  # above this many displayed rows, leading axes shrink to their first and last index
COUNT_LIMIT = 1 << 20  # per-sample drop counts are computed for samples of at most this many draws


# ----------------------------------------------------------------------------------------------- parsing


def _split(text: str) -> list[str]:
    text = text.strip().strip("()[]").strip()
    if not text:
        return []
    return [t.strip() for t in text.split(",")]


def parse_shape(text: str) -> tuple:
    """``"None,64,50,1"`` -> ``(None, 64, 50, 1)``; ``None``, ``_`` and ``?`` mark a dynamic size."""
    out = []
    for i, tok in enumerate(_split(text)):
        if tok.lower() in DYNAMIC:
            out.append(None)
        elif re.fullmatch(r"\+?\d+", tok):
            out.append(int(tok))
        else:
            raise fail(
                OP,
                f"input shape entry {i} is {tok!r}; give a non-negative integer size, or None (also _ or ?) "
                "for a size known only at run time, e.g. None,64,50,1",
                spec=f"input_shape={text!r}",
            )
    return tuple(out)


def parse_noise_shape(text: str) -> tuple:
    """``"None,1,..."`` -> ``(None, 1, Ellipsis)``; non-integers are passed on for :func:`resolve` to judge."""
    out: list = []
    for i, tok in enumerate(_split(text)):
        if tok.lower() in DYNAMIC:
            out.append(None)
        elif tok == "...":
            out.append(Ellipsis)
        elif re.fullmatch(r"[+-]?\d+", tok):
            out.append(int(tok))
        else:
            try:
                out.append(float(tok))  # resolve() says "use the integer 2" for 2.0
            except ValueError:
                raise fail(
                    OP,
                    f"noise_shape[{i}] is {tok!r}; each entry must be None (also _ or ?), 1 (share one draw "
                    "along this axis), the axis size, or ... once for the remaining axes, e.g. None,1,4",
                    spec=f"noise_shape={text!r}",
                ) from None
    return tuple(out)


def parse_dims(text: str) -> tuple:
    """``"1,2"`` -> ``(1, 2)``: the axes that share one draw."""
    out = []
    for i, tok in enumerate(_split(text)):
        if not re.fullmatch(r"[+-]?\d+", tok):
            raise fail(
                OP,
                f"broadcast_dims[{i}] is {tok!r}; give integer axes separated by commas, e.g. 1 or 2,3",
                spec=f"broadcast_dims={text!r}",
            )
        out.append(int(tok))
    return tuple(out)


def parse_rate(text: str):
    """A float when ``text`` reads as one, else the text itself, for :func:`check_rate` to reject."""
    try:
        return float(text)
    except ValueError:
        return text


# ----------------------------------------------------------------------------------------------- the facts


@dataclass
class Axis:
    index: int
    size: int  # the size used for the display
    dynamic: bool
    label: str | None
    shared: bool  # shares one draw by request
    role: str  # "shared", "independent" or "size 1"

    @property
    def name(self) -> str:
        if self.label:
            return f"axis {self.index} ({self.label})"
        return "axis 0 (batch)" if self.index == 0 else f"axis {self.index}"

    @property
    def noun(self) -> str:
        """What the indices of this axis are called when each has its own draw."""
        if self.label:
            return self.label
        return "samples" if self.index == 0 else f"entries of axis {self.index}"

    @property
    def along(self) -> str:
        """What the indices of this axis are called when they share a draw."""
        if self.label:
            return self.label
        return "samples" if self.index == 0 else f"positions along axis {self.index}"

    @property
    def short(self) -> str:
        return self.label or ("batch" if self.index == 0 else f"axis {self.index}")


@dataclass
class Explanation:
    given_shape: tuple  # as given, None for dynamic sizes
    shape: tuple  # the concrete shape shown
    axes: list[Axis]
    spec: NoiseSpec
    spec_text: str
    rate: float
    seed: int
    stream: int
    batch_offset: int
    t: int
    scale: float
    shown: list[list[int]] = field(default_factory=list)  # input indices displayed per axis
    gaps: list[int | None] = field(default_factory=list)  # position of "..." in ``shown`` per axis

    # --- counts -------------------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def reduced(self) -> tuple:
        return tuple(int(s) for s in self.spec.shape)

    @property
    def draws_total(self) -> int:
        return math.prod(self.reduced)

    @property
    def draws_per_sample(self) -> int:
        return math.prod(self.reduced[1:])

    @property
    def elements_per_sample(self) -> int:
        return math.prod(self.shape[1:])

    @property
    def elements_per_draw_in_sample(self) -> int:
        """How many elements of one sample one draw keeps or drops."""
        return math.prod(a.size for a in self.axes[1:] if a.shared)

    @property
    def same_across_batch(self) -> bool:
        return bool(self.rank and self.spec.shared[0])

    @property
    def keep_prob(self) -> float:
        return self.t / 65536.0

    @property
    def summarised(self) -> bool:
        return any(g is not None for g in self.gaps)

    @property
    def independent_in_sample(self) -> list[Axis]:
        return [a for a in self.axes[1:] if a.role == "independent"]

    @property
    def shared_in_sample(self) -> list[Axis]:
        return [a for a in self.axes[1:] if a.role == "shared"]

    @property
    def batch_size(self) -> int:
        return self.shape[0] if self.rank else 1

    # --- masks --------------------------------------------------------------------------------------------
    def reduced_index(self, index) -> tuple:
        return tuple(0 if s else i for i, s in zip(index, self.spec.shared))

    def flat_reduced(self, rindex) -> int:
        j = 0
        for i, n in zip(rindex, self.reduced):
            j = j * n + i
        return j

    def first_index(self) -> int:
        return self.spec.first_index(self.batch_offset) if self.rank else 0

    def keep_at(self, rindices) -> list[bool]:
        """Keep flags of the reduced mask at the given reduced indices, straight from the contract."""
        j0 = self.first_index()
        js = [j0 + self.flat_reduced(r) for r in rindices]
        blocks = {}
        for b in sorted({j // 8 for j in js}):
            blocks[b] = _rng.lanes(self.seed, self.stream, 8 * b, 8)
        return [int(blocks[j // 8][j % 8]) < self.t for j in js]

    def reduced_shown(self) -> tuple[list[list[int]], list[int | None]]:
        shown = [[0] if s else idx for s, idx in zip(self.spec.shared, self.shown)]
        gaps = [None if s else g for s, g in zip(self.spec.shared, self.gaps)]
        return shown, gaps

    def pictures(self) -> dict:
        """The four displayed arrays (at the shown indices): input, reduced mask, broadcast mask, output."""
        grid = list(np.ndindex(*[len(s) for s in self.shown]))
        index = [tuple(self.shown[a][k] for a, k in enumerate(pos)) for pos in grid]
        rshown, _ = self.reduced_shown()
        rgrid = list(np.ndindex(*[len(s) for s in rshown]))
        rindex = [tuple(rshown[a][k] for a, k in enumerate(pos)) for pos in rgrid]
        flags = dict(zip(rindex, self.keep_at(rindex)))
        dims = [len(s) for s in self.shown]
        values = np.array([_flat(i, self.shape) + 1 for i in index], dtype=object).reshape(dims)
        mask = np.array([flags[self.reduced_index(i)] for i in index], dtype=bool).reshape(dims)
        rmask = np.array([flags[r] for r in rindex], dtype=bool).reshape([len(s) for s in rshown])
        output = np.where(mask, values * self.scale, 0.0)
        return {"input": values, "reduced": rmask, "mask": mask, "output": output}

    def dropped_counts(self) -> list[tuple[int, int]] | None:
        """(sample, dropped draws) for the displayed samples, or ``None`` when samples are too large."""
        if not self.rank or self.draws_per_sample > COUNT_LIMIT:
            return None
        per = self.draws_per_sample
        out = []
        samples = [0] if self.same_across_batch else self.shown[0]
        for s in samples:
            j = self.first_index() + s * per
            kept = int((_rng.lanes(self.seed, self.stream, j, per).astype(np.int64) < self.t).sum())
            out.append((s, per - kept))
        return out


def _flat(index, shape) -> int:
    j = 0
    for i, n in zip(index, shape):
        j = j * n + i
    return j


def _shown_indices(n: int, limit: int, edge: int) -> tuple[list[int], int | None]:
    if n <= limit or n <= 2 * edge:
        return list(range(n)), None
    return [*range(edge), *range(n - edge, n)], edge


def explain(
    input_shape,
    noise_shape=None,
    broadcast_dims=None,
    *,
    rate: float = 0.5,
    seed: int = 0,
    stream: int = 0,
    batch_offset: int = 0,
    axes=None,
    dynamic_size: int = DEFAULT_DYNAMIC_SIZE,
) -> Explanation:
    """Collect every fact ``noiseshape explain`` prints. Raises :class:`noiseshape.NoiseShapeError`."""
    given = tuple(input_shape)
    spec_text = _spec_text(noise_shape, broadcast_dims)
    rate = check_rate(rate, op=OP, shape=given, spec=spec_text)
    seed = check_u64(seed, name="seed", op=OP, shape=given, spec=spec_text)
    stream = check_u64(stream, name="stream", op=OP, shape=given, spec=spec_text)
    batch_offset = check_u64(batch_offset, name="batch_offset", op=OP, shape=given, spec=spec_text)
    if isinstance(dynamic_size, bool) or not isinstance(dynamic_size, int) or dynamic_size < 1:
        raise fail(OP, f"--dynamic-size is {dynamic_size!r}; give a positive integer", shape=given, spec=spec_text)
    for i, n in enumerate(given):
        if n is not None and n < 1:
            raise fail(
                OP,
                f"input axis {i} has size {n}; there is nothing to drop in an empty input, give sizes >= 1",
                shape=given,
                spec=spec_text,
            )
    # A dynamic input size takes its display size from the noise shape when that names one.
    entries = _expand(noise_shape, len(given))
    shape = []
    for i, n in enumerate(given):
        if n is None:
            e = entries[i] if entries is not None else None
            usable = isinstance(e, int) and not isinstance(e, bool) and e > 1
            shape.append(e if usable else dynamic_size)
        else:
            shape.append(n)
    shape = tuple(shape)
    spec = resolve(shape, noise_shape, broadcast_dims, op=OP)
    if axes is not None and len(axes) != len(shape):
        raise fail(
            OP,
            f"--axes names {len(axes)} ax{'is' if len(axes) == 1 else 'es'} but the input has {len(shape)}; "
            "give one label per axis, e.g. --axes batch,timesteps,features",
            shape=given,
            spec=spec_text,
        )
    ax_list = []
    for i, n in enumerate(shape):
        dynamic = given[i] is None
        role = "size 1" if n == 1 and not dynamic else ("shared" if spec.shared[i] else "independent")
        ax_list.append(Axis(i, n, dynamic, axes[i] if axes else None, spec.shared[i], role))
    t = _rng.threshold(rate)
    ex = Explanation(given, shape, ax_list, spec, spec_text, rate, seed, stream, batch_offset, t, _rng.keep_scale(t))
    _choose_display(ex)
    return ex


def _expand(noise_shape, ndim):
    if noise_shape is None:
        return None
    entries = list(noise_shape)
    if Ellipsis in entries:
        at = entries.index(Ellipsis)
        entries = entries[:at] + [None] * (ndim - len(entries) + 1) + entries[at + 1 :]
    return entries if len(entries) == ndim else None


def _choose_display(ex: Explanation) -> None:
    rank = ex.rank
    edges = [(LAST_AXIS_LIMIT, LAST_AXIS_EDGE) if i == rank - 1 else (AXIS_LIMIT, AXIS_EDGE) for i in range(rank)]
    picks = [_shown_indices(n, *e) for n, e in zip(ex.shape, edges)]
    # Shrink leading axes to their first and last index until the pictures stay readable: the batch axis
    # first, then the largest.
    order = [0, *sorted(range(1, rank - 1), key=lambda i: -ex.shape[i])] if rank > 1 else []
    for i in order:
        if math.prod(len(p[0]) for p in picks[:-1]) <= ROW_BUDGET:
            break
        if ex.shape[i] > 2:
            picks[i] = ([0, ex.shape[i] - 1], 1)
    ex.shown = [p[0] for p in picks]
    ex.gaps = [p[1] for p in picks]


# ----------------------------------------------------------------------------------------------- equivalents


def _matches(ex: Explanation, shared_axes: set[int]) -> bool:
    """Whether the spec draws the masks of a layer that shares exactly ``shared_axes`` (size-1 axes are free)."""
    return all((a.index in shared_axes) == a.shared for a in ex.axes if a.role != "size 1")


def keras_noise_shape(ex: Explanation) -> tuple:
    return tuple(1 if a.shared else (None if a.index == 0 or a.dynamic else a.size) for a in ex.axes)


def flax_broadcast_dims(ex: Explanation) -> tuple:
    return tuple(a.index for a in ex.axes if a.shared)


def equivalents(ex: Explanation) -> dict:
    p = f"{ex.rate:g}"
    rank = ex.rank
    any_shared = any(a.shared for a in ex.axes)
    ns = keras_noise_shape(ex)
    keras = f"keras.layers.Dropout({p}, noise_shape={_fmt(ns)})" if any_shared else f"keras.layers.Dropout({p})"
    bd = flax_broadcast_dims(ex)
    flax = f"flax.linen.Dropout({p}, broadcast_dims={_fmt(bd)})" if bd else f"flax.linen.Dropout({p})"
    nst = [f"noiseshape.torch.Dropout({p}, noise_shape={_fmt(ns)})" if any_shared else f"noiseshape.torch.Dropout({p})"]
    torch_nn: list[dict] = []
    batch_free = rank == 0 or not ex.axes[0].shared or ex.axes[0].role == "size 1"
    if math.prod(ex.shape) == 1:  # a single element: every layer agrees, naming them all says nothing
        rank = -1
    for k, layer in ((3, "1d"), (4, "2d"), (5, "3d")):
        if rank != k or not batch_free:
            continue
        first = set(range(2, k))
        last = set(range(1, k - 1))
        if _matches(ex, first):
            nst.append(f"noiseshape.torch.SpatialDropout{layer}({p})")
            torch_nn.append(
                {
                    "layer": f"torch.nn.Dropout{layer}({p})",
                    "caveat": f"needs channels first {_layout(k, True)}; {_UNBATCHED[k]}",
                }
            )
        if _matches(ex, last):
            nst.append(f'noiseshape.torch.SpatialDropout{layer}({p}, data_format="channels_last")')
            perm = (0, k - 1, *range(1, k - 1))
            back = (0, *range(2, k), 1)
            torch_nn.append(
                {
                    "layer": f"torch.nn.Dropout{layer}({p}) applied to x.permute{perm}, then .permute{back}",
                    "caveat": f"Dropout{layer} needs channels first {_layout(k, True)}, "
                    f"so a channels-last input {_layout(k, False)} must be permuted",
                }
            )
    if rank == 3 and batch_free and _matches(ex, {1}):
        nst.append(f"noiseshape.torch.LockedDropout({p}, batch_first=True)")
    if rank == 3 and _matches(ex, {0}):
        nst.append(f"noiseshape.torch.LockedDropout({p}, batch_first=False)  # if axis 0 is time: (T, B, F)")
    if rank >= 2 and batch_free and ex.draws_per_sample == 1 and ex.elements_per_sample > 1:
        nst.append(f"noiseshape.torch.DropPath({p})")
        torch_nn.append(
            {
                "layer": f'torchvision.ops.StochasticDepth({p}, mode="row")',
                "caveat": "torch.nn has no built-in for this; StochasticDepth is in torchvision",
            }
        )
    if ex.draws_total == 1 and math.prod(ex.shape) > 1:
        torch_nn.append(
            {
                "layer": f'torchvision.ops.StochasticDepth({p}, mode="batch")',
                "caveat": "torch.nn has no built-in for this; StochasticDepth is in torchvision",
            }
        )
    if not any_shared or (ex.elements_per_draw_in_sample == 1 and batch_free):
        torch_nn.insert(
            0,
            {
                "layer": f"torch.nn.Dropout({p})",
                "caveat": "any shape; it draws from torch's global generator, so its masks differ from noiseshape's",
            },
        )
    if not torch_nn:
        torch_nn.append(
            {"layer": None, "caveat": "no torch.nn built-in shares these axes; use noiseshape.torch.Dropout"}
        )
    numpy_spec = f", noise_shape={_fmt(ns)}" if any_shared else ""
    numpy_call = f"noiseshape.numpy.dropout(x, {p}{numpy_spec}, seed={ex.seed})"
    return {
        "keras": keras,
        "flax": flax,
        "noiseshape.torch": nst,
        "torch.nn": torch_nn,
        "noiseshape.numpy": numpy_call,
    }


_UNBATCHED = {
    3: "a 2-D input is read as one unbatched (C, L) sample",
    4: "a 3-D input is read as (N, C, L) with a warning (1-D channel dropout), not as one (C, H, W) sample",
    5: "a 4-D input is read as one unbatched (C, D, H, W) sample",
}


def _layout(k: int, channels_first: bool) -> str:
    spatial = {3: ["L"], 4: ["H", "W"], 5: ["D", "H", "W"]}[k]
    dims = ["N", "C", *spatial] if channels_first else ["N", *spatial, "C"]
    return "(" + ", ".join(dims) + ")"


# ----------------------------------------------------------------------------------------------- words


def _num(v) -> str:
    v = float(v)
    if v == int(v):
        return str(int(v))
    return f"{v:.3f}".rstrip("0")


def _names(axes: list[Axis], along: bool = False) -> str:
    if len(axes) == 1:
        return axes[0].along if along else axes[0].noun
    return "(" + ", ".join(a.short for a in axes) + ") positions"


def _sizes(axes: list[Axis]) -> str:
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
    mean = _num(ex.rate * u)
    if u == 1:
        return f"each sample is one element, dropped with probability {p} (Bernoulli({p}))"
    if d == 1:
        return f"Bernoulli({p}): either none or all {u} elements of a sample are dropped (mean {mean})"
    units = _names(ex.independent_in_sample) if ex.independent_in_sample else "elements"
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
            f"In a sample, a random subset of the {d} {_names(ind)} is dropped, and the same subset is dropped "
            f"at all {_sizes(sh)} {_names(sh, along=True)}."
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
        else:
            out.append(
                f"  {who}: the same {k} of {d} {_names(ind)} are dropped at all {_sizes(sh)} {_names(sh, along=True)} "
                f"({k * m} of {u} elements)"
            )
    if not ex.same_across_batch and len(counts) < ex.batch_size:
        out.append(f"  (the other {ex.batch_size - len(counts)} samples are not listed)")
    return out


def _draws_formula(ex: Explanation) -> str | None:
    dyn = [a for a in ex.axes if a.dynamic and not a.shared]
    if not dyn:
        return None
    syms = {a.index: (a.label or ("B" if a.index == 0 else f"n{a.index}")) for a in dyn}
    factors = [syms[i] if i in syms else str(n) for i, n in enumerate(ex.reduced) if i in syms or n != 1]
    if not factors:
        return None
    return "·".join(factors)


# ----------------------------------------------------------------------------------------------- pictures


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


def _cells(a: np.ndarray, fmt) -> np.ndarray:
    out = np.empty(a.shape, dtype=object)
    for idx in np.ndindex(*a.shape):
        out[idx] = fmt(a[idx])
    return out


def render_text(ex: Explanation) -> str:
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
        f"output = x * mask / keep_prob = x * mask * {_num(ex.scale)}",
        format_grid(_cells(pics["output"], _num), ex.gaps),
        "",
        "Axes (axis 0 is the batch):",
        *axis_lines(ex),
        "",
        f"The mask is drawn at shape {_fmt(ex.reduced)} and broadcast to {shape}.",
    ]
    formula = _draws_formula(ex)
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
        + f"; a draw keeps when its 16-bit lane is below t = {ex.t}: keep probability t/65536 = {ex.keep_prob:.6g},"
        f" kept values scaled by 65536/t = {ex.scale:.6g}.",
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
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------- json


def to_json(ex: Explanation) -> dict:
    d, p = ex.draws_per_sample, ex.rate
    data = {
        "input_shape": list(ex.given_shape),
        "display_shape": list(ex.shape),
        "dynamic_axes": [a.index for a in ex.axes if a.dynamic],
        "noise_shape": list(ex.reduced),
        "keras_noise_shape": list(keras_noise_shape(ex)),
        "broadcast_dims": list(flax_broadcast_dims(ex)),
        "axes": [
            {"axis": a.index, "name": a.name, "size": a.size, "dynamic": a.dynamic, "shared": a.shared, "role": a.role}
            for a in ex.axes
        ],
        "shared_axes": [a.index for a in ex.axes if a.role == "shared"],
        "independent_axes": [a.index for a in ex.axes if a.role == "independent"],
        "draws_per_sample": d,
        "draws_total": ex.draws_total,
        "draws_total_formula": _draws_formula(ex),
        "elements_per_sample": ex.elements_per_sample,
        "elements_per_draw": ex.elements_per_draw_in_sample,
        "same_across_batch": ex.same_across_batch,
        "dropped_per_sample": {
            "draws": {"distribution": "binomial", "n": d, "p": p},
            "elements": {
                "distribution": "scaled binomial",
                "scale": ex.elements_per_draw_in_sample,
                "n": d,
                "p": p,
                "mean": p * ex.elements_per_sample,
            },
            "text": binomial_text(ex),
        },
        "rate": p,
        "seed": ex.seed,
        "stream": ex.stream,
        "batch_offset": ex.batch_offset,
        "threshold": ex.t,
        "keep_prob": ex.keep_prob,
        "scale": ex.scale,
        "equivalents": equivalents(ex),
        "summarised": ex.summarised,
        "explanation": pattern_text(ex),
    }
    counts = ex.dropped_counts()
    if counts is not None:
        data["dropped_this_draw"] = [{"sample": s, "dropped_draws": k} for s, k in counts]
    if not ex.summarised:
        pics = ex.pictures()
        data["masks"] = {
            "reduced": pics["reduced"].astype(int).tolist(),
            "broadcast": pics["mask"].astype(int).tolist(),
            "output": pics["output"].astype(float).tolist(),
        }
    return data


# ----------------------------------------------------------------------------------------------- plot


PLOT_HINT = "--plot needs matplotlib, which is not installed: pip install 'noiseshape[plot]'"
KEPT, DROPPED = "#2166ac", "#e0e0e0"


def plot(ex: Explanation, path: str) -> None:
    """Draw the reduced and the broadcast mask, one panel per sample. Raises ImportError without matplotlib."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    pics = ex.pictures()
    rshown, rgaps = ex.reduced_shown()
    rows = [
        (f"reduced mask, noise shape {_fmt(ex.reduced)}", pics["reduced"], rshown, rgaps),
        (f"mask broadcast to the input shape {_fmt(ex.shape)}", pics["mask"], ex.shown, ex.gaps),
    ]
    panels = [_panels(ex, mask, shown, gaps) for _, mask, shown, gaps in rows]
    ncols = max(len(p) for p in panels)
    cell_w = max(g.shape[1] for p in panels for _, g, *_ in p)
    heights = [max(g.shape[0] for _, g, *_ in p) for p in panels]
    width = max(6.5, ncols * (0.4 * cell_w + 1.3))
    fig = Figure(figsize=(width, sum(0.4 * h + 1.5 for h in heights) + 0.9), layout="constrained")
    subs = fig.subfigures(2, 1, height_ratios=[0.4 * h + 1.5 for h in heights])
    cmap = ListedColormap([DROPPED, KEPT])
    for (title, *_), row, sub in zip(rows, panels, subs):
        sub.suptitle(title, fontsize=10, x=0.02, ha="left")
        axs = sub.subplots(1, ncols, squeeze=False)[0]
        for c, ax in enumerate(axs):
            if c >= len(row):
                ax.set_visible(False)
                continue
            name, grid, xlab, xticks, ylab, yticks, xgap, ygap = row[c]
            ax.imshow(grid.astype(int), cmap=cmap, vmin=0, vmax=1, aspect="equal")
            ax.set_xticks(range(grid.shape[1]), xticks, fontsize=7)
            ax.set_yticks(range(grid.shape[0]), yticks, fontsize=7)
            ax.set_xticks(np.arange(-0.5, grid.shape[1]), minor=True)
            ax.set_yticks(np.arange(-0.5, grid.shape[0]), minor=True)
            ax.grid(which="minor", color="white", linewidth=1.5)
            ax.tick_params(which="minor", length=0)
            ax.set_xlabel(xlab, fontsize=8)
            ax.set_ylabel(ylab, fontsize=8)
            ax.set_title(name, fontsize=9)
            for gap, line in ((xgap, ax.axvline), (ygap, ax.axhline)):
                if gap is not None:  # indices are skipped here
                    line(gap - 0.5, color="black", linewidth=1.5, linestyle=(0, (2, 2)))
    fig.legend(
        handles=[Patch(color=KEPT, label="kept"), Patch(color=DROPPED, label="dropped")],
        loc="outside lower center",
        ncol=2,
        frameon=False,
    )
    spec = ex.spec_text or "full-shape dropout"
    fig.suptitle(f"{spec}, input {_fmt(ex.shape)}, rate {ex.rate:g}, seed {ex.seed}", fontsize=11)
    fig.savefig(path)


def _panels(ex: Explanation, mask: np.ndarray, shown: list[list[int]], gaps):
    """(title, 2-D grid, x label, x ticks, y label, y ticks, x gap, y gap) per sample panel."""
    names = [a.short for a in ex.axes]
    if mask.ndim <= 1:
        grid = mask.reshape(1, -1)
        xt = [str(i) for i in shown[0]] if mask.ndim else ["0"]
        gap = gaps[0] if mask.ndim else None
        return [
            ("all samples" if mask.ndim else "scalar", grid, names[0] if mask.ndim else "", xt, "", [""], gap, None)
        ]
    out = []
    samples = shown[0]
    for k, s in enumerate(samples):
        sub = mask[k]
        ygap = gaps[1] if sub.ndim == 2 else None
        if sub.ndim == 1:
            grid = sub.reshape(1, -1)
            ylab, yt = "", [""]
        else:
            grid = sub.reshape(-1, sub.shape[-1])
            lead = [shown[a] for a in range(1, mask.ndim - 1)]
            combos = list(np.ndindex(*[len(s_) for s_ in lead]))
            yt = [",".join(str(lead[a][i]) for a, i in enumerate(c)) for c in combos]
            ylab = ", ".join(names[1 : mask.ndim - 1])
        title = "all samples (shared)" if len(samples) == 1 and ex.same_across_batch else f"sample {s}"
        out.append((title, grid, names[-1], [str(i) for i in shown[-1]], ylab, yt, gaps[-1], ygap))
    return out


# ----------------------------------------------------------------------------------------------- command


def add_arguments(p) -> None:
    p.add_argument("shape", help="input shape, e.g. 2,3,4 or None,64,50,1 (None, _ or ? for a dynamic size)")
    # Not a mutually exclusive group: resolve() explains why only one of the two may be given.
    p.add_argument("--noise-shape", metavar="SHAPE", help="Keras noise_shape, e.g. None,1,4 (None/_/? or ...)")
    p.add_argument("--broadcast-dims", metavar="AXES", help="Flax broadcast_dims: the axes that share a draw, e.g. 1")
    p.add_argument("--rate", default="0.5", help="drop probability (default 0.5)")
    p.add_argument("--seed", default="0", help="seed (default 0)")
    p.add_argument("--stream", default="0", help="stream (default 0)")
    p.add_argument("--batch-offset", default="0", help="global index of the first sample (default 0)")
    p.add_argument(
        "--axes", metavar="NAMES", help="axis labels, e.g. batch,timesteps,features (plural nouns read best)"
    )
    p.add_argument(
        "--dynamic-size",
        default=str(DEFAULT_DYNAMIC_SIZE),
        help=f"display size of a dynamic input size (default {DEFAULT_DYNAMIC_SIZE})",
    )
    p.add_argument("--plot", metavar="FILE", help="draw the reduced and the broadcast mask to FILE.png or FILE.svg")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")


def _int_arg(text: str):
    """An int when ``text`` reads as one, else the text itself, for the range checks to reject."""
    return int(text) if re.fullmatch(r"\s*[+-]?\d+\s*", text) else text


def run(args, stdout, stderr) -> int:
    """Run ``noiseshape explain`` for parsed arguments; returns the exit status."""
    from ._errors import NoiseShapeError

    try:
        if args.plot is not None and not args.plot.lower().endswith((".png", ".svg")):
            raise fail(OP, f"--plot {args.plot!r}: give a file name ending in .png or .svg")
        shape = parse_shape(args.shape)
        noise_shape = parse_noise_shape(args.noise_shape) if args.noise_shape is not None else None
        dims = parse_dims(args.broadcast_dims) if args.broadcast_dims is not None else None
        axes = _split(args.axes) if args.axes is not None else None
        ex = explain(
            shape,
            noise_shape,
            dims,
            rate=parse_rate(args.rate),
            seed=_int_arg(args.seed),
            stream=_int_arg(args.stream),
            batch_offset=_int_arg(args.batch_offset),
            axes=axes,
            dynamic_size=_int_arg(args.dynamic_size),
        )
    except NoiseShapeError as err:
        stderr.write(f"{err}\n")
        return 2
    status = 0
    plotted = None
    if args.plot is not None:
        try:
            plot(ex, args.plot)
            plotted = args.plot
        except ImportError:
            stderr.write(PLOT_HINT + "\n")
            status = 1
        except OSError as err:
            stderr.write(f"{OP}: cannot write {args.plot}: {err.strerror or err}\n")
            status = 1
    if args.json:
        data = to_json(ex)
        data["plot"] = plotted
        stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        stdout.write(render_text(ex))
        if plotted:
            stdout.write(f"\nPlot written to {plotted}\n")
    return status
