"""examples/train_digits.py, shortened: a few epochs on part of the data; the loss must fall
and the network must learn (far above the 10% of chance). The full run (README) reaches >= 97%
test accuracy."""
import importlib.util
import os

import numpy as np
import pytest

pytest.importorskip("sklearn")

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "examples", "train_digits.py")


def _example():
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_training_loss_falls():
    result = _example().train(epochs=4, limit=600, log=lambda _: None)
    losses = result["losses"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
    assert result["test_accuracy"] > 0.6, result


def test_example_gradients_match_finite_differences():
    """The example's whole backward pass (conv2d_backward inside) against central differences
    of its loss, in float64, on a few weights of each layer."""
    ex = _example()
    rng = np.random.default_rng(3)
    p = {k: v.astype(np.float64) for k, v in ex.init_params(rng).items()}
    x = rng.random((5, 8, 8, 1))
    y = rng.integers(0, 10, 5)
    _, grads = ex.loss_and_grads(p, x, y)
    for name in ("w1", "b1", "w2", "b2", "w3"):
        for flat in rng.choice(p[name].size, 3, replace=False):
            idx = np.unravel_index(flat, p[name].shape)
            old = p[name][idx]
            p[name][idx] = old + 1e-6
            up = ex.loss_and_grads(p, x, y)[0]
            p[name][idx] = old - 1e-6
            down = ex.loss_and_grads(p, x, y)[0]
            p[name][idx] = old
            assert np.isclose(grads[name][idx], (up - down) / 2e-6, rtol=1e-4, atol=1e-7), name
