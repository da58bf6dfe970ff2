"""Seeded layers under activation checkpointing: a recomputation reuses the streams of its forward.

A seeded layer draws its masks from ``(seed, stream)`` and advances ``stream`` once per training
call. ``torch.utils.checkpoint`` runs a segment's forward a second time during backward; if that
second run advanced the counter again, it would draw other masks and the gradients would be
wrong. (Unseeded layers need nothing: checkpoint restores torch's RNG state before recomputing.)

:func:`take_stream` finds out from the Python call stack whether a call runs inside a
checkpointed segment and whether that is the segment's forward or its recomputation:

* forward: ``CheckpointFunction.forward`` (``use_reentrant=True``) or ``checkpoint`` itself with its
  ``_CheckpointFrame`` (``use_reentrant=False``) is on the stack. The stream is taken as usual and
  logged, per layer and in call order, on every enclosing segment.
* recomputation: ``CheckpointFunction.backward`` or the unpack hook of ``_checkpoint_hook`` is on
  the stack, holding the segment. The layer's calls replay the logged streams in order (a layer
  may run several times in one segment; segments recompute in any order, each from its own log),
  once per backward pass (keyed by the graph task), and the counter does not move.

Under ``torch.compile`` none of this runs: the traced graph recomputes from the key it saved.
"""

from __future__ import annotations

import inspect
import sys
import types

import torch

__all__ = ["take_stream"]

_LOG = "_noiseshape_streams"
_CURSORS = "_noiseshape_replay"


def _codes():
    try:
        from torch.utils import checkpoint as ck

        unpack = next(
            c
            for c in ck._checkpoint_hook.__init__.__code__.co_consts
            if inspect.iscode(c) and c.co_name == "unpack_hook"
        )
        return (
            ck.CheckpointFunction.forward.__code__,
            inspect.unwrap(ck.checkpoint).__code__,
            ck.CheckpointFunction.backward.__code__,
            unpack,
        )
    except (ImportError, AttributeError, StopIteration):  # another torch: no replay, streams advance as usual
        return None


_CODES = _codes()


def _locate():
    """``(recomputed segment or None, recompute token, forward segments)`` of the current call, or None."""
    fwd_reentrant, ckpt, bwd_reentrant, unpack = _CODES
    forwards = []
    frame: types.FrameType | None = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if code is fwd_reentrant:
            forwards.append(frame.f_locals["ctx"])
        elif code is ckpt:
            gen = frame.f_locals.get("gen")
            if gen is not None and gen.gi_frame is not None:
                forwards.append(gen.gi_frame.f_locals["new_frame"])
        elif code is bwd_reentrant:
            return frame.f_locals["ctx"], torch._C._current_graph_task_id(), forwards
        elif code is unpack:
            local = frame.f_locals
            return local["frame"], local["gid"], forwards
        frame = frame.f_back
    return (None, None, forwards) if forwards else None


def _log(segment) -> dict:
    log = getattr(segment, _LOG, None)
    if log is None:
        log = {}
        setattr(segment, _LOG, log)
    return log


def take_stream(layer, advance) -> int:
    """The stream of ``layer``'s current call: ``advance()`` (take and bump the counter) or a replayed one."""
    where = _locate() if _CODES is not None else None
    if where is None:
        return advance()
    segment, token, forwards = where
    stream = None
    if segment is not None:
        streams = _log(segment).get(id(layer))
        if streams:
            cursors = getattr(segment, _CURSORS, None)
            if cursors is None or cursors[0] != token:
                cursors = (token, dict[int, int]())
                setattr(segment, _CURSORS, cursors)
            pos = cursors[1].get(id(layer), 0)
            cursors[1][id(layer)] = pos + 1
            stream = streams[pos % len(streams)]
    if stream is None:
        stream = advance()
    for seg in forwards:  # segments entered in this run (nested checkpoints) replay it later
        _log(seg).setdefault(id(layer), []).append(stream)
    return stream
