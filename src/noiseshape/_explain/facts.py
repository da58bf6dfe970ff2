"""The facts ``noiseshape explain`` reports: the concrete shape shown, the role of each axis, the
reduced mask at the displayed indices (straight from the RNG contract) and the realised drop counts.

Everything here is pure Python and NumPy: the masks come from the reference implementation of the
RNG contract (:mod:`noiseshape._rng`), which is bit-identical to what the compiled frontends draw.
Axis 0 is taken as the batch axis, as in Keras and Flax.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import _rng
from .._errors import fail
from .._spec import NoiseSpec, _fmt, _spec_text, check_rate, check_u64, resolve

__all__ = ["Axis", "Explanation", "explain"]

OP = "noiseshape explain"
DEFAULT_DYNAMIC_SIZE = 2
LAST_AXIS_LIMIT, LAST_AXIS_EDGE = 8, 3  # the last axis is shown whole up to 8, else its first and last 3
AXIS_LIMIT, AXIS_EDGE = 4, 2  # the other axes: whole up to 4, else first and last 2
ROW_BUDGET = 16  # above this many displayed rows, leading axes shrink to their first and last index
COUNT_LIMIT = 1 << 20  # per-sample drop counts are computed for samples of at most this many draws
INDEX_LIMIT = (1 << 63) - 1  # the last global mask index (as in the torch frontend: int64 indices)


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
    def _label_noun(self) -> str:
        """A label used as a noun: a plural label (``channels``) as it is, else ``height positions``."""
        assert self.label
        return self.label if self.label.endswith("s") else f"{self.label} positions"

    @property
    def noun(self) -> str:
        """What the indices of this axis are called when each has its own draw."""
        if self.label:
            return self._label_noun
        return "samples" if self.index == 0 else f"entries of axis {self.index}"

    @property
    def along(self) -> str:
        """What the indices of this axis are called when they share a draw."""
        if self.label:
            return self._label_noun
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

    def left_out(self) -> list[tuple[Axis, int, int]]:
        """(axis, first, last) of the index range each summarised axis leaves out of the pictures."""
        return [(a, idx[g - 1] + 1, idx[g] - 1) for a, idx, g in zip(self.axes, self.shown, self.gaps) if g is not None]

    def left_out_text(self) -> str:
        """``samples 1 to 6; axis 1 indices 1 to 18`` (empty when everything is shown)."""
        parts = []
        for a, first, last in self.left_out():
            one, many = ("sample", "samples") if a.index == 0 else (f"{a.name} index", f"{a.name} indices")
            parts.append(f"{one} {first}" if first == last else f"{many} {first} to {last}")
        return "; ".join(parts)

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
    def reduced_index(self, index: Sequence[int]) -> tuple[int, ...]:
        return tuple(0 if s else i for i, s in zip(index, self.spec.shared))

    def flat_reduced(self, rindex: Sequence[int]) -> int:
        j = 0
        for i, n in zip(rindex, self.reduced):
            j = j * n + i
        return j

    def first_index(self) -> int:
        return self.spec.first_index(self.batch_offset) if self.rank else 0

    def keep_at(self, rindices: Sequence[Sequence[int]]) -> list[bool]:
        """Keep flags of the reduced mask at the given reduced indices, straight from the contract."""
        j0 = self.first_index()
        js = [j0 + self.flat_reduced(r) for r in rindices]
        blocks: dict[int, np.ndarray] = {}
        for b in sorted({j // 8 for j in js}):
            blocks[b] = _rng.lanes(self.seed, self.stream, 8 * b, 8)
        return [int(blocks[j // 8][j % 8]) < self.t for j in js]

    def reduced_shown(self) -> tuple[list[list[int]], list[int | None]]:
        shown = [[0] if s else idx for s, idx in zip(self.spec.shared, self.shown)]
        gaps = [None if s else g for s, g in zip(self.spec.shared, self.gaps)]
        return shown, gaps

    def pictures(self) -> dict[str, np.ndarray]:
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


def _flat(index: Sequence[int], shape: Sequence[int]) -> int:
    j = 0
    for i, n in zip(index, shape):
        j = j * n + i
    return j


def _shown_indices(n: int, limit: int, edge: int) -> tuple[list[int], int | None]:
    if n <= limit or n <= 2 * edge:
        return list(range(n)), None
    return [*range(edge), *range(n - edge, n)], edge


def explain(
    input_shape: Sequence[int | None],
    noise_shape: Sequence[object] | None = None,
    broadcast_dims: Sequence[int] | int | None = None,
    *,
    rate: float | str = 0.5,
    seed: int | str = 0,
    stream: int | str = 0,
    batch_offset: int | str = 0,
    axes: Sequence[str] | None = None,
    dynamic_size: int | str = DEFAULT_DYNAMIC_SIZE,
) -> Explanation:
    """Collect every fact ``noiseshape explain`` prints. Raises :class:`noiseshape.NoiseShapeError`.

    The numbers may be given as the command line's text: they are checked here, and text that does not
    read as a number is reported as given.
    """
    given = tuple(input_shape)
    spec_text = _spec_text(noise_shape, broadcast_dims)
    if not given:
        raise fail(
            OP,
            "input shape is empty; give the sizes of at least one axis (axis 0 is the batch), e.g. 2,3,4",
            shape=given,
            spec=spec_text,
        )
    rate = check_rate(rate, op=OP, shape=given, spec=spec_text) + 0.0  # -0.0 reads as 0
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
    sizes: list[int] = []
    for i, n in enumerate(given):
        if n is None:
            e = entries[i] if entries is not None else None
            sizes.append(e if isinstance(e, int) and not isinstance(e, bool) and e > 1 else dynamic_size)
        else:
            sizes.append(n)
    shape = tuple(sizes)
    spec = resolve(shape, noise_shape, broadcast_dims, op=OP)
    _check_indices(spec, batch_offset, given, spec_text)
    if axes is not None and len(axes) != len(shape):
        raise fail(
            OP,
            f"--axes names {len(axes)} ax{'is' if len(axes) == 1 else 'es'} but the input has {len(shape)}; "
            "give one label per axis, e.g. --axes batch,timesteps,features",
            shape=given,
            spec=spec_text,
        )
    for i, label in enumerate(axes or ()):
        if not label:
            raise fail(OP, f"--axes label {i} is empty; give one name per axis, e.g. --axes batch,timesteps,features")
    ax_list = []
    for i, n in enumerate(shape):
        dynamic = given[i] is None
        role = "size 1" if n == 1 and not dynamic else ("shared" if spec.shared[i] else "independent")
        ax_list.append(Axis(i, n, dynamic, axes[i] if axes else None, spec.shared[i], role))
    t = _rng.threshold(rate)
    ex = Explanation(given, shape, ax_list, spec, spec_text, rate, seed, stream, batch_offset, t, _rng.keep_scale(t))
    _choose_display(ex)
    return ex


def _check_indices(spec: NoiseSpec, batch_offset: int, given: tuple, spec_text: str) -> None:
    """The mask's global indices (``batch_offset`` included) must stay below 2**63, as in the frontends."""
    draws = math.prod(spec.shape)
    if draws > INDEX_LIMIT:
        raise fail(
            OP,
            f"the mask would have {draws} draws (noise shape {_fmt(spec.shape)}), more than the 2**63 global "
            "indices of the RNG; give smaller sizes",
            shape=given,
            spec=spec_text,
        )
    if spec.first_index(batch_offset) + draws > INDEX_LIMIT:
        raise fail(
            OP,
            f"batch_offset {batch_offset} puts the mask's global indices past 2**63; use a smaller offset",
            shape=given,
            spec=spec_text,
        )


def _expand(noise_shape: Sequence[object] | None, ndim: int) -> list[object] | None:
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
