"""Shared test helpers: seeded randomness, saving models, running them through JAX."""
import jax
import numpy as np
import pytest

import jaxfuse
from jaxfuse.lowering import lower


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def save_model(tmp_path):
    """save_model(model, name="model.tflite") -> path of the model written under tmp_path."""
    def save(model, name="model.tflite"):
        path = tmp_path / name
        jaxfuse.save(model, path)
        return path
    return save


@pytest.fixture
def run_jax():
    """run_jax(model, inputs) -> the model's outputs through the jit-compiled JAX lowering, as numpy."""
    def run(model, inputs):
        fn, params = lower(model)
        return [np.asarray(y) for y in jax.jit(fn)(params, *inputs)]
    return run
