"""The facts as JSON (``noiseshape explain --json``)."""

from __future__ import annotations

from .equivalents import equivalents, flax_broadcast_dims, keras_noise_shape
from .facts import Explanation
from .words import binomial_text, draws_formula, pattern_text

__all__ = ["to_json"]


def to_json(ex: Explanation) -> dict[str, object]:
    """Every fact of the text report, as plain JSON values."""
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
        "draws_total_formula": draws_formula(ex),
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
        "not_shown": [{"axis": a.index, "first": first, "last": last} for a, first, last in ex.left_out()],
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
