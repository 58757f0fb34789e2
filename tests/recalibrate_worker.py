"""Run by test_recalibrate.py in a subprocess with 4 forced CPU devices; prints JSON errors.

Recalibration on a 4-device mesh (each batch split over the devices, the last one short and
masked) must give the statistics of recalibration on one device; ``fit`` of a ConvNet on the mesh
must match ``fit`` on one device.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax
import numpy as np
import optax
from jax.sharding import Mesh

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jaxbn
from tests.helpers import rel_error

net = jaxbn.ConvNet((3,), 3, hidden_dims=(4,), normalization="batchnorm")
params, state = net.init(jax.random.key(0), (6, 6, 2))
x = np.asarray(jax.random.normal(jax.random.key(1), (37, 6, 6, 2))) + 0.5
mesh = Mesh(np.array(jax.devices()), ("data",))
one = jaxbn.recalibrate(net, params, state, x, batch_size=8)
many = jaxbn.recalibrate(net, params, state, x, batch_size=8, mesh=mesh)
errors = {
    f"{name}{i}": rel_error(getattr(a, name), getattr(b, name))
    for i, (a, b) in enumerate(zip(one, many, strict=True))
    for name in ("mean", "var")
}
y = np.arange(37) % 3
runs = [
    jaxbn.fit(net, optax.sgd(0.1), x, y, epochs=1, batch_size=12, progress=False, mesh=m)
    for m in (None, mesh)
]
flat = [np.concatenate([np.ravel(a) for a in jax.tree.leaves(r.train_state.params)]) for r in runs]
errors["fit_params"] = rel_error(flat[0], flat[1])
print(json.dumps({"devices": len(jax.devices()), "errors": errors}))
