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

Under ``torch.compile`` none of this runs: dynamo traces the segment once, and AOTAutograd's
partitioner decides what backward recomputes. It would recompute the key from the ``rng_key``
buffer, which by then holds the forward's bumped counter. So traced code reads the key through
:func:`stream_key`, an op that checkpoint's caching mode (the one that tags the traced nodes of a
segment as recomputable) tags as saved instead: backward uses the key the forward drew with, a
2-element tensor per call.
"""

from __future__ import annotations

import inspect
import sys
import types

import torch

__all__ = ["stream_key", "take_stream"]

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


_grad_enabled = torch.is_grad_enabled
_graph_task = torch._C._current_graph_task_id
_saved_hooks = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)


def _maybe_in_segment() -> bool:
    """Whether the call may run inside a checkpointed segment; False only where none can be running.

    A segment's forward runs with grad mode off (``use_reentrant=True``) or under checkpoint's
    saved-tensor hooks (``use_reentrant=False``); its recomputation runs inside a backward pass
    (a graph task). A plain training forward has grad mode on, no such hooks and no graph task, so
    its call skips the walk up the Python stack.
    """
    if _saved_hooks is None:
        return True
    return not _grad_enabled() or _graph_task() != -1 or _saved_hooks(False) is not None


def take_stream(layer, advance, counter) -> int:
    """The stream of ``layer``'s current call: ``advance(counter)`` (take and bump the counter) or a replayed one.

    The Python stack is searched (:func:`_locate`) only where a segment may be running (:func:`_maybe_in_segment`).
    """
    where = _locate() if _CODES is not None and _maybe_in_segment() else None
    if where is None:
        return advance(counter)
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
        stream = advance(counter)
    for seg in forwards:  # segments entered in this run (nested checkpoints) replay it later
        _log(seg).setdefault(id(layer), []).append(stream)
    return stream


# ---------------------------------------------------------------------------------------------
# traced code (torch.compile)


@torch.library.custom_op("noiseshape::stream_key", mutates_args=())
def stream_key(rng_key: torch.Tensor) -> torch.Tensor:
    """A copy of a seeded layer's ``rng_key``: the key of its current call, kept (not recomputed) by checkpoint."""
    return rng_key.clone()


@stream_key.register_fake
def _(rng_key):
    return torch.empty_like(rng_key)


def _must_save(ctx, op, *args, **kwargs):
    from torch.utils.checkpoint import CheckpointPolicy

    return CheckpointPolicy.MUST_SAVE


def _key_is_saved(mode, func, types, args, kwargs):
    """``stream_key`` under checkpoint's caching mode: the mode's own handling, with the policy "must save"."""
    policy = mode.policy_fn
    mode.policy_fn = _must_save
    try:
        return mode.__torch_dispatch__(func, types, args, kwargs)
    finally:
        mode.policy_fn = policy


def _register_saving() -> None:
    from torch.utils import checkpoint as ck

    caching = getattr(ck, "_CachingTorchDispatchMode", None)  # torch 2.13; the compile tests pin it
    if caching is not None:
        torch.library.register_torch_dispatch("noiseshape::stream_key", caching, _key_is_saved)


_register_saving()
