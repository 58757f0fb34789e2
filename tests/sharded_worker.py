"""Run by test_sharded.py in a subprocess with 4 forced CPU devices; prints JSON errors.

For every backward, shard_map over a batch split 4 ways must give the same output, gradients and
new state as one device on the whole batch.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jaxbn  # noqa: E402
from tests.helpers import rel_error  # noqa: E402


def main():
    assert jax.device_count() == 4, jax.devices()
    mesh = jax.make_mesh((4,), ("data",))
    k = jax.random.split(jax.random.key(0), 5)
    x = 3 * jax.random.normal(k[0], (16, 3, 3, 5), jnp.float64) + 2  # NHWC, 4 rows per device
    c = jax.random.normal(k[1], x.shape, jnp.float64)
    gamma = 1 + jax.random.normal(k[2], (5,), jnp.float64)
    beta = jax.random.normal(k[3], (5,), jnp.float64)
    mask = jax.random.bernoulli(k[4], 0.7, (16, 3, 3))
    state = jaxbn.batch_norm_state(5, jnp.float64)

    def make(backward, axis_name, use_mask):
        def loss(x, gamma, beta, c, mask):
            y, new = jaxbn.batch_norm(
                x,
                gamma,
                beta,
                state,
                training=True,
                axis_name=axis_name,
                backward=backward,
                mask=mask if use_mask else None,
            )
            return jnp.sum(y * c), (y, new)

        def step(x, gamma, beta, c, mask):
            grad_fn = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
            (_, (y, new)), grads = grad_fn(x, gamma, beta, c, mask)
            return y, new, grads

        return step

    def put(a, spec):
        return jax.device_put(a, NamedSharding(mesh, spec))

    results = {}
    for use_mask in (False, True):
        for backward in jaxbn.BACKWARDS:
            y0, new0, g0 = jax.jit(make(backward, None, use_mask))(x, gamma, beta, c, mask)
            sharded = jax.shard_map(
                make(backward, "data", use_mask),
                mesh=mesh,
                in_specs=(P("data"), P(), P(), P("data"), P("data")),
                out_specs=(P("data"), P(), (P("data"), P(), P())),
            )
            args = (put(x, P("data")), put(gamma, P()), put(beta, P()), put(c, P("data")))
            y1, new1, g1 = jax.jit(sharded)(*args, put(mask, P("data")))
            name = f"{backward}{'-mask' if use_mask else ''}"
            results[name] = {
                "y": rel_error(y0, y1),
                "mean": rel_error(new0.mean, new1.mean),
                "var": rel_error(new0.var, new1.var),
                "dx": rel_error(g0[0], g1[0]),
                "dgamma": rel_error(g0[1], g1[1]),
                "dbeta": rel_error(g0[2], g1[2]),
            }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
