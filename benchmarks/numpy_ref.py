"""The textbook NumPy batch norm and BN/ReLU net: the CPU baseline both peer benchmarks time."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

EPS = 1e-5
MOMENTUM = 0.9  # weight of the old running statistic (PyTorch's momentum=0.1)


def np_bn_forward(x, gamma, beta, running, eps=EPS, momentum=MOMENTUM):
    """Textbook closed-form batch norm on (M, C) arrays: y, the cache and new running stats."""
    mean = x.mean(0)
    xc = x - mean
    var = (xc * xc).mean(0)
    std = np.sqrt(var + eps)
    x_hat = xc / std
    new = tuple(
        momentum * r + (1 - momentum) * s for r, s in zip(running, (mean, var), strict=True)
    )
    return gamma * x_hat + beta, (x_hat, gamma, std), new


def np_bn_backward(dy, cache):
    """The closed-form ("alt") backward of np_bn_forward: dx, dgamma, dbeta."""
    x_hat, gamma, std = cache
    m = dy.shape[0]
    dx_hat = dy * gamma
    dx = (m * dx_hat - dx_hat.sum(0) - x_hat * (dx_hat * x_hat).sum(0)) / (m * std)
    return dx, (dy * x_hat).sum(0), dy.sum(0)


def numpy_mlp(xs, ys, *, hidden, lr, num_classes=10):
    """The textbook NumPy net, affine - BN - ReLU per hidden layer, then affine - softmax.

    Args:
      xs: (K, N, D) float32 input batches; ys: (K, N) integer labels.
      hidden: the hidden widths; lr: the SGD learning rate.

    Returns:
      ``run(k)``: k SGD steps (closed-form BN backward) over the batches in turn, in place.
    """
    rng = np.random.default_rng(0)
    dims = (xs.shape[-1], *hidden, num_classes)
    W = [rng.standard_normal(ab).astype(np.float32) * np.sqrt(2 / ab[0]) for ab in pairwise(dims)]
    b = [np.zeros(d, np.float32) for d in dims[1:]]
    gamma = [np.ones(d, np.float32) for d in hidden]
    beta = [np.zeros(d, np.float32) for d in hidden]
    running = [(np.zeros(d, np.float32), np.ones(d, np.float32)) for d in hidden]

    def one_step(x, y):
        caches = []
        for i in range(len(hidden)):
            h, bn_cache, running[i] = np_bn_forward(x @ W[i] + b[i], gamma[i], beta[i], running[i])
            caches.append((x, bn_cache, h > 0))
            x = np.maximum(h, 0)
        logits = x @ W[-1] + b[-1]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        dout = p / len(y)
        dx = dout @ W[-1].T
        W[-1] -= lr * (x.T @ dout)
        b[-1] -= lr * dout.sum(0)
        for i in reversed(range(len(hidden))):
            x_in, bn_cache, relu_mask = caches[i]
            da, dgamma, dbeta = np_bn_backward(dx * relu_mask, bn_cache)
            dx = da @ W[i].T
            W[i] -= lr * (x_in.T @ da)
            b[i] -= lr * da.sum(0)
            gamma[i] -= lr * dgamma
            beta[i] -= lr * dbeta

    def run(k):
        for i in range(k):
            one_step(xs[i % len(xs)], ys[i % len(ys)])

    return run
