"""Type aliases of the public API (for annotations only; nothing here is checked at run time)."""

from __future__ import annotations

from collections.abc import Sequence
from types import EllipsisType
from typing import SupportsIndex, TypeAlias

__all__ = ["BroadcastDims", "NoiseShape"]

#: A Keras noise shape: per input axis ``None`` (the input's size), ``1`` (shared) or the size; ``...`` once.
NoiseShape: TypeAlias = Sequence[SupportsIndex | EllipsisType | None]
#: Flax ``broadcast_dims``: the axes that share one draw (one axis or several).
BroadcastDims: TypeAlias = SupportsIndex | Sequence[SupportsIndex]
