import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))   # for `from reference import ...`

import im2row  # noqa: E402
from im2row import _backend  # noqa: E402

COMPILED = _backend.native is not None
ISAS = [] if not COMPILED else list(_backend.ISA_NAMES[:_backend.ISA_NAMES.index(
    _backend.native.cpu_isa()) + 1])


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=ISAS or [None])
def isa(request):
    """Runs a test once per kernel level this CPU supports (plans made inside use it)."""
    if request.param is None:
        pytest.skip("compiled extension not available")
    previous = _backend.set_isa(request.param)
    yield request.param
    _backend.set_isa(previous)


@pytest.fixture
def debug_strip():
    """Scratch buffers start as NaN, so a read of anything not written shows in the result."""
    previous, _backend.debug_strip = _backend.debug_strip, True
    yield
    _backend.debug_strip = previous


@pytest.fixture(params=["streamed", "plain"])
def store_mode(request):
    """Runs a test with results too large for the caches streamed past them, then stored
    plainly, whatever timing the two on this machine would choose (the same bits either
    way)."""
    from im2row import _api
    previous, _api.STORE_MODE = _api.STORE_MODE, request.param
    yield request.param
    _api.STORE_MODE = previous
