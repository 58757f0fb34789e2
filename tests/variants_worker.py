"""Run by test_norm_variants.py with 4 forced CPU devices; prints JSON relative errors.

shard_map over a batch split 4 ways, with ``axis_name``, must give the output, the gradients
and the new state of one device on the whole batch, for renorm and for ghost batches (each
device holding whole groups), with a mask.
"""

import json
import os
import sys

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jaxbn  # noqa: E402
from tests.helpers import rel_error  # noqa: E402

OPTIONS = {
    "renorm": dict(renorm=True, rmax=1.5, dmax=0.4),
    "ghost2_unbiased": dict(virtual_batch_size=2, running_var="unbiased", momentum=None),
    "ghost2_renorm": dict(virtual_batch_size=2, renorm=True, rmax=1.2, dmax=0.1),
    # one group per device: no group axis, the running statistics still average the devices'
    "ghost4_renorm": dict(virtual_batch_size=4, renorm=True, rmax=1.2, dmax=0.1),
}


def main():
    assert jax.device_count() == 4, jax.devices()
    mesh = jax.make_mesh((4,), ("data",))
    k = jax.random.split(jax.random.key(0), 5)
    x = 3 * jax.random.normal(k[0], (16, 5), jnp.float64) + 2  # 4 rows per device
    c = jax.random.normal(k[1], x.shape, jnp.float64)
    gamma = 1 + jax.random.normal(k[2], (5,), jnp.float64)
    beta = jax.random.normal(k[3], (5,), jnp.float64)
    mask = jax.random.bernoulli(k[4], 0.7, (16,))
    state = jaxbn.BatchNormState(jnp.full(5, 1.0), jnp.full(5, 4.0), jnp.asarray(2, jnp.int32))

    def make(opts, axis_name):
        def loss(x, gamma, beta, c, mask):
            y, new = jaxbn.batch_norm(
                x, gamma, beta, state, training=True, axis_name=axis_name, mask=mask, **opts
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
    for name, opts in OPTIONS.items():
        for backward in jaxbn.BACKWARDS:
            opts_b = {**opts, "backward": backward}
            y0, new0, g0 = jax.jit(make(opts_b, None))(x, gamma, beta, c, mask)
            sharded = jax.shard_map(
                make(opts_b, "data"),
                mesh=mesh,
                in_specs=(P("data"), P(), P(), P("data"), P("data")),
                out_specs=(P("data"), P(), (P("data"), P(), P())),
            )
            args = (put(x, P("data")), put(gamma, P()), put(beta, P()), put(c, P("data")))
            y1, new1, g1 = jax.jit(sharded)(*args, put(mask, P("data")))
            results[f"{name}-{backward}"] = {
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
