"""fit's progress bar counts to the real total: none when a target loss may stop the run early."""

import numpy as np
import optax
import pytest

import jaxbn

pytest.importorskip("tqdm")


@pytest.mark.parametrize("target_loss", [None, 1e6], ids=["fixed length", "target loss"])
def test_bar_total_is_the_real_one_or_none(capsys, target_loss):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 3)).astype(np.float32), np.arange(40) % 2
    net = jaxbn.FullyConnectedNet((4,), 2)
    result = jaxbn.fit(net, optax.sgd(0.1), x, y, x, y, epochs=7, batch_size=20,
                       target_loss=target_loss, eval_every=1, progress=True)  # fmt: skip
    err = capsys.readouterr().err
    if target_loss is None:
        assert int(result.train_state.step) == 14 and "/14" in err
    else:  # reached at the first check: the bar must not have promised 7 epochs
        assert (
            int(result.train_state.step) == 1
            and "/14" not in err
            and "1step" in err.replace(" ", "")
        )
