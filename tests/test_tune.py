"""Tuning plans (Conv2d(tune=True)): they time only methods that give the same bits, so a
tuned choice changes speed and never a result, and later "auto" calls reuse it."""
import numpy as np
import pytest

import im2row
from im2row import _api, _backend

pytestmark = pytest.mark.skipif(_backend.native is None, reason="compiled extension needed")

# NHWC, >= 32 channels per group: "i2r" and "blocked" compete; strides, dilation, groups,
# output sizes on and off the register tiles
TUNED = [
    dict(x=(1, 9, 11, 32), w=(3, 3, 32, 17), padding=1),
    dict(x=(2, 30, 8, 40), w=(3, 3, 40, 33), stride=2, padding=1),
    dict(x=(1, 31, 12, 64), w=(3, 3, 32, 8), groups=2, dilation=(1, 2), padding=2),
    dict(x=(3, 29, 6, 48), w=(5, 1, 48, 70), padding=(2, 0)),
    dict(x=(1, 28, 28, 32), w=(1, 1, 32, 40)),
]
# where nothing competes: NCHW, few channels, depthwise
UNTUNED = [
    dict(x=(1, 32, 30, 9), w=(17, 32, 3, 3), padding=1, layout="NCHW"),
    dict(x=(1, 30, 9, 31), w=(3, 3, 31, 17), padding=1),
    dict(x=(1, 30, 9, 32), w=(3, 3, 1, 32), groups=32, padding=1),
]


def _case(spec, dtype):
    rng = np.random.default_rng(sum(spec["x"]) + sum(spec["w"]))
    x = rng.uniform(-1, 1, spec["x"]).astype(dtype)
    w = rng.uniform(-1, 1, spec["w"]).astype(dtype)
    kw = {k: v for k, v in spec.items() if k not in ("x", "w")}
    kw.setdefault("layout", "NHWC")
    return x, w, kw


@pytest.fixture(autouse=True)
def no_wisdom():
    saved = dict(_api._WISDOM)
    _api._WISDOM.clear()
    yield
    _api._WISDOM.clear()
    _api._WISDOM.update(saved)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", TUNED, ids=range(len(TUNED)))
def test_tuning_changes_no_bit(spec, dtype):
    x, w, kw = _case(spec, dtype)
    b = np.linspace(-1, 1, w.shape[-1]).astype(dtype)
    want = {m: im2row.Conv2d(w, b, method=m, **kw)(x, num_threads=1) for m in ("i2r", "blocked")}
    np.testing.assert_array_equal(want["i2r"], want["blocked"])
    for threads in (1, 2):
        plan = im2row.Conv2d(w, b, tune=True, **kw)
        first, info = plan.measure(x, num_threads=threads)
        assert info["method"] in ("i2r", "blocked")
        np.testing.assert_array_equal(first, want["i2r"])
        again, info2 = plan.measure(x, num_threads=threads)     # the stored choice
        assert info2["method"] == info["method"]
        np.testing.assert_array_equal(again, want["i2r"])
        # later "auto" calls in the process run what the tuning plan chose
        other = im2row.Conv2d(w, b, **kw).measure(x, num_threads=threads)[1]["method"]
        assert other == info["method"]
        np.testing.assert_array_equal(im2row.conv2d(x, w, b, num_threads=threads, **kw),
                                      want["i2r"])


@pytest.mark.parametrize("spec", UNTUNED, ids=range(len(UNTUNED)))
def test_nothing_to_tune_keeps_the_planners_choice(spec):
    x, w, kw = _case(spec, np.float32)
    rule = im2row.Conv2d(w, **kw).measure(x, num_threads=1)[1]["method"]
    tuned, info = im2row.Conv2d(w, tune=True, **kw).measure(x, num_threads=1)
    assert info["method"] == rule
    assert not _api._WISDOM
    np.testing.assert_array_equal(tuned, im2row.Conv2d(w, **kw)(x, num_threads=1))


def test_stored_choice_is_used(monkeypatch):
    """A method stored by tuning replaces the planner's rule for that geometry only."""
    x, w, kw = _case(TUNED[0], np.float32)
    plan = im2row.Conv2d(w, **kw)
    spec, rule, geometry = plan._prepare(x.shape, 1, "test")
    other = "blocked" if rule == "i2r" else "i2r"
    _api._WISDOM[_api.wisdom_key(spec, geometry, 1)] = other
    assert im2row.Conv2d(w, **kw).measure(x, num_threads=1)[1]["method"] == other
    assert im2row.Conv2d(w, **kw).measure(x, num_threads=2)[1]["method"] == rule
    assert im2row.Conv2d(w, method=rule, **kw).measure(x, num_threads=1)[1]["method"] == rule


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_tune_must_be_a_bool(bad):
    with pytest.raises(TypeError, match=r"Conv2d: tune must be True or False, got"):
        im2row.Conv2d(np.ones((1, 1, 3, 3), np.float32), tune=bad)
