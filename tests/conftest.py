"""Shared fixtures: strict rank promotion, PRNG keys and float64 for gradient checks."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def x64():
    """Enable float64 for the duration of a test (gradient checks)."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
