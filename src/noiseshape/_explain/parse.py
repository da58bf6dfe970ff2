"""Reading the command line's comma-separated shapes, axes and numbers."""

from __future__ import annotations

import re

from .._errors import fail
from .facts import OP

__all__ = ["DYNAMIC", "int_arg", "parse_dims", "parse_noise_shape", "parse_rate", "parse_shape", "split"]

DYNAMIC = ("none", "_", "?")


def split(text: str) -> list[str]:
    """``"(2, 3)"`` -> ``["2", "3"]``; an empty text (or ``()``) gives no entries."""
    text = text.strip().strip("()[]").strip()
    if not text:
        return []
    return [t.strip() for t in text.split(",")]


def parse_shape(text: str) -> tuple[int | None, ...]:
    """``"None,64,50,1"`` -> ``(None, 64, 50, 1)``; ``None``, ``_`` and ``?`` mark a dynamic size."""
    out: list[int | None] = []
    for i, tok in enumerate(split(text)):
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


def parse_noise_shape(text: str) -> tuple[object, ...]:
    """``"None,1,..."`` -> ``(None, 1, Ellipsis)``; non-integers are passed on for :func:`resolve` to judge."""
    out: list[object] = []
    for i, tok in enumerate(split(text)):
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


def parse_dims(text: str) -> tuple[int, ...]:
    """``"1,2"`` -> ``(1, 2)``: the axes that share one draw."""
    out: list[int] = []
    for i, tok in enumerate(split(text)):
        if not re.fullmatch(r"[+-]?\d+", tok):
            raise fail(
                OP,
                f"broadcast_dims[{i}] is {tok!r}; give integer axes separated by commas, e.g. 1 or 2,3",
                spec=f"broadcast_dims={text!r}",
            )
        out.append(int(tok))
    return tuple(out)


def parse_rate(text: str) -> float | str:
    """A float when ``text`` reads as one, else the text itself, for :func:`check_rate` to reject."""
    try:
        return float(text)
    except ValueError:
        return text


def int_arg(text: str) -> int | str:
    """An int when ``text`` reads as one, else the text itself, for the range checks to reject."""
    return int(text) if re.fullmatch(r"\s*[+-]?\d+\s*", text) else text
