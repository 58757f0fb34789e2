"""jaxbn's batch norm against its peers, one op: training-mode forward + backward.

    pip install -e ".[bench]" torch     # optional peers: flax, dm-haiku, equinox, PyTorch
    python -m benchmarks.peers_op --out-dir runs/peers_op                 # about 3 minutes, 2 cores
    python -m benchmarks.peers_op --shapes 256x1024 --out-dir runs/op256  # about 40 s
    python -m benchmarks.peers_op --quick --out-dir runs/op_quick         # smoke test, no verdicts

For each shape, float32: y, the running-statistics update, and dx, dgamma, dbeta for a fixed
cotangent, of jaxbn (each ``backward``), JAX autodiff of a plain five-line forward,
flax.linen.BatchNorm, haiku.BatchNorm, equinox.nn.BatchNorm, torch.nn.functional.batch_norm (on
the GPU when JAX runs on one and torch sees CUDA) and a NumPy closed form, timed in one process,
interleaved round by round. Reported: median and quartiles, the ratio to jaxbn's closed form, host
page faults per call, and for the JAX ones XLA kernels per call, the compiled program's temporary
memory and the residuals kept between forward and backward. Each time becomes an effective
bandwidth, (read x + read dy + write y + write dx) / time, shown as a fraction of the memory
bandwidth bound: the STREAM measurement of ``benchmarks.machine`` from the same run, or
--peak-gbps for the device. Targets get a verdict only from runs with enough timed rounds.

Measured on 2 shared CPU cores (medians, x = time / jaxbn closed form): at (256, 1024) autodiff
2.0x, flax 1.4x, PyTorch 0.75x. Writes config.json, results.json and results.md to --out-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_SHAPES = ["100x100", "256x1024", "4096x1024", "nhwc:64x56x56x64"]
PEERS = ("flax", "haiku", "equinox", "torch")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.peers_op",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out-dir", type=Path, default=Path("runs/peers_op"))
    p.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="e.g. 256x1024 nhwc:8x4x4x3")
    p.add_argument("--peers", nargs="*", default=list(PEERS), help="peers to include if installed")
    p.add_argument("--budget", type=float, default=15.0, help="seconds of timing per shape")
    p.add_argument("--min-runs", type=int, default=10, help="timed rounds at least")
    p.add_argument("--bandwidth-mib", type=int, default=256, help="array size for STREAM")
    p.add_argument("--peak-gbps", type=float, default=None, help="device bandwidth bound (GB/s)")
    p.add_argument("--keep-pages", action="store_true", help="glibc keeps freed pages: no faults")
    p.add_argument(
        "--settle",
        type=float,
        default=0.02,
        help="seconds of pause (then one untimed call) before each timed call, so that the thread "
        "pool of the previous competitor (XLA, OpenMP, BLAS) stops spinning first",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: (100, 100), short budgets")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # answer --help and reject bad flags before JAX loads


from benchmarks import machine
from benchmarks.competitors import (
    AUTODIFF,
    JAX_PEER_NAMES,
    JAX_PEERS,
    REFERENCE,
    make_problem,
    op_competitors,
)
from benchmarks.machine import busy_note
from benchmarks.report import (
    closing_lines,
    markdown_table,
    optional_import,
    parse_shape,
    verdict,
    write_outputs,
)
from benchmarks.timing import compiled_kernels, compiled_memory, residual_bytes, time_interleaved


def bench_op(text: str, args, bounds: dict[str, float], missing) -> dict:
    shape, label = parse_shape(text)
    p = make_problem(shape, args.seed)
    comps = op_competitors(p, set(args.peers), missing)
    timings = time_interleaved(
        {k: c.call for k, c in comps.items()},
        budget_s=args.budget,
        min_runs=args.min_runs,
        settle_s=args.settle,
        progress=f"{label}: {len(comps)} competitors",
    )
    moved = 4 * p.x.nbytes  # the least traffic: read x and dy, write y and dx
    rows = {}
    for name, comp in comps.items():
        t = timings[name]
        gbps = moved / t.median / 1e9
        row = {"median_s": t.median, "q25_s": t.q25, "q75_s": t.q75, "runs": t.runs}
        row |= {"vs_jaxbn": t.median / timings[REFERENCE].median, "effective_GBps": gbps}
        row |= {"memory": comp.memory, "fraction_of_bound": gbps / bounds[comp.memory]}
        row["page_faults_MiB_per_call"] = machine.faults_per_call(comp.call)
        if comp.jitted is not None:
            row["compiled"] = compiled_memory(comp.jitted, *comp.jitted_args)
            row["kernels"] = compiled_kernels(comp.jitted, *comp.jitted_args)
            row["residuals"] = residual_bytes(comp.forward, *comp.forward_args)
        rows[name] = row
    return {
        "shape": label,
        "input_bytes": int(p.x.nbytes),
        "features": shape[-1],
        "competitors": rows,
    }


def targets(op: list[dict], *, quick: bool, busy: str | None = None) -> list[list[str]]:
    """The op's targets, each with the measured value and a verdict (or why there is none)."""
    rows = []
    for shape in op:
        comp, label = shape["competitors"], shape["shape"]
        ratio = {k: r["vs_jaxbn"] for k, r in comp.items()}  # > 1: the peer is slower

        def add(target, value, met, peer=None, comp=comp, timed=True):
            runs = min(comp[REFERENCE]["runs"], comp[peer]["runs"] if peer else 1 << 30)
            why = busy if timed else None  # a memory count does not suffer from a busy machine
            rows.append([target, value, verdict(met, runs, quick=quick, busy=why)])

        if label in ("(256, 1024)", "(4096, 1024)"):
            for peer, need in ((AUTODIFF, 2.0), (JAX_PEER_NAMES["flax"], 1.3)):
                if peer in ratio:
                    add(f"{label}: >= {need}x faster than {peer}", f"{ratio[peer]:.2f}x",
                        ratio[peer] >= need, peer)  # fmt: skip
        if peers := {k: v for k, v in ratio.items() if k in JAX_PEERS}:
            worst = min(peers, key=peers.get)
            add(f"{label}: no slower than any JAX peer", f"{peers[worst]:.2f}x vs {worst}",
                peers[worst] >= 1.0, worst)  # fmt: skip
        for torch in (k for k in ratio if k.startswith("PyTorch")):
            add(f"{label}: within 1.2x of {torch}", f"jaxbn / torch = {1 / ratio[torch]:.2f}",
                1 / ratio[torch] <= 1.2, torch)  # fmt: skip
        res = comp[REFERENCE]["residuals"]
        kept = res["new"] + res["aliased_inputs"]
        add(f"{label}: residuals <= one input + O(features)",
            f"{kept / shape['input_bytes']:.3f} x input ({res['new']} new bytes)",
            kept <= shape["input_bytes"] + 64 * shape["features"], timed=False)  # fmt: skip
    return rows


def bound_summary(shape: dict) -> str:
    """One line: jaxbn, flax and PyTorch as fractions of their memory-bandwidth bound."""
    keep = ("jaxbn closed_form", "flax.linen.BatchNorm")
    parts = [
        f"{k} {100 * r['fraction_of_bound']:.0f}%"
        for k, r in shape["competitors"].items()
        if k in keep or k.startswith("PyTorch")
    ]
    return f"{shape['shape']}: fraction of the bandwidth bound: " + ", ".join(parts)


def render(results: dict) -> str:
    cfg, m = results["config"], results["config"]["machine"]
    bounds = results["bounds_GBps"]
    lines = [
        "# jaxbn vs its peers: training-mode batch norm, forward + backward (float32)\n",
        f"Command: `{cfg['command']}`\n",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, JAX on {m['backend']} "
        f"({m['device']}); load average {cfg['load_before']} before, {results['load_after']} "
        "after. Versions: " + ", ".join(f"{k} {v}" for k, v in cfg["versions"].items()) + ".\n",
        "Memory bandwidth (STREAM-style, GB/s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in results["bandwidth_GBps"].items())
        + f". Bounds used: device {bounds['device']:.1f}, host {bounds['host']:.1f} GB/s.\n",
    ]
    lines += [f"- {note}" for note in results["notes"]]
    lines.append("\n## Targets\n")
    lines.append(markdown_table(["target", "measured", "verdict"], results["targets"]))
    lines.append(
        "\nTimes are medians of interleaved runs [quartiles]; `x jaxbn` is time / jaxbn closed_form"
        " (> 1: slower than jaxbn). Effective bandwidth = (read x + read dy + write y + write dx) /"
        " time, and its fraction of the bound. Faults: host minor page faults per call. Kernels:"
        " XLA kernels launched per call. Temp: XLA's compiled scratch memory. Residuals: bytes"
        " kept between forward and backward beyond the inputs themselves.\n"
    )
    header = ["", "median (us)", "[q25, q75]", "x jaxbn", "GB/s (% bound)", "faults (MiB)"]
    header += ["kernels", "temp (MiB)", "residuals (MiB)"]
    for shape in results["op"]:
        rows = []
        for name, r in shape["competitors"].items():
            row = [name, f"{r['median_s'] * 1e6:,.0f}"]
            row.append(f"[{r['q25_s'] * 1e6:,.0f}, {r['q75_s'] * 1e6:,.0f}]")
            row.append(f"{r['vs_jaxbn']:.2f}")
            row.append(f"{r['effective_GBps']:.1f} ({100 * r['fraction_of_bound']:.0f}%)")
            row.append(f"{r['page_faults_MiB_per_call']:.1f}")
            if "compiled" in r:
                row.append(str(r["kernels"]))
                row.append(f"{r['compiled'].get('temp', 0) / 2**20:.2f}")
                row.append(f"{r['residuals']['new'] / 2**20:.2f}")
            else:
                row += ["-", "-", "-"]
            rows.append(row)
        lines.append(f"\n## {shape['shape']} (x is {shape['input_bytes'] / 2**20:.2f} MiB)\n")
        lines.append(bound_summary(shape) + ".\n")
        lines.append(markdown_table(header, rows))
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.quick:
        args.shapes, args.budget, args.min_runs, args.bandwidth_mib = ["100x100"], 0.2, 3, 4
        args.settle = min(args.settle, 0.005)
    for text in args.shapes:
        parse_shape(text)  # a bad shape fails now, not after minutes of timing
    notes = [machine.keep_freed_pages()] if args.keep_pages else []
    missing: dict[str, str] = {}
    for name in args.peers:  # import them now: their versions go into config.json
        optional_import(name, missing)
    config = vars(args) | {"out_dir": str(args.out_dir)}
    config |= {"machine": machine.describe(), "load_before": machine.load_average()}
    config["busy"] = machine.busy()
    config["command"] = " ".join(["python -m benchmarks.peers_op", *(argv or sys.argv[1:])])
    bandwidth = machine.stream_bandwidth(args.bandwidth_mib * 2**20, args.budget / 3, args.min_runs)
    bounds = machine.bandwidth_bounds(bandwidth, peak_gbps=args.peak_gbps)
    print("bandwidth GB/s:", {k: round(v, 1) for k, v in bandwidth.items()}, flush=True)
    op = []
    for text in args.shapes:
        op.append(bench_op(text, args, bounds, missing))
        times = {k: f"{r['median_s'] * 1e6:,.0f}" for k, r in op[-1]["competitors"].items()}
        print(op[-1]["shape"], "us:", times, flush=True)
        print(bound_summary(op[-1]), flush=True)
    config["versions"] = machine.versions()  # after the peers were imported
    results = {
        "config": config,
        "bandwidth_GBps": bandwidth,
        "bounds_GBps": bounds,
        "op": op,
        "targets": targets(op, quick=args.quick, busy=config["busy"]),
        "notes": notes + sorted(missing.values()) + busy_note(config["busy"]),
        "load_after": machine.load_average(),
    }
    text = render(results)
    print("\n" + markdown_table(["target", "measured", "verdict"], results["targets"]))
    files = {"config.json": config, "results.json": results, "results.md": text}
    print(closing_lines(write_outputs(args.out_dir, files)))
    return results


if __name__ == "__main__":
    main()
