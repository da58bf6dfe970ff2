"""The torch frontend against the mask contract: pure-torch path, C-core path and the NumPy reference, bit for bit."""

import contextlib
import ctypes
from typing import ClassVar

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import noiseshape.torch as nst  # noqa: E402
from noiseshape import NoiseShapeError, _rng  # noqa: E402
from noiseshape._spec import resolve  # noqa: E402
from noiseshape.torch import _eager, _ops, _philox  # noqa: E402

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


class FakeCore:
    """The C core's Python API written with the NumPy reference, used when the extension is not built.

    It reads and writes raw pointers like the real core, so the frontend's pointer, stride and
    dtype plumbing is tested either way.
    """

    _TYPES: ClassVar[dict] = {0: torch.float32, 1: torch.float64, 2: torch.float16, 3: torch.bfloat16}

    @staticmethod
    def _view(ptr, count, dtype):
        nbytes = count * torch.empty((), dtype=dtype).element_size()
        if nbytes == 0:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer((ctypes.c_char * nbytes).from_address(ptr), dtype=dtype, count=count)

    def _scaled(self, x, keep, scale):
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        y = (x.to(compute) * scale).to(x.dtype)
        return torch.where(keep, y.masked_fill_(y.isnan(), float("nan")), torch.zeros((), dtype=x.dtype))

    def keep_mask(self, out, n, seed, stream, j0, t, nthreads):
        flags = _rng.lanes(seed, stream, j0, n).astype(np.int64) < t
        self._view(out, n, torch.uint8).copy_(torch.from_numpy(flags.astype(np.uint8)))

    def dropout(self, dtype, x_ptr, y_ptr, n, seed, stream, j0, t, scale, bits_ptr, nthreads):
        keep = torch.from_numpy(_rng.lanes(seed, stream, j0, n).astype(np.int64) < t)
        x = self._view(x_ptr, n, self._TYPES[dtype])
        self._view(y_ptr, n, self._TYPES[dtype]).copy_(self._scaled(x, keep, scale))
        if bits_ptr:
            packed = np.packbits(keep.numpy(), bitorder="little")
            self._view(bits_ptr, packed.size, torch.uint8).copy_(torch.from_numpy(packed))

    def apply_bits(self, dtype, x_ptr, y_ptr, bits_ptr, n, scale, nthreads):
        bits = self._view(bits_ptr, (n + 7) // 8, torch.uint8).numpy()
        keep = torch.from_numpy(np.unpackbits(bits, bitorder="little")[:n].astype(bool))
        x = self._view(x_ptr, n, self._TYPES[dtype])
        self._view(y_ptr, n, self._TYPES[dtype]).copy_(self._scaled(x, keep, scale))

    def _strided(self, ptr, shape, strides, dtype):
        extent = 1 + sum((n - 1) * s for n, s in zip(shape, strides))
        return self._view(ptr, extent, dtype).as_strided(shape, strides)

    def apply_mask(self, dtype, x_ptr, y_ptr, mask_ptr, shape, xs, ys, ms, scale, nthreads):
        assert all(s >= 0 for s in xs + ys + ms)
        t = self._TYPES[dtype]
        x = self._strided(x_ptr, shape, xs, t)
        keep = self._strided(mask_ptr, shape, ms, torch.uint8).bool()
        self._strided(y_ptr, shape, ys, t).copy_(self._scaled(x, keep, scale))

    def normal(self, out, out_dtype, n, seed, stream, j0, nthreads):
        z = torch.from_numpy(_rng.normals(seed, stream, j0, n))
        self._view(out, n, self._TYPES[out_dtype]).copy_(z)

    def gaussian_add(self, dtype, x_ptr, y_ptr, n, seed, stream, j0, stddev, nthreads):
        t = self._TYPES[dtype]
        z = torch.from_numpy(_rng.normals(seed, stream, j0, n))
        noise = z.to(torch.float64 if t == torch.float64 else torch.float32) * stddev
        y = noise if not x_ptr else (self._view(x_ptr, n, t).to(noise.dtype) + noise).to(t)
        self._view(y_ptr, n, t).copy_(y)


@pytest.fixture
def core_path(monkeypatch):
    """The CPU path through the C core (the real one when built, else :class:`FakeCore`)."""
    try:
        from noiseshape import _core  # noqa: F401
    except ImportError:
        monkeypatch.setattr(_ops, "_core_module", FakeCore())
        monkeypatch.setattr(_ops, "_threads", lambda n=0: 1)
    monkeypatch.setattr(_ops, "FORCE_TORCH", False)
    assert _ops.core_for(torch.device("cpu")) is not None


@contextlib.contextmanager
def pure_torch():
    old = _ops.FORCE_TORCH
    _ops.FORCE_TORCH = True
    try:
        yield
    finally:
        _ops.FORCE_TORCH = old


def same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    if a.dtype.is_floating_point:
        width = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        a, b = a.contiguous().view(width), b.contiguous().view(width)
    assert torch.equal(a, b)


def reference(x, p, noise_shape=None, broadcast_dims=None, *, seed, stream=0, batch_offset=0):
    """The contract with NumPy flags: reduced mask, broadcast, select, scale in float32 (float64)."""
    spec = resolve(tuple(x.shape), noise_shape, broadcast_dims)
    t = _rng.threshold(p)
    flags = _rng.keep_flags(spec.shape, seed, stream, t, batch_offset=batch_offset, batch_shared=spec.batch_shared)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    scaled = (x.to(compute) * _rng.keep_scale(t)).to(x.dtype)
    scaled.masked_fill_(scaled.isnan(), float("nan"))  # canonical NaN (bfloat16: 0x7FC0)
    return torch.where(torch.from_numpy(flags), scaled, torch.zeros((), dtype=x.dtype))


# ---------------------------------------------------------------------------------------------
# the pure-torch generator


@pytest.mark.parametrize(
    ("seed", "stream", "j0", "n"),
    [(0, 0, 0, 1), (0, 0, 0, 100), (2**64 - 1, 2**64 - 1, 13, 77), (123456789012345, 987654321, 2**40 + 3, 1000)],
)
def test_pure_torch_lanes_and_normals_match_reference(seed, stream, j0, n):
    key = torch.tensor([signed(seed), signed(stream)])
    lanes = _philox.lanes(key, j0, n).numpy()
    np.testing.assert_array_equal(lanes, _rng.lanes(seed, stream, j0, n).astype(np.int64))
    z = _philox.normals(key, j0, n).numpy()
    np.testing.assert_allclose(z, _rng.normals(seed, stream, j0, n), rtol=1e-13, atol=1e-13)


def test_pure_torch_known_answer_vector_and_high_blocks():
    w = _philox.words(torch.zeros(2, dtype=torch.int64), 0, 1)[0].tolist()
    assert w == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]  # Random123, counter = key = 0
    seed, stream, block = 0xA4093822299F31D0, 0x03707344_13198A2E, (1 << 62) + 12345
    ours = _philox.words(torch.tensor([signed(seed), signed(stream)]), block, 3).numpy()
    np.testing.assert_array_equal(ours, _rng.block_words(seed, stream, block, 3).astype(np.int64))


def test_pack_bits_is_numpy_little_bitorder():
    flags = torch.rand(1003, generator=torch.Generator().manual_seed(0)) < 0.5
    packed = _philox.pack_bits(flags)
    np.testing.assert_array_equal(packed.numpy(), np.packbits(flags.numpy(), bitorder="little"))
    assert torch.equal(_philox.unpack_bits(packed, 1003), flags)


# ---------------------------------------------------------------------------------------------
# both paths against the reference, bit for bit

SPECS = [
    ((2, 3, 4), (None, 1, 4), None),
    ((2, 3, 4), None, (1,)),
    ((2, 3, 37), None, None),
    ((8, 64, 5, 1), (None, 64, 1, 1), None),
    ((5, 7, 9), (1, None, 1), None),
    ((3, 1000), (None, 1), None),
]


@pytest.mark.parametrize("path", ["core", "torch"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "noise_shape", "broadcast_dims"), SPECS)
def test_dropout_matches_reference(core_path, path, dtype, shape, noise_shape, broadcast_dims):
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 3).to(dtype)
    x.view(-1)[::7] = float("nan")  # dropped nan becomes 0, kept nan stays nan
    expected = reference(x, 0.3, noise_shape, broadcast_dims, seed=2**63 + 5, stream=7, batch_offset=3)
    with pure_torch() if path == "torch" else contextlib.nullcontext():
        y = nst.dropout(x, 0.3, noise_shape, broadcast_dims=broadcast_dims, seed=2**63 + 5, stream=7, batch_offset=3)
    same_bits(y, expected)


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced", "expanded"])
def test_layouts_match_reference_on_both_paths(core_path, layout):
    base = torch.randn(4, 6, 5, 3, generator=torch.Generator().manual_seed(2))
    x = {
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "transposed": base.transpose(1, 3),
        "sliced": base[:, ::2, 1:],
        "expanded": base[:, :1].expand(4, 6, 5, 3),
    }[layout]
    for noise_shape in [None, (None, 1, None, None), (None, None, 1, 1)]:
        expected = reference(x, 0.25, noise_shape, seed=11)
        y_core = nst.dropout(x, 0.25, noise_shape, seed=11)
        with pure_torch():
            y_torch = nst.dropout(x, 0.25, noise_shape, seed=11)
        same_bits(y_core, expected)
        same_bits(y_torch, expected)
    if layout == "channels_last":
        assert nst.dropout(x, 0.25, (None, 1, None, None), seed=1).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("save_bits", [True, False])
def test_backward_matches_on_both_paths(core_path, monkeypatch, save_bits):
    monkeypatch.setattr(_ops, "SAVE_BITS", save_bits)
    monkeypatch.setattr(_eager, "NATIVE_MAX", 0)  # bit for bit: the recomputing backward (see test_torch_native)
    x = torch.randn(3, 5, 17, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 5, 17, dtype=torch.float64)
    grads = []
    for ctx in (contextlib.nullcontext(), pure_torch()):
        with ctx:
            for noise_shape in [None, (None, 1, None)]:
                x.grad = None
                nst.dropout(x, 0.4, noise_shape, seed=3).backward(g)
                expected = reference(g, 0.4, noise_shape, seed=3)
                same_bits(x.grad, expected)
                grads.append(x.grad.clone())
    assert torch.equal(grads[0], grads[2]) and torch.equal(grads[1], grads[3])


def test_normals_and_gaussian_noise_match_reference(core_path):
    for ctx in (contextlib.nullcontext(), pure_torch()):
        with ctx:
            x = torch.zeros(6, 50, dtype=torch.float64)
            y = nst.gaussian_noise(x, 2.0, noise_shape=(None, 50), seed=9, stream=4, batch_offset=2)
            z = _rng.normals(9, 4, 2 * 50, 300).reshape(6, 50) * 2.0
            np.testing.assert_allclose(y.numpy(), z, rtol=1e-12, atol=1e-12)
            y32 = nst.gaussian_noise(x.float(), 2.0, seed=9)
            np.testing.assert_allclose(y32.numpy(), _rng.normals(9, 0, 0, 300).reshape(6, 50) * 2.0, rtol=3e-7)


def test_keep_mask_matches_numpy_reference():
    m = nst.keep_mask((5, 4, 6), 0.3, (None, 1, None), seed=42, stream=1, batch_offset=2)
    flags = _rng.keep_flags((5, 1, 6), 42, 1, _rng.threshold(0.3), batch_offset=2)
    np.testing.assert_array_equal(m.numpy(), flags)


def test_meta_tensors_trace_shapes():
    x = torch.empty(4, 8, 3, device="meta")
    assert nst.dropout(x, 0.5, seed=0).shape == (4, 8, 3)
    assert nst.dropout(x, 0.5, (None, 1, None), seed=0).device.type == "meta"
    assert nst.gaussian_dropout(x, 0.5, seed=0).shape == (4, 8, 3)


# ---------------------------------------------------------------------------------------------
# randomness: seeds, generators, streams, micro-batches


def test_manual_seed_reproduces_and_calls_differ():
    x = torch.ones(64, 64)
    torch.manual_seed(0)
    a, b = nst.dropout(x, 0.5), nst.dropout(x, 0.5)
    torch.manual_seed(0)
    c = nst.dropout(x, 0.5)
    assert torch.equal(a, c)
    assert not torch.equal(a, b)  # P(equal) = 2**-4096
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(nst.dropout(x, 0.5, generator=g1), nst.dropout(x, 0.5, generator=g2))


def test_streams_are_independent_and_micro_batches_reproduce_the_batch():
    x = torch.ones(8, 3, 40)
    assert not torch.equal(nst.dropout(x, 0.5, seed=1, stream=0), nst.dropout(x, 0.5, seed=1, stream=1))
    for noise_shape in [None, (None, 1, None), (1, None, None)]:
        whole = nst.dropout(x, 0.5, noise_shape, seed=1)
        parts = [nst.dropout(x[i : i + 3], 0.5, noise_shape, seed=1, batch_offset=i) for i in range(0, 8, 3)]
        assert torch.equal(torch.cat(parts), whole)


def test_locked_dropout_time_major_micro_batches():
    x = torch.ones(5, 8, 4)  # (T, N, F)
    whole = nst.locked_dropout(x, 0.5, batch_first=False, seed=3)
    part = nst.locked_dropout(x[:, 4:], 0.5, batch_first=False, seed=3, batch_offset=4)
    assert torch.equal(part, whole[:, 4:])


# ---------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("call", "fact"),
    [
        (lambda: nst.dropout(torch.ones(2, 3), 1.5), "must lie in [0, 1]"),
        (lambda: nst.dropout(torch.ones(2, 3), 0.1, (None, 2)), "noise_shape[1] is 2"),
        (lambda: nst.dropout(torch.ones(2, 3, dtype=torch.int64), 0.1), "dtype torch.int64"),
        (lambda: nst.dropout(torch.ones(2, 3), 0.1, seed=-1), "seed is -1"),
        (lambda: nst.dropout(torch.ones(2, 3), 0.1, seed=1, generator=torch.Generator()), "seed and generator"),
        (lambda: nst.spatial_dropout2d(torch.ones(2, 3, 4), 0.1), "needs 4, (N, C, H, W)"),
        (lambda: nst.gaussian_dropout(torch.ones(2), 1.0), "infinite"),
        (lambda: nst.gaussian_noise(torch.ones(2), -1.0), "stddev is -1.0"),
        (lambda: nst.drop_block2d(torch.ones(1, 1, 4, 4), 0.1, 5), "block_size is 5"),
        (lambda: nst.Dropout(0.1, noise_shape=3), "noise_shape is 3"),
        (lambda: nst.WeightDropout(torch.nn.Linear(2, 2), "weight_hh", 0.1), "no parameter 'weight_hh'"),
        (lambda: nst.SpatialDropout1d(0.1, data_format="NCL"), "data_format is 'NCL'"),
        (lambda: nst.Dropout(0.1)(torch.ones(2, dtype=torch.int32)), "dtype torch.int32"),
    ],
)
def test_errors_name_the_op_and_the_fix(call, fact):
    with pytest.raises(NoiseShapeError) as info:
        call()
    assert fact in str(info.value)
    assert str(info.value).startswith("noiseshape.torch.")


def test_shaped_dropout_entry_point_checks_its_mask_strides():
    from noiseshape import _core

    x = torch.ones(4, 3)
    y = torch.empty_like(x)
    args = (0, x.data_ptr(), y.data_ptr())
    with pytest.raises(ValueError, match="reach past mask_n"):
        _core.shaped_dropout(*args, 3, 0, 0, 0, 32768, (4, 3), (3, 1), (3, 1), (1, 0), 2.0, 1)
    with pytest.raises(ValueError, match="threshold"):
        _core.shaped_dropout(*args, 4, 0, 0, 0, 70000, (4, 3), (3, 1), (3, 1), (1, 0), 2.0, 1)
    _core.shaped_dropout(*args, 4, 1, 0, 0, 32768, (4, 3), (3, 1), (3, 1), (1, 0), 2.0, 1)
    flags = _rng.keep_flags((4, 1), 1, 0, 32768)
    assert torch.equal(y, torch.from_numpy(flags).float().expand(4, 3) * 2)


def test_unseeded_calls_take_the_seed_torch_randint_would_draw():
    x = torch.ones(3, 50)
    torch.manual_seed(7)
    drawn = torch.randint(-(1 << 63), (1 << 63) - 1, (2,), dtype=torch.int64)
    after = torch.rand(3)
    torch.manual_seed(7)
    y = nst.dropout(x, 0.5, (None, 1))
    assert torch.equal(torch.rand(3), after)  # the generator moved on exactly as before
    assert torch.equal(y, nst.dropout(x, 0.5, (None, 1), seed=int(drawn[0]) & (2**64 - 1)))
    g = torch.Generator().manual_seed(3)
    drawn = torch.randint(-(1 << 63), (1 << 63) - 1, (2,), dtype=torch.int64, generator=g)
    g.manual_seed(3)
    assert torch.equal(nst.dropout(x, 0.5, generator=g), nst.dropout(x, 0.5, seed=int(drawn[0]) & (2**64 - 1)))
