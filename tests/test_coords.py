"""Global coordinates: a piece of a larger array (offsets on every axis, a global shape, per-row sample ids)
draws exactly the elements of the larger array's mask, on every path (reference, C core, pure torch, Triton)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import noiseshape.numpy as nsn
from noiseshape import Coords, NoiseShapeError, _core, _rng, global_samples

torch = pytest.importorskip("torch")

import noiseshape.torch as nst  # noqa: E402
from noiseshape.torch import _ops  # noqa: E402
from noiseshape.torch.distributed import accumulate, row_offsets  # noqa: E402

# ---------------------------------------------------------------------------------------------
# the reference formula


def test_reference_index_is_the_row_major_global_coordinate():
    # a (2, 2) block at offset (1, 3) of a (4, 6) array: j = (1 + i) * 6 + (3 + k)
    j = _rng.global_indices((2, 2), (4, 6), (1, 3))
    assert j.tolist() == [[9, 10], [15, 16]]
    # rows in any order: sample ids replace the batch coordinate
    assert _rng.global_indices((2, 3), (None, 3), sample_ids=[4, 1]).tolist() == [[12, 13, 14], [3, 4, 5]]


def test_reference_lanes_at_any_index_match_the_contiguous_lanes():
    j = np.array([0, 7, 8, 13, (1 << 35) - 3, (1 << 35) + 4])
    contiguous = [_rng.lanes(3, 5, int(i), 1)[0] for i in j]
    assert _rng.lanes_at(3, 5, j).tolist() == contiguous
    normals = [_rng.normals(3, 5, int(i), 1)[0] for i in j]
    assert np.array_equal(_rng.normals_at(3, 5, j), normals)


# ---------------------------------------------------------------------------------------------
# the C core's rows entry points against the reference


@pytest.mark.parametrize("run", [1, 3, 8, 17, 40000])
def test_core_rows_match_the_reference(run):
    starts = np.array([0, 5, 8 * 37, (1 << 35) - 13, 2], dtype=np.int64)
    mask = np.empty((starts.size, run), np.uint8)
    _core.keep_mask_rows(mask.ctypes.data, starts.size, run, starts.ctypes.data, 7, 9, 30000, 4)
    j = starts[:, None] + np.arange(run)
    assert np.array_equal(mask.view(bool), _rng.lanes_at(7, 9, j) < 30000)
    z = np.empty((starts.size, run), np.float64)
    _core.normal_rows(z.ctypes.data, 1, starts.size, run, starts.ctypes.data, 7, 9, 4)
    np.testing.assert_allclose(z, _rng.normals_at(7, 9, j), rtol=0, atol=1e-12)


def test_core_rows_reject_bad_starts():
    out = np.empty(8, np.uint8)
    starts = np.array([3, -1], np.int64)
    with pytest.raises(ValueError, match=r"keep_mask_rows: starts\[1\] is negative"):
        _core.keep_mask_rows(out.ctypes.data, 2, 4, starts.ctypes.data, 0, 0, 100, 1)
    with pytest.raises(ValueError, match="normal_rows: out_dtype"):
        _core.normal_rows(out.ctypes.data, 2, 1, 1, np.zeros(1, np.int64).ctypes.data, 0, 0, 1)


# ---------------------------------------------------------------------------------------------
# pieces equal slices of the whole, on every path

PATHS = ["core", "torch", "triton"]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    if request.param == "torch":
        monkeypatch.setattr(_ops, "FORCE_TORCH", True)
    elif request.param == "triton":
        pytest.importorskip("triton")
        monkeypatch.setattr(_ops, "FORCE_TRITON", True)
    return request.param


@st.composite
def pieces(draw):
    """A global shape, a noise spec (None or 1 per axis), and a block of it (possibly empty)."""
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.integers(1, 6)) for _ in range(ndim))
    noise = tuple(draw(st.sampled_from([None, None, 1])) for _ in range(ndim))
    offset, size = [], []
    for n in shape:
        o = draw(st.integers(0, n))
        offset.append(o)
        size.append(draw(st.integers(0, n - o)))
    return shape, noise, tuple(offset), tuple(size)


def _block(offset, size):
    return tuple(slice(o, o + n) for o, n in zip(offset, size))


@settings(max_examples=60, deadline=None)
@given(pieces(), st.integers(0, 2**64 - 1))
def test_numpy_pieces_are_blocks_of_the_whole(piece, seed):
    shape, noise, offset, size = piece
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) + 3.0
    whole = nsn.dropout(x, 0.4, noise, seed=seed)
    coords = Coords(offset=offset, global_shape=shape)
    part = nsn.dropout(x[_block(offset, size)], 0.4, noise, seed=seed, coords=coords)
    assert np.array_equal(part.view(np.int32), whole[_block(offset, size)].view(np.int32))
    mask = nsn.keep_mask(size, 0.4, noise, seed=seed, coords=coords)
    reduced = nsn.keep_mask(shape, 0.4, noise, seed=seed)
    expect = reduced[tuple(slice(0, 1) if k == 1 else s for k, s in zip(noise, _block(offset, size)))]
    assert np.array_equal(mask, expect)


@settings(max_examples=40, deadline=None)
@given(pieces(), st.data())
def test_numpy_rows_in_any_order_with_offsets_on_the_other_axes(piece, draw):
    shape, noise, offset, size = piece
    if size[0] == 0:
        return
    ids = draw.draw(st.lists(st.integers(0, shape[0] - 1), min_size=size[0], max_size=size[0]))
    whole = nsn.keep_mask(shape, 0.5, noise, seed=3)
    coords = Coords(offset=(0, *offset[1:]), global_shape=shape, sample_ids=ids)
    part = nsn.keep_mask(size, 0.5, noise, seed=3, coords=coords)
    rows = [slice(0, 1)] if noise[0] == 1 else [ids]  # a shared batch axis ignores the ids
    rest = [slice(0, 1) if k == 1 else slice(o, o + n) for k, o, n in zip(noise[1:], offset[1:], size[1:])]
    expect = whole[tuple(rows)][(slice(None), *rest)]
    assert np.array_equal(part, expect)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces())
def test_torch_pieces_are_blocks_of_the_whole(path, piece):
    shape, noise, offset, size = piece
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)) + 3.0
    coords = Coords(offset=offset, global_shape=shape)
    blk = _block(offset, size)
    for f in (
        lambda t, **kw: nst.dropout(t, 0.3, noise, seed=5, **kw),
        lambda t, **kw: nst.gaussian_dropout(t, 0.3, noise, seed=6, **kw),
        lambda t, **kw: nst.alpha_dropout(t, 0.3, noise, seed=7, **kw),
        lambda t, **kw: nst.gaussian_noise(t, 0.5, noise, seed=8, **kw),
    ):
        whole = f(x)
        part = f(x[blk].clone(), coords=coords)
        if path == "triton":  # Box-Muller in the interpreter: within float32 rounding of the reference
            torch.testing.assert_close(part, whole[blk], rtol=0, atol=1e-6)
            assert torch.equal(part == 0, whole[blk] == 0)
        else:
            assert torch.equal(part.view(torch.int32), whole[blk].view(torch.int32))


def test_torch_rows_match_the_reference_on_every_path(path):
    shape, offset, size = (5, 6, 7), (1, 2, 3), (3, 3, 4)
    m = nst.keep_mask(size, 0.4, seed=9, stream=4, coords=Coords(offset=offset, global_shape=shape))
    ref = _rng.keep_flags(size, 9, 4, _rng.threshold(0.4), global_reduced=shape, offset=offset)
    assert np.array_equal(m.numpy(), ref)


@pytest.mark.parametrize("frontend", ["numpy", "torch"])
def test_sample_ids_take_the_rows_of_the_whole_batch(frontend):
    ids = [5, 0, 3, 3]  # any order, repeats allowed
    x = np.random.default_rng(2).standard_normal((6, 4, 3)).astype(np.float32) + 3.0
    if frontend == "numpy":
        whole = nsn.dropout(x, 0.5, (None, 1, None), seed=1)
        part = nsn.dropout(x[ids], 0.5, (None, 1, None), seed=1, coords=Coords(sample_ids=ids))
    else:
        whole = nst.dropout(torch.from_numpy(x), 0.5, (None, 1, None), seed=1).numpy()
        part = nst.dropout(
            torch.from_numpy(x[ids]), 0.5, (None, 1, None), seed=1, coords=Coords(sample_ids=torch.tensor(ids))
        ).numpy()
    assert np.array_equal(part, whole[ids])


def test_batch_offset_is_the_axis0_offset_and_masks_stay_as_before():
    x = torch.randn(6, 5) + 3.0
    whole = nst.dropout(x, 0.5, seed=3)
    by_offset = nst.dropout(x[2:4], 0.5, seed=3, batch_offset=2)
    by_coords = nst.dropout(x[2:4], 0.5, seed=3, coords=Coords(offset=(2,)))
    assert torch.equal(by_offset, whole[2:4]) and torch.equal(by_coords, whole[2:4])
    # the contract's known mask (contiguous j0 = 2 * 5) is unchanged
    ref = _rng.keep_flags((2, 5), 3, 0, _rng.threshold(0.5), batch_offset=2)
    assert torch.equal(by_offset != 0, torch.from_numpy(ref))


def test_shared_axes_ignore_offsets_and_the_noise_shape_is_resolved_globally():
    x = torch.randn(4, 8, 6) + 3.0
    whole = nst.dropout(x, 0.5, (None, 8, 1), seed=2)  # 8 is the global size of axis 1
    coords = Coords(offset=(0, 4, 3), global_shape=(4, 8, 6))
    part = nst.dropout(x[:, 4:, 3:], 0.5, (None, 8, 1), seed=2, coords=coords)
    assert torch.equal(part, whole[:, 4:, 3:])
    with pytest.raises(NoiseShapeError, match=r"noise_shape\[1\] is 4 but input axis 1 has size 8"):
        nst.dropout(x[:, 4:], 0.5, (None, 4, 1), seed=2, coords=Coords(offset=(0, 4), global_shape=(4, 8, 6)))


def test_time_major_locked_dropout_takes_sample_offsets():
    x = torch.randn(5, 6, 3) + 3.0  # (T, N, F)
    whole = nst.locked_dropout(x, 0.5, batch_first=False, seed=4)
    part = nst.locked_dropout(x[:, 2:5], 0.5, batch_first=False, seed=4, coords=Coords(offset=(0, 2)))
    assert torch.equal(part, whole[:, 2:5])


@pytest.mark.parametrize(
    ("coords", "match"),
    [
        ("not coords", "coords is a str; give noiseshape.Coords"),
        (Coords(offset=(0, 0, 0, 0)), "coords.offset has 4 entries but x has 3 axes"),
        (Coords(offset=(0, 1)), "x covers indices 1..3 of axis 1 but the global shape"),
        (Coords(offset=(0, 0, -1), global_shape=(2, 3, 4)), r"coords.offset\[2\] is -1"),
        (Coords(global_shape=(2, 3)), r"coords.global_shape is \(2, 3\) but x has 3 axes"),
        (Coords(offset=(1, 0, 0), global_shape=(2, 3, 4)), "x covers indices 1..2 of axis 0"),
        (Coords(sample_ids=[0]), "sample_ids has 1 entries but the batch axis has 2 rows"),
        (Coords(sample_ids=[[0, 1]]), "give a 1-d sequence of integer sample ids"),
        (Coords(sample_ids=[0, -1]), "negative or too large"),
        (Coords(sample_ids=[0, 1], offset=(1,)), "both sample_ids and an offset"),
        (Coords(sample_ids=[0, 5], global_shape=(3, 3, 4)), "sample_ids reaches 5 but the global batch has 3"),
        (Coords(offset=(2**62,), global_shape=(None, 3, 4)), "past 2\\*\\*63"),
    ],
)
def test_bad_coords_are_clear_errors(coords, match):
    with pytest.raises(NoiseShapeError, match=match):
        nst.dropout(torch.ones(2, 3, 4), 0.5, seed=0, coords=coords)
    with pytest.raises(NoiseShapeError, match=match):
        nsn.dropout(np.ones((2, 3, 4), np.float32), 0.5, seed=0, coords=coords)


def test_batch_offset_and_coords_together_are_an_error():
    with pytest.raises(NoiseShapeError, match="batch_offset and coords both given"):
        nst.dropout(torch.ones(2, 3), 0.5, seed=0, batch_offset=1, coords=Coords(offset=(1,)))


# ---------------------------------------------------------------------------------------------
# modules: global_samples and accumulate


def test_global_samples_places_the_rows_of_every_module():
    drop = nst.Dropout(0.5, noise_shape=(None, 1, None), seed=3)
    x = torch.randn(6, 4, 5) + 3.0
    whole = nst.Dropout(0.5, noise_shape=(None, 1, None), seed=3)(x)
    with global_samples(2, 3):
        part = drop(x[2:5])
    assert torch.equal(part, whole[2:5])
    ids = torch.tensor([4, 1])
    with global_samples(sample_ids=ids):
        rows = nst.Dropout(0.5, noise_shape=(None, 1, None), seed=3)(x[ids])
    assert torch.equal(rows, whole[ids])
    with global_samples(0, 3), pytest.raises(NoiseShapeError, match="holds 3; noise calls inside it"):
        nst.Dropout(0.5)(x)
    with pytest.raises(NoiseShapeError, match="give offset and count"), global_samples(2):
        pass


def test_global_samples_leave_explicit_coordinates_alone():
    x = torch.randn(4, 3) + 3.0
    with global_samples(100, 4):
        inside = nst.dropout(x, 0.5, seed=1, batch_offset=4)
    assert torch.equal(inside, nst.dropout(x, 0.5, seed=1, batch_offset=4))


def test_accumulate_draws_one_step_for_any_number_of_micro_batches():
    x = torch.randn(7, 5) + 3.0
    whole = nst.Dropout(0.5, seed=8)
    step1, step2 = whole(x), whole(x)
    drop = nst.Dropout(0.5, seed=8)
    for expect in (step1, step2):
        sizes = [3, 3, 1]
        parts = []
        with accumulate(drop):
            for off, n in zip(row_offsets(sizes), sizes):
                with global_samples(off, n):
                    parts.append(drop(x[off : off + n]))
        assert torch.equal(torch.cat(parts), expect)
    assert drop.rng_key.tolist() == whole.rng_key.tolist() == [8, 2]


def test_row_offsets_is_the_exclusive_prefix_sum():
    assert row_offsets([4, 4, 3, 0]) == [0, 4, 8, 11]
    with pytest.raises(NoiseShapeError, match="sizes cannot be negative"):
        row_offsets([2, -1])


def test_axes_before_an_unbounded_batch_axis_need_the_global_shape():
    from noiseshape._coords import locate

    # batch axis 1 with unknown global size: axis 0 (not shared) would need its stride
    with pytest.raises(NoiseShapeError, match=r"axis 0 comes before the batch axis 1; give coords\.global_shape"):
        locate("op", (2, 3, 4), None, None, coords=Coords(offset=(0, 5)), axis=1)
    spec, at = locate("op", (2, 3, 4), (1, None, None), None, coords=Coords(offset=(0, 5)), axis=1)
    assert at == 5 * 4 and spec.shape == (1, 3, 4)  # a shared axis 0 never enters j


def test_triton_rows_kernels_match_the_reference():
    pytest.importorskip("triton")
    from noiseshape.torch import _triton_rows

    starts = torch.tensor([0, 5, 8 * 37, (1 << 35) - 13, 2], dtype=torch.int64)
    key = _ops.make_key(7, 9)
    j = (starts[:, None] + torch.arange(17)).numpy()
    mask = _triton_rows.keep_mask_rows(key, starts, 17, 30000).view(5, 17)
    assert np.array_equal(mask.numpy().astype(bool), _rng.lanes_at(7, 9, j) < 30000)
    z = _triton_rows.normal_rows(key, starts, 17, torch.float64).view(5, 17)
    np.testing.assert_allclose(z.numpy(), _rng.normals_at(7, 9, j), rtol=0, atol=1e-12)


def test_forced_triton_path_draws_rows_with_the_triton_kernels(monkeypatch):
    pytest.importorskip("triton")
    from noiseshape.torch import _triton_rows

    launched = []
    real = _triton_rows.keep_mask_rows
    monkeypatch.setattr(_triton_rows, "keep_mask_rows", lambda *a: launched.append(1) or real(*a))
    monkeypatch.setattr(_ops, "FORCE_TRITON", True)
    x = torch.randn(4, 6)
    part = nst.dropout(x[:, 2:4], 0.5, seed=1, coords=Coords(offset=(0, 2), global_shape=(4, 6)))
    monkeypatch.setattr(_ops, "FORCE_TRITON", False)
    assert launched and torch.equal(part, nst.dropout(x, 0.5, seed=1)[:, 2:4])
