"""The JAX lowering of every committed converter-made model against LiteRT and onert,
on the probabilities and on the pre-softmax logits."""
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxfuse
from jaxfuse.numerics import random_inputs
from reference import logits_copy, relative_error, requires_onert, run_litert, run_onert, run_onert_or_skip

MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"
FIXTURES = sorted(MODELS.glob("*.tflite"))
TOLERANCE = 1e-4  # of the output's scale
#: Fixtures onert 0.1.0 runs but computes wrongly (LiteRT, torch and jaxfuse agree within 1e-6):
#: the test checks that onert is still wrong there, and says so in the skip.
ONERT_WRONG = {
    "vit_tiny_timm_litert_mixed": "onert 0.1.0 computes SLICE of a 5-D tensor wrongly (timm's q/k/v split of "
                                  "[3, 1, 2, 17, 12]: 1.36 of the scale off LiteRT at the first one)",
}


def jax_outputs(model, x):
    fn, params = jaxfuse.lower(model)
    return [np.asarray(y) for y in jax.jit(fn)(params, *x)]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_jax_matches_litert(path, tmp_path):
    model = jaxfuse.load(path)
    logits = logits_copy(model)
    jaxfuse.save(logits, tmp_path / "logits.tflite")
    for seed in (0, 1):
        x = random_inputs(model.main, 1, seed)[0]
        for ours, ref in zip(jax_outputs(model, x), run_litert(path, x)):
            assert relative_error(ours, ref) <= TOLERANCE
        for ours, ref in zip(jax_outputs(logits, x), run_litert(tmp_path / "logits.tflite", x)):
            assert relative_error(ours, ref) <= TOLERANCE


@requires_onert
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_jax_matches_onert(path, tmp_path):
    model = jaxfuse.load(path)
    logits = logits_copy(model)
    jaxfuse.save(logits, tmp_path / "logits.circle")
    x = random_inputs(model.main, 1, 0)[0]
    reference = run_onert_or_skip(path, x, f"this model ({', '.join(sorted(model.op_histogram()))})")
    errors = [relative_error(ours, ref) for ours, ref in zip(jax_outputs(model, x), reference)]
    if path.stem in ONERT_WRONG:
        litert_errors = [relative_error(ours, ref) for ours, ref in zip(jax_outputs(model, x), run_litert(path, x))]
        assert max(litert_errors) <= TOLERANCE < max(errors), "onert agrees now: drop the ONERT_WRONG entry"
        pytest.skip(ONERT_WRONG[path.stem])
    assert max(errors) <= TOLERANCE
    for ours, ref in zip(jax_outputs(logits, x), run_onert(tmp_path / "logits.circle", x)):
        assert relative_error(ours, ref) <= TOLERANCE
