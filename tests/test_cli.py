"""The command line: ``noiseshape explain`` (text, JSON, plot), the demo and the bench stub."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import noiseshape
from noiseshape import _rng
from noiseshape._cli import main
from noiseshape._spec import resolve

# The folder holding the noiseshape under test (the installed one in CI), for subprocesses.
SITE = str(Path(noiseshape.__file__).resolve().parents[1])


def run(capsys, *args):
    code = main(["explain", *args])
    out, err = capsys.readouterr()
    return code, out, err


def block(out: str, title: str) -> str:
    """The picture printed under the line starting with ``title`` (up to the next blank line)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    depth, end = 0, start
    for end in range(start, len(lines)):  # until the brackets balance
        depth += lines[end].count("[") - lines[end].count("]")
        if depth == 0:
            break
    return "\n".join(lines[start : end + 1])


def grid(text: str, shape) -> np.ndarray:
    assert "..." not in text
    return np.array([float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", text)]).reshape(shape)


def reference(reduced, rate=0.5, seed=0, stream=0, batch_offset=0, batch_shared=False):
    t = _rng.threshold(rate)
    return _rng.keep_flags(reduced, seed, stream, t, batch_offset=batch_offset, batch_shared=batch_shared)


# ------------------------------------------------------------------------------------------ the four pictures


def test_first_example_pictures_match_the_contract(capsys):
    code, out, err = run(capsys, "2,3,4", "--noise-shape", "2,1,4", "--rate", "0.5", "--seed", "0")
    assert code == 0 and err == ""
    x = grid(block(out, "input x"), (2, 3, 4))
    assert (x == np.arange(1, 25).reshape(2, 3, 4)).all()
    reduced = grid(block(out, "reduced mask"), (2, 1, 4))
    expected = reference((2, 1, 4))
    assert (reduced == expected).all()
    mask = grid(block(out, "mask broadcast"), (2, 3, 4))
    assert (mask == mask[:, :1, :]).all()  # constant along the shared axis
    assert (mask == np.broadcast_to(expected, (2, 3, 4))).all()
    output = grid(block(out, "output"), (2, 3, 4))
    assert (output == x * mask * 2).all()


def test_first_example_words(capsys):
    _, out, _ = run(capsys, "2,3,4", "--noise-shape", "2,1,4", "--axes", "batch,timesteps,features")
    assert "Independent draws: 4 per sample, 8 in total" in out
    assert "Each sample draws its own mask" in out
    assert "the same subset is dropped at all 3 timesteps" in out
    assert "Binomial(4, 0.5) of the 4 features" in out
    assert "3 × Binomial(4, 0.5) of the 12 elements" in out
    dropped = 4 - reference((2, 1, 4)).sum(axis=(1, 2))
    for s in range(2):
        k = dropped[s]  # none and all are said plainly, not as "the same 0 of 4"
        said = {0: "none of the 4 features is dropped", 4: "all 4 features are dropped"}
        assert f"sample {s}: {said.get(k, f'the same {k} of 4 features are dropped at all 3 timesteps')}" in out


def test_batch_offset_and_stream_follow_the_contract(capsys):
    _, out, _ = run(capsys, "3,2,4", "--broadcast-dims", "1", "--seed", "7", "--stream", "5", "--batch-offset", "6")
    mask = grid(block(out, "reduced mask"), (3, 1, 4))
    assert (mask == reference((3, 1, 4), seed=7, stream=5, batch_offset=6)).all()
    assert not (mask == reference((3, 1, 4), seed=7, stream=5)).all()


def test_rate_scaling_uses_the_realised_keep_probability(capsys):
    _, out, _ = run(capsys, "2,3", "--rate", "0.1")
    t = _rng.threshold(0.1)
    assert f"t = {t}" in out
    mask = grid(block(out, "mask broadcast"), (2, 3))
    output = grid(block(out, "output"), (2, 3))
    assert np.allclose(output, np.arange(1, 7).reshape(2, 3) * mask * 65536 / t, atol=1e-3)


# ------------------------------------------------------------------------------------------ the words


def test_shared_batch_axis_means_every_sample_drops_the_same_units(capsys):
    _, out, _ = run(capsys, "4,3", "--noise-shape", "1,3")
    assert "Every sample drops the same units" in out
    mask = grid(block(out, "mask broadcast"), (4, 3))
    assert (mask == mask[:1]).all()
    assert "Independent draws: 3 per sample, 3 in total" in out
    assert "every sample:" in out and "sample 1:" not in out


def test_full_shape_is_plain_dropout(capsys):
    _, out, _ = run(capsys, "2,3,4")
    assert "no noise_shape (full-shape dropout)" in out
    assert "plain dropout" in out
    assert "Independent draws: 12 per sample, 24 in total" in out
    assert "Binomial(12, 0.5) of the 12 elements (mean 6)" in out
    assert "torch.nn          torch.nn.Dropout(0.5)" in out


def test_one_draw_per_sample_is_drop_path(capsys):
    _, out, _ = run(capsys, "4,3,5", "--noise-shape", "None,1,1")
    assert "A sample is kept or dropped as a whole" in out
    assert "Bernoulli(0.5)" in out
    assert "noiseshape.torch.DropPath(0.5)" in out
    assert 'torchvision.ops.StochasticDepth(0.5, mode="row")' in out
    kept = reference((4, 1, 1)).ravel()
    for s in range(4):
        assert f"sample {s}: {'kept whole' if kept[s] else 'dropped whole'}" in out


def test_axes_of_size_one(capsys):
    code, out, _ = run(capsys, "32,64,50,1", "--noise-shape", "None,64,1,1")
    assert code == 0
    assert re.search(r"axis 3\s+size 1: size 1: nothing to share", out)
    assert "Independent draws: 64 per sample, 2048 in total" in out
    assert "50 × Binomial(64, 0.5) of the 3200 elements" in out
    # Channels first (N, C, H, W) with W = 1: SpatialDropout2d and torch's Dropout2d.
    assert "noiseshape.torch.SpatialDropout2d(0.5)\n" in out
    assert "torch.nn.Dropout2d(0.5)\n" in out
    assert "a 3-D input is read as (N, C, L) with a warning" in out
    assert "channels_last" not in out


def test_large_inputs_are_summarised_not_flooded(capsys):
    _, out, _ = run(capsys, "32,64,50,1", "--noise-shape", "None,64,1,1")
    assert len(out.splitlines()) < 200
    assert "axis 1: indices 0, ..., 63" in out
    _, out, _ = run(capsys, "8,20,16", "--broadcast-dims", "1")
    first_row = block(out, "input x").splitlines()[0]
    assert re.fullmatch(r"\[\[\[\s*1\s+2\s+3 \.\.\.\s+14\s+15\s+16\]", first_row)
    last_row = block(out, "input x").splitlines()[-1]
    assert last_row.split()[-1] == "2560]]]"
    # The shown mask rows are the contract's, at the shown indices.
    reduced_rows = block(out, "reduced mask").replace("...", "").split("]")
    rows = [re.findall(r"[01]", r) for r in reduced_rows if re.search(r"[01]", r)]
    ref = reference((8, 1, 16))
    for row, sample in zip(rows, [0, 1, 6, 7]):
        assert [int(v) for v in row] == ref[sample, 0, [0, 1, 2, 13, 14, 15]].astype(int).tolist()


def test_dynamic_batch_size_is_shown_small_and_said(capsys):
    _, out, _ = run(capsys, "None,3,4", "--noise-shape", "None,1,None")
    assert "Dynamic sizes are shown as: axis 0 (batch) = 2" in out
    assert "B·4 (8 for the sizes shown)" in out
    assert "keras.layers.Dropout(0.5, noise_shape=(None, 1, 4))" in out
    assert grid(block(out, "reduced mask"), (2, 1, 4)).shape == (2, 1, 4)


@pytest.mark.parametrize("token", ["None", "_", "?"])
def test_dynamic_tokens(capsys, token):
    code, out, _ = run(capsys, f"{token},3,4", "--noise-shape", f"{token},1,{token}", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["input_shape"] == [None, 3, 4]
    assert data["noise_shape"] == [2, 1, 4]
    assert data["keras_noise_shape"] == [None, 1, 4]


def test_size_given_for_a_dynamic_axis_is_the_display_size(capsys):
    _, out, _ = run(capsys, "None,3,4", "--noise-shape", "8,1,4", "--json")
    data = json.loads(out)
    assert data["display_shape"] == [8, 3, 4]
    assert data["draws_total"] == 32
    assert data["keras_noise_shape"] == [None, 1, 4]
    _, out, _ = run(capsys, "None,3,4", "--dynamic-size", "5", "--json")
    assert json.loads(out)["display_shape"] == [5, 3, 4]


# ------------------------------------------------------------------------------------------ equivalents


def test_equivalents_channels_last(capsys):
    _, out, _ = run(capsys, "8,20,16", "--broadcast-dims", "1")
    assert "keras.layers.Dropout(0.5, noise_shape=(None, 1, 16))" in out
    assert "flax.linen.Dropout(0.5, broadcast_dims=(1,))" in out
    assert "noiseshape.torch.Dropout(0.5, noise_shape=(None, 1, 16))" in out
    assert "noiseshape.torch.LockedDropout(0.5, batch_first=True)" in out
    assert 'noiseshape.torch.SpatialDropout1d(0.5, data_format="channels_last")' in out
    assert "torch.nn.Dropout1d(0.5) applied to x.permute(0, 2, 1)" in out
    assert "Dropout1d needs channels first" in out


def test_equivalents_channels_first(capsys):
    _, out, _ = run(capsys, "8,16,20", "--noise-shape", "None,16,1")
    assert "noiseshape.torch.SpatialDropout1d(0.5)\n" in out
    assert "torch.nn.Dropout1d(0.5)\n" in out
    assert "needs channels first (N, C, L)" in out
    assert "LockedDropout" not in out


def test_equivalents_without_a_torch_builtin(capsys):
    _, out, _ = run(capsys, "4,5,6", "--noise-shape", "1,5,1", "--json")
    eq = json.loads(out)["equivalents"]
    assert eq["keras"] == "keras.layers.Dropout(0.5, noise_shape=(1, 5, 1))"
    assert eq["flax"] == "flax.linen.Dropout(0.5, broadcast_dims=(0, 2))"
    assert eq["noiseshape.torch"] == ["noiseshape.torch.Dropout(0.5, noise_shape=(1, 5, 1))"]
    assert eq["torch.nn"][0]["layer"] is None


def test_equivalents_in_jax_channels_last(capsys):
    _, out, _ = run(capsys, "8,20,16", "--broadcast-dims", "1")
    eq = out[out.index("  noiseshape.jax ") :]
    assert eq == (
        "  noiseshape.jax    key = jax.random.key(0)  # noiseshape.jax.seed_of(key) == 0\n"
        "                    noiseshape.jax.dropout(x, 0.5, broadcast_dims=(1,), key=key)\n"
        '                    noiseshape.jax.spatial_dropout1d(x, 0.5, data_format="channels_last", key=key)\n'
        "                    noiseshape.jax.linen.Dropout(0.5, broadcast_dims=(1,))\n"
        '                    noiseshape.jax.linen.SpatialDropout1d(0.5, data_format="channels_last")\n'
        "                      called as .apply({}, x, deterministic=False, rng=key)\n"
        "                    noiseshape.jax.nnx.Dropout(0.5, broadcast_dims=(1,), rngs=rngs)\n"
        '                    noiseshape.jax.nnx.SpatialDropout1d(0.5, data_format="channels_last", rngs=rngs)\n'
        "                      called as (x, rngs=key)\n"
    )


def test_equivalents_in_jax_channels_first_name_the_layout(capsys):
    _, out, _ = run(capsys, "2,3,4,5", "--noise-shape", "None,3,1,1", "--rate", "0.25", "--seed", "7")
    assert "  noiseshape.jax    key = jax.random.key(7)  # noiseshape.jax.seed_of(key) == 7\n" in out
    assert "noiseshape.jax.dropout(x, 0.25, broadcast_dims=(2, 3), key=key)\n" in out
    assert 'noiseshape.jax.spatial_dropout2d(x, 0.25, data_format="channels_first", key=key)\n' in out
    assert 'noiseshape.jax.linen.SpatialDropout2d(0.25, data_format="channels_first")\n' in out
    assert 'noiseshape.jax.nnx.SpatialDropout2d(0.25, data_format="channels_first", rngs=rngs)\n' in out
    assert "channels_last" not in out


def test_equivalents_in_jax_drop_path_with_a_large_seed_a_stream_and_an_offset(capsys):
    args = ["4,3,5", "--noise-shape", "None,1,1", "--seed", str(5 << 32 | 9), "--stream", "3", "--batch-offset", "2"]
    _, out, _ = run(capsys, *args, "--json")
    assert json.loads(out)["equivalents"]["noiseshape.jax"] == {
        "key": "jax.random.wrap_key_data(jax.numpy.array([5, 9], jax.numpy.uint32))",
        "functions": [
            "noiseshape.jax.dropout(x, 0.5, broadcast_dims=(1, 2), key=key, stream=3, batch_offset=2)",
            "noiseshape.jax.drop_path(x, 0.5, key=key, stream=3, batch_offset=2)",
        ],
        "linen": [
            "noiseshape.jax.linen.Dropout(0.5, broadcast_dims=(1, 2), stream=3)",
            "noiseshape.jax.linen.DropPath(0.5, stream=3)",
        ],
        "linen_call": ".apply({}, x, deterministic=False, rng=key, batch_offset=2)",
        "nnx": [
            "noiseshape.jax.nnx.Dropout(0.5, broadcast_dims=(1, 2), stream=3, rngs=rngs)",
            "noiseshape.jax.nnx.DropPath(0.5, stream=3, rngs=rngs)",
        ],
        "nnx_call": "(x, rngs=key, batch_offset=2)",
    }
    _, out, _ = run(capsys, *args)
    assert (
        f"noiseshape.numpy.dropout(x, 0.5, noise_shape=(None, 1, 1), seed={5 << 32 | 9}, stream=3, batch_offset=2)\n"
        in out
    )


def test_equivalents_in_jax_without_shared_axes(capsys):
    _, out, _ = run(capsys, "4,5,6", "--noise-shape", "1,5,1", "--json")
    eq = json.loads(out)["equivalents"]["noiseshape.jax"]
    assert eq["functions"] == ["noiseshape.jax.dropout(x, 0.5, broadcast_dims=(0, 2), key=key)"]
    assert eq["linen"] == ["noiseshape.jax.linen.Dropout(0.5, broadcast_dims=(0, 2))"]
    _, out, _ = run(capsys, "2,3")
    assert "                    noiseshape.jax.dropout(x, 0.5, key=key)\n" in out
    assert "                    noiseshape.jax.nnx.Dropout(0.5, rngs=rngs)\n" in out


def _torch_with_seed(seed: int):
    """A ``noiseshape`` namespace whose ``torch`` layers are built with ``seed=seed``."""
    import noiseshape.torch as nst

    layers = {n: functools.partial(getattr(nst, n), seed=seed) for n in nst.__all__ if n[0].isupper()}
    return types.SimpleNamespace(torch=types.SimpleNamespace(**layers))


@pytest.mark.parametrize(
    "args",
    [
        ["8,6,4", "--broadcast-dims", "1", "--seed", "7"],
        ["2,3,4,5", "--noise-shape", "None,3,1,1", "--seed", "11"],
        ["3,2,2,2,4", "--noise-shape", "None,1,1,1,4", "--rate", "0.3"],
        ["6,3,5", "--noise-shape", "None,1,1", "--seed", str(5 << 32 | 9)],
        ["4,5,6", "--noise-shape", "1,5,1", "--seed", "3"],
        ["3,4", "--seed", "2"],
    ],
)
def test_jax_spellings_draw_the_masks_of_the_torch_spellings(capsys, args):
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    import noiseshape.jax

    _, out, _ = run(capsys, *args, "--json")
    data = json.loads(out)
    shape, eq = tuple(data["input_shape"]), data["equivalents"]
    jx = eq["noiseshape.jax"]
    ns = {"jax": jax, "noiseshape": noiseshape, "x": jnp.ones(shape), "rngs": nnx.Rngs(dropout=99)}
    key = ns["key"] = eval(jx["key"], ns)
    seed = noiseshape.jax.seed_of(key)
    assert seed == data["seed"]
    masks = [eval(line, ns) for line in jx["functions"]]
    masks += [eval(f"m{jx['linen_call']}", {**ns, "m": eval(line, ns)}) for line in jx["linen"]]
    masks += [eval(f"m{jx['nnx_call']}", {**ns, "m": eval(line, ns)}) for line in jx["nnx"]]
    # The printed noiseshape.torch layers, built with seed=seed_of(key), on the same input.
    torch_ns = {"noiseshape": _torch_with_seed(seed)}
    torch_masks = [eval(line, torch_ns)(torch.ones(shape)).numpy() != 0 for line in eq["noiseshape.torch"]]
    reduced = tuple(data["noise_shape"])
    expected = reference(reduced, data["rate"], seed, batch_shared=data["same_across_batch"])
    expected = np.broadcast_to(expected, shape)
    assert len(masks) == 3 * len(jx["functions"]) >= 3
    assert all(np.array_equal(m, expected) for m in torch_masks)
    for m in masks:
        assert np.array_equal(np.asarray(m) != 0, expected)
    assert 0 < expected.sum() < expected.size  # the masks compared are not trivial


def test_numpy_and_jax_spellings_carry_the_stream_and_the_offset(capsys):
    import jax

    import noiseshape.jax
    import noiseshape.numpy

    _, out, _ = run(capsys, "6,3,5", "--noise-shape", "None,1,5", "--stream", "4", "--batch-offset", "3", "--json")
    data = json.loads(out)
    eq = data["equivalents"]
    x = np.ones((6, 3, 5), np.float32)
    ns = {"jax": jax, "noiseshape": noiseshape, "x": x}
    ns["key"] = eval(eq["noiseshape.jax"]["key"], ns)
    expected = np.broadcast_to(reference((6, 1, 5), seed=0, stream=4, batch_offset=3), x.shape)
    assert np.array_equal(eval(eq["noiseshape.numpy"], ns) != 0, expected)
    assert np.array_equal(np.asarray(eval(eq["noiseshape.jax"]["functions"][0], ns)) != 0, expected)
    assert not np.array_equal(expected, np.broadcast_to(reference((6, 1, 5)), x.shape))


# ------------------------------------------------------------------------------------------ json


@pytest.mark.parametrize(
    ("shape", "args", "noise_shape", "broadcast_dims"),
    [
        ((2, 3, 4), ["--noise-shape", "2,1,4"], (2, 1, 4), None),
        ((8, 20, 16), ["--broadcast-dims", "1"], None, (1,)),
        ((32, 64, 50, 1), ["--noise-shape", "None,64,1,1"], (None, 64, 1, 1), None),
        ((4, 3), ["--noise-shape", "1,..."], (1, ...), None),
        ((2, 3, 4), [], None, None),
    ],
)
def test_json_matches_resolve(capsys, shape, args, noise_shape, broadcast_dims):
    code, out, _ = run(capsys, ",".join(map(str, shape)), *args, "--json")
    assert code == 0
    data = json.loads(out)
    spec = resolve(shape, noise_shape, broadcast_dims)
    assert data["input_shape"] == list(shape)
    assert data["noise_shape"] == list(spec.shape)
    assert data["broadcast_dims"] == [i for i, s in enumerate(spec.shared) if s]
    assert data["shared_axes"] == [i for i, s in enumerate(spec.shared) if s and shape[i] > 1]
    assert data["draws_total"] == int(np.prod(spec.shape))
    assert data["draws_per_sample"] == int(np.prod(spec.shape[1:]))
    assert data["same_across_batch"] == spec.shared[0]
    assert data["dropped_per_sample"]["draws"] == {"distribution": "binomial", "n": data["draws_per_sample"], "p": 0.5}
    assert data["threshold"] == 32768 and data["keep_prob"] == 0.5 and data["scale"] == 2.0
    assert set(data["equivalents"]) == {
        "keras",
        "flax",
        "noiseshape.torch",
        "torch.nn",
        "noiseshape.numpy",
        "noiseshape.jax",
    }
    if data["summarised"]:
        assert "masks" not in data
    else:
        ref = reference(spec.shape, batch_shared=spec.batch_shared)
        assert np.array_equal(np.array(data["masks"]["reduced"]), ref.astype(int))
        assert np.array_equal(np.array(data["masks"]["broadcast"]), np.broadcast_to(ref, shape).astype(int))


def test_json_realised_counts(capsys):
    _, out, _ = run(capsys, "3,2,5", "--broadcast-dims", "1", "--seed", "11", "--json")
    data = json.loads(out)
    ref = reference((3, 1, 5), seed=11)
    assert [d["dropped_draws"] for d in data["dropped_this_draw"]] == (5 - ref.sum(axis=(1, 2))).tolist()
    assert data["dropped_per_sample"]["elements"]["scale"] == 2
    assert data["dropped_per_sample"]["elements"]["mean"] == 5.0


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["2,x,4"], "input shape entry 1 is 'x'"),
        (["2,3,4", "--noise-shape", "2,1"], "noise_shape has 2 entries but the input has 3 axes"),
        (["2,3,4", "--noise-shape", "2,1,5"], "noise_shape[2] is 5 but input axis 2 has size 4"),
        (["2,3,4", "--noise-shape", "None,abc,4"], "noise_shape[1] is 'abc'"),
        (["2,3,4", "--noise-shape", "None,1.0,4"], "use the integer 1"),
        (["2,3,4", "--rate", "1.5"], "rate is 1.5"),
        (["2,3,4", "--rate", "high"], "rate is 'high'"),
        (["2,3,4", "--broadcast-dims", "3"], "broadcast_dims[0] is 3 but the input has 3 axes"),
        (["2,3,4", "--broadcast-dims", "x"], "broadcast_dims[0] is 'x'"),
        (["2,3,4", "--broadcast-dims", "1", "--noise-shape", "None,1,4"], "both given"),
        (["2,3,4", "--seed", "-1"], "seed is -1"),
        (["2,3,4", "--axes", "batch,time"], "--axes names 2 axes but the input has 3"),
        (["2,0,4"], "input axis 1 has size 0"),
        (["2,3,4", "--plot", "out.pdf"], "ending in .png or .svg"),
    ],
)
def test_bad_input_exits_2_with_the_library_message(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    assert message in err
    assert err.startswith("noiseshape explain")
    assert "Traceback" not in err


def test_usage_errors_exit_2(capsys):
    assert main(["explain"]) == 2
    assert "required: shape" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ plot


def test_plot_png(capsys, tmp_path):
    import matplotlib  # noqa: F401  (the plot extra; installed in CI)

    path = tmp_path / "mask.png"
    code, out, _ = run(capsys, "2,3,4", "--noise-shape", "None,1,4", "--plot", str(path))
    assert code == 0
    assert f"Plot written to {path}" in out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 2000


def test_plot_svg_has_a_panel_per_sample_and_labels(capsys, tmp_path):
    import matplotlib  # noqa: F401  (the plot extra; installed in CI)

    path = tmp_path / "mask.svg"
    code, _, _ = run(
        capsys, "3,2,5", "--broadcast-dims", "1", "--axes", "batch,timesteps,features", "--plot", str(path)
    )
    assert code == 0
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    text = path.read_text()
    for words in ("sample 0", "sample 2", "features", "timesteps", "kept", "dropped"):
        assert words in text


def test_plot_json_reports_the_file(capsys, tmp_path):
    import matplotlib  # noqa: F401  (the plot extra; installed in CI)

    path = tmp_path / "m.png"
    _, out, _ = run(capsys, "2,3", "--json", "--plot", str(path))
    assert json.loads(out)["plot"] == str(path) and path.exists()


def test_plot_without_matplotlib_gives_a_hint(capsys, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    path = tmp_path / "mask.png"
    code, out, err = run(capsys, "2,3,4", "--noise-shape", "None,1,4", "--plot", str(path))
    assert code == 1
    assert err.strip().splitlines() == [
        "--plot needs matplotlib, which is not installed: pip install 'noiseshape[plot]'"
    ]
    assert "Traceback" not in err
    assert "Equivalent spellings" in out  # the explanation is still printed
    assert not path.exists()


def test_plot_to_an_unwritable_place(capsys, tmp_path):
    import matplotlib  # noqa: F401  (the plot extra; installed in CI)

    code, _, err = run(capsys, "2,3", "--plot", str(tmp_path / "missing" / "m.png"))
    assert code == 1
    assert "cannot write" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ subprocess, demo, bench


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = SITE + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_python_m_noiseshape_explain():
    cmd = [sys.executable, "-m", "noiseshape", "explain", "8,20,16", "--broadcast-dims", "1", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["noise_shape"] == [8, 1, 16]
    bad = [sys.executable, "-m", "noiseshape", "explain", "2,3,4", "--rate", "1.5"]
    proc = subprocess.run(bad, capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 2
    assert "rate is 1.5" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_is_the_default(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "noise_shape in one picture" in out
    assert "(2, 1, 4)" in out
    assert "seed=13" in out
    mask = np.array([int(v) for v in re.findall(r"[01]", block(out, ">>> ns.numpy.keep_mask"))]).reshape(2, 1, 4)
    assert (mask == reference((2, 1, 4), seed=13)).all()
    output = grid(block(out, ">>> ns.numpy.dropout"), (2, 3, 4))
    assert (output == np.arange(1, 25).reshape(2, 3, 4) * mask * 2).all()


def test_demo_shows_the_idea_at_a_glance(capsys):
    main(["demo"])
    out = capsys.readouterr().out
    mask = np.array([int(v) for v in re.findall(r"[01]", block(out, ">>> ns.numpy.keep_mask"))]).reshape(2, 4)
    kept = mask.sum(axis=1)
    assert ((kept > 0) & (kept < 4)).all()  # every sample keeps some features and drops some
    assert (mask[0] != mask[1]).any()  # and the samples differ
    for s in range(2):
        words = " and ".join(str(f) for f in np.flatnonzero(mask[s]))
        assert f"sample {s} keeps features {words} at every timestep" in out


def test_bench_is_passed_its_arguments(monkeypatch):
    seen = []
    fake = types.ModuleType("noiseshape._bench")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "noiseshape._bench", fake)
    assert main(["bench", "--repeats", "3", "-h"]) == 0
    assert seen == [["--repeats", "3", "-h"]]


def test_bench_unavailable_is_one_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "noiseshape._bench", None)
    assert main(["bench"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("noiseshape bench is not available")


# ------------------------------------------------------------------------------------------ rough edges


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["99999999999999999999,2"], "more than the 2**63"),
        (["2,3", "--noise-shape", "None,1", "--batch-offset", "18446744073709551615"], "past 2**63"),
        (["2,3", "--batch-offset", str(((1 << 63) - 1 - 6) // 3 + 1)], "past 2**63"),
        (["None,3", "--dynamic-size", "99999999999999999999999"], "more than the 2**63"),
        ([""], "input shape is empty"),
        (["()"], "input shape is empty"),
        (["2,3", "--axes", "batch,"], "--axes label 1 is empty"),
    ],
)
def test_out_of_range_input_is_a_clear_error_not_a_traceback(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("noiseshape explain")
    assert message in err
    assert "Traceback" not in err and "OverflowError" not in err


def test_the_largest_batch_offset_that_fits_is_explained(capsys):
    offset = ((1 << 63) - 1 - 6) // 3  # 3 draws per sample: the last global index is just below 2**63 - 1
    code, out, _ = run(capsys, "2,3", "--batch-offset", str(offset), "--json")
    assert code == 0
    data = json.loads(out)
    assert np.array_equal(np.array(data["masks"]["reduced"]), reference((2, 3), batch_offset=offset).astype(int))


def test_both_spellings_hint_has_the_input_rank(capsys):
    code, _, err = run(capsys, "2,3,4", "--noise-shape", "None,1,4", "--broadcast-dims", "1")
    assert code == 2
    assert "broadcast_dims=(1,) is noise_shape=(None, 1, None)" in err
    _, _, err = run(capsys, "2,3,4,5", "--noise-shape", "None,1,4,5", "--broadcast-dims", "1,-1")
    assert "broadcast_dims=(1, -1) is noise_shape=(None, 1, None, 1)" in err


def test_rate_one_drops_everything_without_a_zero_scale(capsys):
    code, out, _ = run(capsys, "2,3", "--rate", "1")
    assert code == 0
    assert "65536/t = 0" not in out and "x * mask * 0" not in out
    assert "t = 0: nothing is kept" in out
    assert (grid(block(out, "output"), (2, 3)) == 0).all()


def test_singular_axis_labels_read_as_positions(capsys):
    _, out, _ = run(capsys, "2,28,3", "--noise-shape", "None,1,3", "--axes", "batch,height,channels", "--seed", "0")
    assert not re.search(r"28 height(?! positions)", out)
    assert "one draw reused at all 28 height positions" in out
    assert "the same subset is dropped at all 28 height positions" in out
    assert "at each of the 3 channels" in out  # a plural label is used as it is


def test_realised_counts_say_none_and_all_plainly(capsys):
    # seed 0: sample 0 drops 2 of 3 channels, sample 1 all 3 (see the contract below); find a seed with none
    dropped = {}
    for seed in range(40):
        d = 3 - reference((2, 1, 3), seed=seed).sum(axis=(1, 2))
        dropped.setdefault(int(d[0]), seed)
    assert {0, 3} <= set(dropped)
    _, out, _ = run(capsys, "2,28,3", "--noise-shape", "None,1,3", "--axes", "batch,height,channels", "--seed",
                    str(dropped[0]))  # fmt: skip
    assert "sample 0: none of the 3 channels is dropped (0 of 84 elements)" in out
    assert "the same 0 of" not in out
    _, out, _ = run(capsys, "2,28,3", "--noise-shape", "None,1,3", "--axes", "batch,height,channels", "--seed",
                    str(dropped[3]))  # fmt: skip
    assert "sample 0: all 3 channels are dropped (84 of 84 elements)" in out
    assert "the same 3 of 3" not in out


def test_version(capsys):
    from noiseshape import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"noiseshape {__version__}\n"


def test_plot_says_which_samples_and_indices_it_leaves_out(capsys, tmp_path):
    import matplotlib  # noqa: F401  (the plot extra; installed in CI)

    path = tmp_path / "mask.svg"
    code, _, _ = run(capsys, "8,20,6,5", "--broadcast-dims", "3", "--plot", str(path))
    assert code == 0
    text = path.read_text()
    assert "not shown: samples 1 to 6" in text
    assert "axis 1 indices 1 to 18" in text and "axis 2 indices 2 to 3" in text
    path = tmp_path / "whole.svg"
    run(capsys, "2,3,4", "--plot", str(path))
    assert "not shown" not in path.read_text()


@pytest.mark.parametrize(
    ("shape", "rows", "row_gaps"),
    [
        ("9,5", 1, []),  # one row per sample panel; samples are left out between panels
        ("2,9,5", 4, [2]),  # rows are axis 1: 0, 1 | 7, 8
        ("2,6,5,3", 8, [2, 4, 6]),  # rows are (axis 1, axis 2): axis 2 skips inside each axis-1 block, axis 1 too
        ("2,3,9,4,3", 8, [1, 2, 3, 4, 5, 6, 7]),  # three summarised axes: every row boundary skips
    ],
)
def test_plot_marks_skipped_rows_in_every_layout(shape, rows, row_gaps):
    from noiseshape._explain import explain
    from noiseshape._explain.plot import panels

    ex = explain(tuple(int(n) for n in shape.split(",")))
    pics = ex.pictures()
    for panel in panels(ex, pics["mask"], ex.shown, ex.gaps):
        assert panel.grid.shape[0] == rows
        assert len(panel.yticks) == rows
        assert panel.row_gaps == row_gaps


def test_negative_zero_rate_reads_as_zero(capsys):
    code, out, _ = run(capsys, "2,3", "--rate", "-0")
    assert code == 0
    assert out.splitlines()[0].endswith("rate 0") and "-0" not in out
