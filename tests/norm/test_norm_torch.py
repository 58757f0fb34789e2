"""PyTorch parity of the running statistics: ``running_var="unbiased"`` and ``momentum=None``.

``torch.nn.BatchNorm1d`` stores the unbiased batch variance in ``running_var`` and weighs the
NEW batch by its ``momentum`` (0.1), or by ``1 / num_batches_tracked`` with ``momentum=None``.
jaxbn with ``momentum=0.9`` (the weight of the old value) or ``None`` and
``running_var="unbiased"`` must track it batch for batch. torch comes with the ``interop`` extra.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbn

torch = pytest.importorskip("torch")

N, D, BATCHES = 16, 6, 20


@pytest.mark.parametrize(
    ("torch_momentum", "jax_momentum"), [(0.1, 0.9), (None, None)], ids=["ema", "cumulative"]
)
def test_running_statistics_and_eval_match_torch(torch_momentum, jax_momentum):
    rng = np.random.default_rng(0)
    xs = [
        (rng.normal(size=(N, D)) * (1 + k % 3) + k % 5).astype(np.float32) for k in range(BATCHES)
    ]
    gamma = rng.normal(1.0, 0.2, D).astype(np.float32)
    beta = rng.normal(0.0, 0.5, D).astype(np.float32)

    bn = torch.nn.BatchNorm1d(D, momentum=torch_momentum, eps=1e-5)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(gamma))
        bn.bias.copy_(torch.from_numpy(beta))
    bn.train()

    step = jax.jit(
        lambda x, s: jaxbn.batch_norm(
            x, gamma, beta, s, training=True, momentum=jax_momentum, running_var="unbiased"
        )
    )
    state = jaxbn.batch_norm_state(D)
    for x in xs:
        y_torch = bn(torch.from_numpy(x)).detach().numpy()
        y, state = step(jnp.asarray(x), state)
        np.testing.assert_allclose(y, y_torch, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(state.mean, bn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.var, bn.running_var.numpy(), rtol=1e-5, atol=1e-6)
    assert int(state.count) == int(bn.num_batches_tracked) == BATCHES

    bn.eval()
    x_eval = rng.normal(size=(32, D)).astype(np.float32)
    y_torch = bn(torch.from_numpy(x_eval)).detach().numpy()
    y, same = jaxbn.batch_norm(x_eval, gamma, beta, state, training=False)
    np.testing.assert_allclose(y, y_torch, rtol=1e-5, atol=1e-5)
    assert same is state


def test_biased_default_differs_from_torch():
    """The default running variance is the biased one: it is not torch's (a check that the
    parity above really depends on running_var)."""
    x = np.random.default_rng(1).normal(size=(N, D)).astype(np.float32)
    bn = torch.nn.BatchNorm1d(D, momentum=0.1)
    bn(torch.from_numpy(x))
    _, state = jaxbn.batch_norm(x, None, None, jaxbn.batch_norm_state(D), training=True)
    np.testing.assert_allclose(
        (state.var - 0.9) * N / (N - 1) + 0.9, bn.running_var.numpy(), rtol=1e-5
    )
    assert np.max(np.abs(state.var - bn.running_var.numpy())) > 1e-3
