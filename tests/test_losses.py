"""Softmax cross-entropy, accuracy and the L2 penalty."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbn


@pytest.fixture(autouse=True)
def _rank_promotion_raises():
    with jax.numpy_rank_promotion("raise"):
        yield


# Jitted once per variant: one compiled program instead of a dozen eager op compilations.
CE = jax.jit(jaxbn.softmax_cross_entropy, static_argnames="reduction")
ACC = jax.jit(jaxbn.accuracy, static_argnames="reduction")

LOGITS = np.array(
    [[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-3.0, 4.0, 1.0], [1.0, 1.0, 1.0]], np.float32
)
LABELS = np.array([0, 0, 1, 1], np.int32)  # rows 0 and 2 classified right, 1 and 3 wrong


def _np_nll(logits, labels):
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return -np.log(p[np.arange(len(labels)), labels])


def test_cross_entropy_matches_numpy_and_reductions_agree():
    nll = _np_nll(LOGITS, LABELS)
    np.testing.assert_allclose(CE(LOGITS, LABELS), nll.mean(), rtol=1e-6)
    np.testing.assert_allclose(CE(LOGITS, LABELS, reduction="sum"), nll.sum(), rtol=1e-6)
    np.testing.assert_allclose(CE(LOGITS, LABELS, reduction="none"), nll, rtol=1e-6)
    # uniform logits: log C
    np.testing.assert_allclose(
        CE(np.zeros((2, 10), np.float32), np.array([3, 7])),
        np.log(10),
        rtol=1e-6,
    )


def test_cross_entropy_is_stable_for_huge_logits_and_its_gradient_is_softmax_minus_onehot():
    shifted = LOGITS + np.float32(1e4)  # exp(1e4) overflows float32 in a naive softmax
    a = CE(shifted, LABELS, reduction="none")
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, _np_nll(LOGITS, LABELS), atol=2e-3)  # 1e4 has ulp ~1e-3
    big = np.array([[1000.0, -1000.0]], np.float32)
    assert float(CE(big, np.array([1]))) == 2000.0
    assert float(CE(big, np.array([0]))) == 0.0
    g = jax.jit(jax.grad(lambda z: jaxbn.softmax_cross_entropy(z, LABELS)))(LOGITS)
    p = np.exp(LOGITS - LOGITS.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(g, (p - np.eye(3)[LABELS]) / 4, rtol=1e-5, atol=1e-7)


def test_mask_counts_only_real_rows():
    mask = np.array([True, False, True, False])
    nll = _np_nll(LOGITS, LABELS)
    got = CE(LOGITS, LABELS, mask=mask)
    np.testing.assert_allclose(got, nll[mask].mean(), rtol=1e-6)
    none = CE(LOGITS, LABELS, mask=mask, reduction="none")
    np.testing.assert_allclose(none, np.where(mask, nll, 0), rtol=1e-6)
    empty = CE(LOGITS, LABELS, mask=np.zeros(4, bool))
    assert float(empty) == 0.0
    acc = ACC(LOGITS, LABELS, mask=mask)  # row 0 right, row 2 right
    assert float(acc) == 1.0
    assert float(ACC(LOGITS, LABELS)) == 0.5  # rows 1 and 3 wrong
    assert float(ACC(LOGITS, LABELS, reduction="sum")) == 2.0


def test_out_of_range_label_gives_nan():
    out = CE(LOGITS, np.array([0, 3, 1, -1]), reduction="none")
    assert np.isnan(out[1]) and np.isnan(out[3]) and np.isfinite(out[0]) and np.isfinite(out[2])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"logits": LOGITS[0]}, ValueError, r"logits must have shape \(N, C\), got shape \(3,\)"),
        (
            {"labels": LABELS[:3]},
            ValueError,
            r"labels must have the shape \(N,\) .* got shape \(3,\)",
        ),
        ({"labels": LABELS.astype(np.float32)}, TypeError, "labels must be an integer array"),
        ({"logits": LOGITS.astype(np.int32)}, TypeError, "logits must be a floating-point array"),
        (
            {"mask": np.ones(4, np.int32)},
            TypeError,
            "mask must be a boolean array, got dtype int32",
        ),
        ({"reduction": "max"}, ValueError, "reduction must be one of .* got 'max'"),
    ],
    ids=["logits_1d", "labels_len", "labels_float", "logits_int", "mask_int", "reduction"],
)
def test_cross_entropy_errors(kwargs, error, match):
    args = {"logits": LOGITS, "labels": LABELS, **kwargs}
    with pytest.raises(error, match=match):
        jaxbn.softmax_cross_entropy(args.pop("logits"), args.pop("labels"), **args)


PARAMS = [
    {"W": np.array([[1.0, -2.0], [0.5, 3.0]]), "b": np.array([7.0, 7.0]), "gamma": np.ones(2),
     "beta": np.full(2, 5.0)},
    {"W": np.array([[2.0], [1.0]]), "b": np.array([9.0])},
]  # fmt: skip


def test_l2_penalty_counts_weights_only_and_its_gradient_is_reg_w():
    sum_w2 = 1 + 4 + 0.25 + 9 + 4 + 1
    np.testing.assert_allclose(jaxbn.l2_penalty(PARAMS, 3.14), 0.5 * 3.14 * sum_w2, rtol=1e-6)
    np.testing.assert_allclose(
        jaxbn.l2_penalty(PARAMS, jnp.float32(3.14)), 0.5 * 3.14 * sum_w2, rtol=1e-6
    )
    assert float(jaxbn.l2_penalty(PARAMS, 0.0)) == 0.0
    g = jax.grad(jaxbn.l2_penalty)(jax.tree.map(jnp.asarray, PARAMS), 0.5)
    for gl, pl in zip(g, PARAMS, strict=True):
        np.testing.assert_allclose(gl["W"], 0.5 * pl["W"], rtol=1e-6)
        for name in set(pl) - {"W"}:
            np.testing.assert_array_equal(gl[name], np.zeros_like(pl[name]))


@pytest.mark.parametrize(
    ("reg", "error", "match"),
    [
        (-1.0, ValueError, "reg must be a finite number >= 0, got -1.0"),
        (float("inf"), ValueError, "got inf"),
        (True, TypeError, "reg must be a Python float, got True"),
        ("0.1", TypeError, "got '0.1'"),
        (np.ones(2), ValueError, r"reg must be a scalar, got an array of shape \(2,\)"),
    ],
    ids=["negative", "inf", "bool", "str", "vector"],
)
def test_l2_penalty_errors(reg, error, match):
    with pytest.raises(error, match=match):
        jaxbn.l2_penalty(PARAMS, reg)
