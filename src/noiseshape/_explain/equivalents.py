"""The same masks spelled in Keras, Flax, torch.nn, noiseshape.torch, noiseshape.numpy and noiseshape.jax."""

from __future__ import annotations

import math
from typing import Any

from .._spec import _fmt
from .facts import Explanation

__all__ = ["equivalents", "flax_broadcast_dims", "keras_noise_shape"]


def _matches(ex: Explanation, shared_axes: set[int]) -> bool:
    """Whether the spec draws the masks of a layer that shares exactly ``shared_axes`` (size-1 axes are free)."""
    return all((a.index in shared_axes) == a.shared for a in ex.axes if a.role != "size 1")


def keras_noise_shape(ex: Explanation) -> tuple[int | None, ...]:
    return tuple(1 if a.shared else (None if a.index == 0 or a.dynamic else a.size) for a in ex.axes)


def flax_broadcast_dims(ex: Explanation) -> tuple[int, ...]:
    return tuple(a.index for a in ex.axes if a.shared)


def equivalents(ex: Explanation) -> dict[str, Any]:
    """The layer calls that draw masks of this structure, each with its caveat where it has one."""
    p = f"{ex.rate:g}"
    rank = ex.rank
    any_shared = any(a.shared for a in ex.axes)
    ns = keras_noise_shape(ex)
    keras = f"keras.layers.Dropout({p}, noise_shape={_fmt(ns)})" if any_shared else f"keras.layers.Dropout({p})"
    bd = flax_broadcast_dims(ex)
    flax = f"flax.linen.Dropout({p}, broadcast_dims={_fmt(bd)})" if bd else f"flax.linen.Dropout({p})"
    nst = [f"noiseshape.torch.Dropout({p}, noise_shape={_fmt(ns)})" if any_shared else f"noiseshape.torch.Dropout({p})"]
    jax = _JaxForms(ex, p)
    jax.add("dropout", "Dropout", f", broadcast_dims={_fmt(bd)}" if bd else "")
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
            jax.add(f"spatial_dropout{layer}", f"SpatialDropout{layer}", ', data_format="channels_first"')
            torch_nn.append(
                {
                    "layer": f"torch.nn.Dropout{layer}({p})",
                    "caveat": f"needs channels first {_layout(k, True)}; {_UNBATCHED[k]}",
                }
            )
        if _matches(ex, last):
            nst.append(f'noiseshape.torch.SpatialDropout{layer}({p}, data_format="channels_last")')
            jax.add(f"spatial_dropout{layer}", f"SpatialDropout{layer}", ', data_format="channels_last"')
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
        jax.add("drop_path", "DropPath", "")
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
    numpy_call = f"noiseshape.numpy.dropout(x, {p}{numpy_spec}, seed={ex.seed}{_where(ex)})"
    return {
        "keras": keras,
        "flax": flax,
        "noiseshape.torch": nst,
        "torch.nn": torch_nn,
        "noiseshape.numpy": numpy_call,
        "noiseshape.jax": jax.facts,
    }


def _where(ex: Explanation) -> str:
    """``stream=`` and ``batch_offset=`` where the report draws at other values than the defaults."""
    return "".join(f", {name}={v}" for name, v in (("stream", ex.stream), ("batch_offset", ex.batch_offset)) if v)


class _JaxForms:
    """The noiseshape.jax function and Flax module spellings, in step with the noiseshape.torch ones.

    Arguments are spelled as in Flax (``broadcast_dims``); spatial forms always name ``data_format``, as
    their default (channels last) differs from noiseshape.torch's. Every form draws the report's mask
    with one ``key`` that stands for its seed: ``jax.random.key(s)`` is seed ``s`` below 2**32 (above,
    it keeps only the low 32 bits unless ``jax_enable_x64`` is on), a larger seed is spelled by its words.
    """

    def __init__(self, ex: Explanation, p: str):
        self.p = p
        seed = ex.seed
        if seed < 2**32:
            key = f"jax.random.key({seed})"
        else:
            key = f"jax.random.wrap_key_data(jax.numpy.array([{seed >> 32}, {seed & 0xFFFFFFFF}], jax.numpy.uint32))"
        self.stream = f", stream={ex.stream}" if ex.stream else ""
        offset = f", batch_offset={ex.batch_offset}" if ex.batch_offset else ""
        self.where = _where(ex)
        self.facts: dict[str, Any] = {
            "key": key,
            "functions": [],
            "linen": [],
            "linen_call": f".apply({{}}, x, deterministic=False, rng=key{offset})",
            "nnx": [],
            "nnx_call": f"(x, rngs=key{offset})",
        }

    def add(self, function: str, module: str, args: str) -> None:
        self.facts["functions"].append(f"noiseshape.jax.{function}(x, {self.p}{args}, key=key{self.where})")
        self.facts["linen"].append(f"noiseshape.jax.linen.{module}({self.p}{args}{self.stream})")
        self.facts["nnx"].append(f"noiseshape.jax.nnx.{module}({self.p}{args}{self.stream}, rngs=rngs)")


_UNBATCHED = {
    3: "a 2-D input is read as one unbatched (C, L) sample",
    4: "a 3-D input is read as (N, C, L) with a warning (1-D channel dropout), not as one (C, H, W) sample",
    5: "a 4-D input is read as one unbatched (C, D, H, W) sample",
}


def _layout(k: int, channels_first: bool) -> str:
    spatial = {3: ["L"], 4: ["H", "W"], 5: ["D", "H", "W"]}[k]
    dims = ["N", "C", *spatial] if channels_first else ["N", *spatial, "C"]
    return "(" + ", ".join(dims) + ")"
