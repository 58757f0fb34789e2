"""Benchmarks of jaxbn: timing helpers and the comparisons with its peers (not part of the wheel).

Run them from the repository root, e.g. ``python -m benchmarks.peers_op --help``. Nothing here is
imported by the library; importing this package loads no JAX.
"""
