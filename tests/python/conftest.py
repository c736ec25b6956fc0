"""Shared helpers: random inputs and the tolerance the float64 oracle is held to."""

import numpy as np
import pytest


def randn(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# f32 kernels against the float64 oracle: a few ulps of the output's scale per accumulated term.
F32_TOL = 2e-5
