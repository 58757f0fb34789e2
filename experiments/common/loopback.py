"""Start N JAX processes on this machine that talk over 127.0.0.1 only (experiments and tests).

The launcher (``launch``) picks a free port on 127.0.0.1, starts the worker script N times with
``JAXBN_COORDINATOR``, ``JAXBN_NUM_PROCESSES`` and ``JAXBN_PROCESS_ID`` set, and kills only the
processes it started if they outlive the deadline or one of them fails. A worker calls
``initialize_on_loopback()`` before anything else touches JAX:

* the coordinator binds 127.0.0.1 (``coordinator_bind_address``; the default binds every
  interface), cluster auto-detection is off, and the timeouts are short;
* CPU collectives use gloo bound to 127.0.0.1. By default gloo binds the address this machine's
  hostname resolves to, which may be a public interface, and this gloo build reads no
  environment variable that picks the interface, so the worker builds the CPU backend with gloo
  collectives given the hostname ``127.0.0.1`` explicitly (through JAX's backend factory, a
  private hook: if a JAX release changes it, ``initialize_on_loopback`` fails loudly).

``tcp_addresses()`` lists the local addresses of this process's TCP sockets (Linux), so a worker
can check that every one of them (coordinator, its client, gloo's pairs) is on loopback.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
TIMEOUT_S = 20  # coordinator start-up and heartbeat: a dead peer is noticed within this
SHUTDOWN_S = 120  # the exit barrier: process 0 may still be computing its reference


def free_port() -> int:
    """A TCP port free on 127.0.0.1 (the OS picks it; it is released for the coordinator)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def cpu_collectives_missing() -> str | None:
    """Why this JAX build cannot run CPU collectives across processes, or None if it can."""
    try:
        import jax
        from jax._src.lib import _jax
    except ImportError as e:  # pragma: no cover - jax is a core dependency
        return f"jax is not importable: {e}"
    if "jax_cpu_collectives_implementation" not in jax.config.values:
        return "this jax has no jax_cpu_collectives_implementation option (no CPU collectives)"
    if not hasattr(_jax, "make_gloo_tcp_collectives"):
        return "this jaxlib was built without gloo CPU collectives"
    return None


def initialize_on_loopback() -> int:
    """``jax.distributed.initialize`` from the launcher's variables, on 127.0.0.1 only.

    Returns:
      This process's index.
    """
    import jax
    from jax._src import distributed, xla_bridge
    from jax._src.lib import _jax

    address = os.environ["JAXBN_COORDINATOR"]
    if not address.startswith(LOOPBACK + ":"):
        raise ValueError(f"JAXBN_COORDINATOR must be {LOOPBACK}:PORT, got {address!r}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=int(os.environ["JAXBN_NUM_PROCESSES"]),
        process_id=int(os.environ["JAXBN_PROCESS_ID"]),
        cluster_detection_method="deactivate",
        coordinator_bind_address=address,
        initialization_timeout=TIMEOUT_S,
        heartbeat_timeout_seconds=TIMEOUT_S,
        shutdown_timeout_seconds=SHUTDOWN_S,
    )
    collectives = _jax.make_gloo_tcp_collectives(
        distributed_client=distributed.global_state.client, hostname=LOOPBACK
    )
    xla_bridge.register_backend_factory(
        "cpu",
        functools.partial(xla_bridge.make_cpu_client, collectives=collectives),
        priority=0,
        fail_quietly=False,
    )
    return jax.process_index()


def tcp_addresses() -> list[str]:
    """Local ``host:port`` of every TCP socket this process has open (Linux ``/proc``; else [])."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return []
    inodes = set()
    for fd in fds:
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (e.g. the listing's own descriptor)
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            lines = Path(f"/proc/self/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] not in inodes:
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc prints the address as 32-bit words in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append(f"{socket.inet_ntop(family, raw)}:{int(hex_port, 16)}")
    return found


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0]
    return host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1")


def launch(
    script, n_processes: int, n_devices: int, args=(), timeout: float = 240.0
) -> list[subprocess.CompletedProcess]:
    """Run ``script`` as ``n_processes`` JAX processes of ``n_devices`` CPU devices each.

    All of them are killed (only these, by their handles) at the deadline, or as soon as one
    fails, since the others would wait for it in a collective.

    Returns:
      One ``CompletedProcess`` per process, in process order, with text stdout and stderr.
    """
    address = f"{LOOPBACK}:{free_port()}"
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}",
        "JAXBN_COORDINATOR": address,
        "JAXBN_NUM_PROCESSES": str(n_processes),
        "JAX_PLATFORMS": "cpu",
    }
    root = str(Path(__file__).resolve().parents[2])  # the repository: experiments/ and tests/
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        procs, logs = [], []
        try:
            for i in range(n_processes):
                out = open(os.path.join(tmp, f"{i}.out"), "w+")
                err = open(os.path.join(tmp, f"{i}.err"), "w+")
                logs.append((out, err))
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(script), *map(str, args)],
                        env={**env, "JAXBN_PROCESS_ID": str(i)},
                        stdout=out,
                        stderr=err,
                        text=True,
                    )
                )
            deadline = time.monotonic() + timeout
            while any(p.poll() is None for p in procs):
                failed = any(p.returncode not in (None, 0) for p in procs)
                if failed or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        results = []
        for i, (p, (out, err)) in enumerate(zip(procs, logs, strict=True)):
            out.seek(0)
            err.seek(0)
            results.append(
                subprocess.CompletedProcess(
                    [str(script), str(i)], p.returncode, out.read(), err.read()
                )
            )
            out.close()
            err.close()
    return results
