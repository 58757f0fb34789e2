"""Run by test_reliability_sharded.py with 8 forced CPU devices; prints JSON errors.

Eager (un-jitted) ``jax.shard_map`` around ``batch_norm(..., axis_name=...)``: the forward and the
gradient must work and equal one device on the whole batch. The batch is uneven: 30 real rows of
32, the 2 padding rows (on the last device) hold NaN.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jaxbn  # noqa: E402
from tests.helpers import rel_error  # noqa: E402


def main():
    assert jax.device_count() == 8, jax.devices()
    mesh = jax.make_mesh((8,), ("data",))
    k = jax.random.split(jax.random.key(0), 4)
    mask = jnp.arange(32) < 30
    x = 3 * jax.random.normal(k[0], (32, 3), jnp.float64) + 2
    x = jnp.where(mask[:, None], x, jnp.nan)
    c = jax.random.normal(k[1], x.shape, jnp.float64)
    gamma = 1 + jax.random.normal(k[2], (3,), jnp.float64)
    beta = jax.random.normal(k[3], (3,), jnp.float64)
    state = jaxbn.batch_norm_state(3, jnp.float64)

    def put(a, spec):
        return jax.device_put(a, NamedSharding(mesh, spec))

    def make(backward, axis_name):
        def loss(gamma, beta, x, c, mask):
            y, new = jaxbn.batch_norm(
                x, gamma, beta, state, training=True, axis_name=axis_name, backward=backward,
                mask=mask,
            )  # fmt: skip
            return jnp.sum(jnp.where(mask[:, None], y * c, 0)), (y, new)

        def step(gamma, beta, x, c, mask):
            return jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(gamma, beta, x, c, mask)

        def forward(gamma, beta, x, c, mask):
            return loss(gamma, beta, x, c, mask)[1]

        return step, forward

    args = (put(gamma, P()), put(beta, P()), put(x, P("data")), put(c, P("data")))
    args = (*args, put(mask, P("data")))
    specs = (P(), P(), P("data"), P("data"), P("data"))
    results = {}
    for backward in jaxbn.BACKWARDS:
        g0, (y0, new0) = jax.jit(make(backward, None)[0])(gamma, beta, x, c, mask)
        step, forward = make(backward, "data")
        grad_specs = (P(), P(), P("data"))
        eager_step = jax.shard_map(
            step, mesh=mesh, in_specs=specs,
            out_specs=(grad_specs, (P("data"), P())),
        )  # fmt: skip
        eager_forward = jax.shard_map(
            forward, mesh=mesh, in_specs=specs, out_specs=(P("data"), P())
        )
        results[backward] = {}
        for name, fn in (("eager", eager_step),):  # the jitted one: test_sharded.py
            g1, (y1, new1) = jax.device_get(fn(*args))
            results[backward][name] = {
                "y": rel_error(y0[:30], y1[:30]),
                "mean": rel_error(new0.mean, new1.mean),
                "var": rel_error(new0.var, new1.var),
                "dgamma": rel_error(g0[0], g1[0]),
                "dbeta": rel_error(g0[1], g1[1]),
                "dx": rel_error(g0[2][:30], g1[2][:30]),
                "dx_padding_abs": float(abs(g1[2][30:]).max()),
            }
        y2, new2 = jax.device_get(eager_forward(*args))
        results[backward]["eager-forward"] = {
            "y": rel_error(y0[:30], y2[:30]),
            "mean": rel_error(new0.mean, new2.mean),
            "var": rel_error(new0.var, new2.var),
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
