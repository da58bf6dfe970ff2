"""The one error class of noiseshape."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["NoiseShapeError", "axes_text", "fail"]


class NoiseShapeError(ValueError):
    """Raised for every invalid argument given to noiseshape.

    The message starts with a header naming the operation, the spec as given and the input shape,
    then states the precise fact that is wrong and how to fix it.
    """

    __module__ = "noiseshape"


def axes_text(n: int) -> str:
    """``"1 axis"``, ``"3 axes"``: a count of axes as a message says it."""
    return f"{n} axis" if n == 1 else f"{n} axes"


def fail(op: str, fact: str, *, shape: Iterable[object] | None = None, spec: str | None = None) -> NoiseShapeError:
    """Build a :class:`NoiseShapeError` with the standard header.

    ``op`` names the operation (``"dropout"``), ``spec`` the arguments as the user gave them
    (``"noise_shape=(None, 1)"``), ``shape`` the input shape; ``fact`` says what is wrong and the fix.
    """
    header = op
    if spec:
        header += f"({spec})"
    if shape is not None:
        header += f" on input of shape {_fmt_shape(shape)}"
    return NoiseShapeError(f"{header}:\n  {fact}")


def _fmt_shape(shape: Iterable[object]) -> str:
    dims = [str(d) for d in shape]
    if len(dims) == 1:
        return f"({dims[0]},)"
    return "(" + ", ".join(dims) + ")"
