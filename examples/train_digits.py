"""Train a small CNN on scikit-learn's digits with plain NumPy SGD, every convolution and its
gradient through im2row (conv2d forward, conv2d_backward for the input and weight gradients).

    python examples/train_digits.py            # ~97-99% test accuracy in well under a minute

The network (NHWC, float32): conv 3x3 1->16, ReLU, 2x2 max-pool, conv 3x3 16->32, ReLU, 2x2
max-pool, dense 128->10, softmax cross-entropy; SGD with momentum. The 8x8 images come with
scikit-learn (sklearn.datasets.load_digits: on disk, no download).
"""
import argparse
import time

import numpy as np

import im2row


def load_data(seed):
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]       # (N, 8, 8, 1) NHWC
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    return (x[:split], y[:split]), (x[split:], y[split:])


def init_params(rng):
    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return {
        "w1": he((3, 3, 1, 16), 9), "b1": np.zeros(16, np.float32),       # HWIO
        "w2": he((3, 3, 16, 32), 144), "b2": np.zeros(32, np.float32),
        "w3": he((128, 10), 128), "b3": np.zeros(10, np.float32),
    }


def max_pool(x):
    """2x2, stride 2 (NHWC); also returns where each maximum was, for the backward pass."""
    n, h, w, c = x.shape
    blocks = (x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
              .reshape(n, h // 2, w // 2, c, 4))
    where = blocks.argmax(axis=-1)[..., None]
    return np.take_along_axis(blocks, where, axis=-1)[..., 0], where


def max_pool_backward(grad, where):
    n, hh, ww, c = grad.shape
    blocks = np.zeros((n, hh, ww, c, 4), grad.dtype)
    np.put_along_axis(blocks, where, grad[..., None], axis=-1)
    return (blocks.reshape(n, hh, ww, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
            .reshape(n, hh * 2, ww * 2, c))


def forward(p, x):
    z1 = im2row.conv2d(x, p["w1"], p["b1"], padding=1, layout="NHWC")
    a1 = np.maximum(z1, 0)
    h1, m1 = max_pool(a1)                                   # (N, 4, 4, 16)
    z2 = im2row.conv2d(h1, p["w2"], p["b2"], padding=1, layout="NHWC")
    a2 = np.maximum(z2, 0)
    h2, m2 = max_pool(a2)                                   # (N, 2, 2, 32)
    logits = h2.reshape(len(x), -1) @ p["w3"] + p["b3"]
    return logits, (x, z1, h1, m1, z2, h2, m2)


def loss_and_grads(p, x, y):
    logits, (x, z1, h1, m1, z2, h2, m2) = forward(p, x)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    n = len(x)
    loss = -np.log(probs[np.arange(n), y] + 1e-12).mean()
    dlogits = probs
    dlogits[np.arange(n), y] -= 1
    dlogits /= n
    g = {"w3": h2.reshape(n, -1).T @ dlogits, "b3": dlogits.sum(axis=0)}
    dh2 = (dlogits @ p["w3"].T).reshape(h2.shape)
    dz2 = max_pool_backward(dh2, m2) * (z2 > 0)
    dh1, g["w2"], g["b2"] = im2row.conv2d_backward(dz2, h1, p["w2"], padding=1,
                                                   layout="NHWC")
    dz1 = max_pool_backward(dh1, m1) * (z1 > 0)
    _, g["w1"], g["b1"] = im2row.conv2d_backward(dz1, x, p["w1"], padding=1, layout="NHWC",
                                                 needs=("weight", "bias"))
    return loss, g


def accuracy(p, x, y):
    return float((forward(p, x)[0].argmax(axis=1) == y).mean())


def train(epochs=30, batch=32, lr=0.05, momentum=0.9, seed=0, limit=None, log=print):
    """Returns a dict: per-epoch mean training losses, test accuracy, seconds."""
    (xtr, ytr), (xte, yte) = load_data(seed)
    if limit:
        xtr, ytr = xtr[:limit], ytr[:limit]
    rng = np.random.default_rng(seed)
    p = init_params(rng)
    velocity = {k: np.zeros_like(v) for k, v in p.items()}
    losses, t0 = [], time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(len(xtr))
        total = 0.0
        for i in range(0, len(xtr), batch):
            idx = order[i:i + batch]
            loss, g = loss_and_grads(p, xtr[idx], ytr[idx])
            total += loss * len(idx)
            for k in p:
                velocity[k] = momentum * velocity[k] - lr * g[k].astype(np.float32)
                p[k] += velocity[k]
        losses.append(total / len(xtr))
        log(f"epoch {epoch + 1:2d}  loss {losses[-1]:.4f}  test accuracy "
            f"{accuracy(p, xte, yte):.4f}")
    return {"losses": losses, "test_accuracy": accuracy(p, xte, yte),
            "seconds": time.perf_counter() - t0}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = train(args.epochs, args.batch, args.lr, seed=args.seed)
    print(f"test accuracy {result['test_accuracy']:.4f} after {args.epochs} epochs in "
          f"{result['seconds']:.1f} s ({im2row.backend_info()['isa']}, "
          f"{im2row.backend_info()['max_threads']} threads)")


if __name__ == "__main__":
    main()
