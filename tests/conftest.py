import os

import pytest

# No GPU here: Triton kernels run in Triton's CPU interpreter. It must be chosen before Triton defines
# a kernel, so before any test module imports noiseshape.torch._triton (set it to 0 on a GPU machine).
os.environ.setdefault("TRITON_INTERPRET", "1")


def _isas() -> tuple:
    try:
        from noiseshape import _core
    except ImportError:  # the C core is not built
        return ()
    return _core.available_isas()


@pytest.fixture(params=_isas())
def isa(request):
    """Force one instruction-set path of the C core for the duration of a test."""
    from noiseshape import _core

    before = _core.isa()
    _core.set_isa(request.param)
    yield request.param
    _core.set_isa(before)
