"""jaxbn's training step against its peers: the 784-100x5-10 BN/ReLU net, batch 100, SGD.

    pip install -e ".[bench]" torch     # optional peers: flax (+ optax), PyTorch
    python -m benchmarks.peers_mlp --out-dir runs/peers_mlp    # about 1 minute, 2 cores, + E1
    python -m benchmarks.peers_mlp --quick --out-dir runs/mlp_quick     # smoke test, no verdicts

Steps per second of one SGD step (affine - BN - ReLU x 5 - affine - softmax cross-entropy) of
jaxbn (``jaxbn.make_train_step``, the state donated; not donated; and 50 steps per call in a
``lax.scan``), flax.linen + optax (as flax's BatchNorm guide writes it; and with the state
donated), PyTorch eager (on the GPU when JAX runs on one and torch sees CUDA) and a textbook
NumPy net, timed in one process, interleaved. Then the wall time of E1's whole sweep
(``experiments/weight_init_sweep.py``, compilation included) in a fresh process (--no-e1 skips
it). Targets get a verdict only from runs with enough timed rounds.

Measured on 2 shared CPU cores: jaxbn 407 steps/s, flax + optax 388, PyTorch eager 220, NumPy
168; E1 in 22.7 s. Writes config.json, results.json and results.md to --out-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.peers_mlp",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out-dir", type=Path, default=Path("runs/peers_mlp"))
    p.add_argument("--peers", nargs="*", default=["flax", "torch"], help="peers, if installed")
    p.add_argument("--budget", type=float, default=15.0, help="seconds of timing")
    p.add_argument("--steps", type=int, default=50, help="training steps per timed call")
    p.add_argument("--min-runs", type=int, default=10, help="timed rounds at least")
    p.add_argument("--settle", type=float, default=0.02, help="pause before each timed call (s)")
    p.add_argument("--e1", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--e1-args", nargs="*", default=[], help="extra flags for the E1 script")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 steps, short budget, no E1")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # answer --help and reject bad flags before JAX loads

import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxbn
from benchmarks import machine
from benchmarks.competitors import torch_device
from benchmarks.machine import busy_note
from benchmarks.numpy_ref import EPS, MOMENTUM, numpy_mlp
from benchmarks.report import closing_lines, markdown_table, optional_import, verdict, write_outputs
from benchmarks.timing import compiled_kernels, time_interleaved

HIDDEN = (100,) * 5
INPUT_DIM, NUM_CLASSES, BATCH, LR = 784, 10, 100, 0.01
JAXBN = "jaxbn make_train_step"
FLAX = "flax.linen + optax"
E1_SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "weight_init_sweep.py"


class Runner(NamedTuple):
    run: Callable[[int], object]  # run(k) takes k training steps and waits for them
    kernels: int | None = None  # XLA kernels launched per step (JAX, one step per call only)


def jax_runner(ts, step, xs, ys, *, donate=True, scan=0, jitted=None) -> Runner:
    """Runner of a JAX train step: ``step`` jitted here, or ``jitted`` as given (by jaxbn).

    scan > 0 runs ``scan`` steps per dispatch in a lax.scan.
    """
    box = {"ts": ts}
    xs, ys = jnp.asarray(xs), jnp.asarray(ys)
    if scan:

        def many(ts, xb, yb):
            return jax.lax.scan(lambda ts, b: (step(ts, *b)[0], None), ts, (xb, yb))[0]

        fn = jax.jit(many, donate_argnums=0 if donate else ())

        def run_scan(k):
            for _ in range(k // scan):
                box["ts"] = fn(box["ts"], xs[:scan], ys[:scan])
            return box["ts"]

        return Runner(run_scan)
    fn = jitted if jitted is not None else jax.jit(step, donate_argnums=0 if donate else ())

    def run(k):
        for i in range(k):
            box["ts"], _ = fn(box["ts"], xs[i % len(xs)], ys[i % len(ys)])
        return box["ts"]

    return Runner(run, compiled_kernels(fn, ts, xs[0], ys[0]))


def jaxbn_state(seed):
    net = jaxbn.FullyConnectedNet(HIDDEN, NUM_CLASSES, normalization="batchnorm")
    opt = optax.sgd(LR)
    ts = jaxbn.init_train_state(net, opt, jax.random.key(seed), INPUT_DIM)
    return net, opt, ts


def flax_mlp(xs, missing):
    """(train state, un-jitted step) of the net in flax.linen + optax, or None."""
    if (nn := optional_import("flax.linen", missing)) is None:
        return None

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            for d in HIDDEN:
                x = nn.Dense(d)(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=MOMENTUM, epsilon=EPS)(x)
                x = nn.relu(x)
            return nn.Dense(NUM_CLASSES)(x)

    model, opt = MLP(), optax.sgd(LR)
    variables = model.init(jax.random.key(0), xs[0], train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]

    def step(ts, x, y):  # the train step of flax's BatchNorm guide, with optax
        params, batch_stats, opt_state = ts

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats}, x, train=True,
                mutable=["batch_stats"],
            )  # fmt: skip
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state), {"loss": loss}

    return (params, batch_stats, opt.init(params)), step


def torch_runner(xs, ys, missing) -> tuple[str, Runner] | None:
    if (torch := optional_import("torch", missing)) is None:
        return None
    device = torch_device(torch)
    torch.manual_seed(0)
    layers, d = [], INPUT_DIM
    for h in HIDDEN:
        layers += [torch.nn.Linear(d, h), torch.nn.BatchNorm1d(h, eps=EPS, momentum=1 - MOMENTUM)]
        layers.append(torch.nn.ReLU())
        d = h
    model = torch.nn.Sequential(*layers, torch.nn.Linear(d, NUM_CLASSES)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    tx, ty = torch.from_numpy(xs).to(device), torch.from_numpy(ys).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def run(k):
        for i in range(k):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(tx[i % len(tx)]), ty[i % len(ty)])
            loss.backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return loss

    return f"PyTorch eager ({device.upper()})", Runner(run)


def runners(args, missing) -> dict[str, Runner]:
    rng = np.random.default_rng(args.seed)
    xs = rng.standard_normal((args.steps, BATCH, INPUT_DIM), dtype=np.float32)
    ys = rng.integers(0, NUM_CLASSES, (args.steps, BATCH))
    net, opt, ts = jaxbn_state(args.seed)
    step = jaxbn.train_step_fn(net, opt)
    out = {JAXBN: jax_runner(ts, step, xs, ys, jitted=jaxbn.make_train_step(net, opt))}
    if not args.quick:
        out["jaxbn, state not donated"] = jax_runner(jaxbn_state(args.seed)[2], step, xs, ys,
                                                     donate=False)  # fmt: skip
        out[f"jaxbn, {args.steps} steps per call (lax.scan)"] = jax_runner(
            jaxbn_state(args.seed)[2], step, xs, ys, scan=args.steps
        )
    if "flax" in args.peers and (flax := flax_mlp(xs, missing)) is not None:
        out[FLAX] = jax_runner(*flax, xs, ys, donate=False)
        if not args.quick:
            out[f"{FLAX}, state donated"] = jax_runner(*flax_mlp(xs, missing), xs, ys)
    if "torch" in args.peers and (named := torch_runner(xs, ys, missing)) is not None:
        out[named[0]] = named[1]
    out["NumPy (textbook)"] = Runner(numpy_mlp(xs, ys, hidden=HIDDEN, lr=LR))
    return out


def time_e1(extra_args) -> dict:
    """Wall time of E1's whole sweep, compilation included, in a fresh process."""
    if not E1_SCRIPT.exists():
        return {"note": f"{E1_SCRIPT.name} not found: E1 sweep not timed"}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(E1_SCRIPT), "--out-dir", tmp, *extra_args]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"note": f"E1 sweep failed (exit {proc.returncode}): {proc.stderr[-500:]}"}
    return {"wall_s": wall, "command": " ".join(["experiments/weight_init_sweep.py", *extra_args])}


def targets(results: dict, *, quick: bool, busy: str | None = None) -> list[list[str]]:
    comp, rows = results["competitors"], []
    if FLAX in comp:
        ratio = comp[JAXBN]["steps_per_s"] / comp[FLAX]["steps_per_s"]
        runs = min(comp[JAXBN]["runs"], comp[FLAX]["runs"])
        rows.append([f"training step: >= 1.2x {FLAX} steps/s", f"{ratio:.2f}x",
                     verdict(ratio >= 1.2, runs, quick=quick, busy=busy)])  # fmt: skip
    e1 = results["e1"]
    if "wall_s" in e1:  # one run of a whole program: a verdict needs no repeats
        rows.append(["E1 whole sweep < 15 s", f"{e1['wall_s']:.1f} s",
                     verdict(e1["wall_s"] < 15, 1 << 30, quick=quick, busy=busy)])  # fmt: skip
    return rows


def render(results: dict) -> str:
    cfg, m = results["config"], results["config"]["machine"]
    lines = [
        "# jaxbn vs its peers: one training step of the 784-100x5-10 BN/ReLU net, batch 100, SGD\n",
        f"Command: `{cfg['command']}`\n",
        f"Machine: {m['cpu']}, {m['cores']} cores, JAX on {m['backend']} ({m['device']}); load "
        f"average {cfg['load_before']} before, {results['load_after']} after; "
        f"{cfg['steps']} steps per timed call.\n",
    ]
    lines += [f"- {note}" for note in results["notes"]]
    lines += [
        "\n## Targets\n",
        markdown_table(["target", "measured", "verdict"], results["targets"]),
    ]
    header = ["", "steps/s", "[q25, q75]", "/ jaxbn steps/s", "kernels per step"]
    rows = [
        [k, f"{r['steps_per_s']:,.0f}", f"[{r['steps_per_s_q25_q75'][0]:,.0f}, "
         f"{r['steps_per_s_q25_q75'][1]:,.0f}]", f"{r['vs_jaxbn']:.2f}",
         "-" if r["kernels_per_step"] is None else str(r["kernels_per_step"])]
        for k, r in results["competitors"].items()
    ]  # fmt: skip
    lines += ["\n## Steps per second\n", markdown_table(header, rows)]
    e1 = results["e1"]
    e1_text = f"{e1['wall_s']:.1f} s wall (`{e1['command']}`)" if "wall_s" in e1 else e1["note"]
    lines.append(f"\nE1 whole sweep: {e1_text}\n")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.quick:
        args.budget, args.steps, args.min_runs, args.e1 = 0.2, 2, 3, False
        args.settle = min(args.settle, 0.005)
    missing: dict[str, str] = {}
    for name in args.peers:  # import them now: their versions go into config.json
        optional_import(name, missing)
    config = vars(args) | {"out_dir": str(args.out_dir), "machine": machine.describe()}
    config |= {"load_before": machine.load_average(), "busy": machine.busy()}
    config["command"] = " ".join(["python -m benchmarks.peers_mlp", *(argv or sys.argv[1:])])
    steppers = runners(args, missing)
    timings = time_interleaved(
        {k: (lambda r=r: r.run(args.steps)) for k, r in steppers.items()},
        warmup=2,
        budget_s=args.budget,
        min_runs=args.min_runs,
        settle_s=args.settle,
        progress=f"training steps: {len(steppers)} competitors",
    )
    competitors = {
        k: {
            "steps_per_s": args.steps / t.median,
            "steps_per_s_q25_q75": [args.steps / t.q75, args.steps / t.q25],
            "runs": t.runs,
            "vs_jaxbn": timings[JAXBN].median / t.median,
            "kernels_per_step": steppers[k].kernels,
        }
        for k, t in timings.items()
    }
    print("steps/s:", {k: round(r["steps_per_s"]) for k, r in competitors.items()}, flush=True)
    if args.e1:
        print("timing E1's whole sweep in a fresh process (about 20-30 s) ...", flush=True)
    e1 = time_e1(args.e1_args) if args.e1 else {"note": "E1 sweep not timed (--no-e1 or --quick)"}
    config["versions"] = machine.versions()
    results = {"config": config, "competitors": competitors, "e1": e1}
    results |= {"notes": sorted(missing.values()) + busy_note(config["busy"])}
    results["load_after"] = machine.load_average()
    results["targets"] = targets(results, quick=args.quick, busy=config["busy"])
    text = render(results)
    print("\n" + markdown_table(["target", "measured", "verdict"], results["targets"]))
    files = {"config.json": config, "results.json": results, "results.md": text}
    print(closing_lines(write_outputs(args.out_dir, files)))
    return results


if __name__ == "__main__":
    main()
