"""The examples run, so they never rot."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fold_aware_gradients_and_refold_match():
    grad_gap, out_gap, split_gap = load("fold_aware").main()
    assert grad_gap < 1e-5 and out_gap < 1e-4 and split_gap < 1e-5


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="tensorflow is installed here")
def test_make_models_without_tensorflow_says_what_to_install():
    proc = subprocess.run([sys.executable, str(EXAMPLES / "make_models.py"), "ResNet50V2", "--out-dir", "/tmp/x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "pip install .[convert]" in proc.stderr and "Traceback" not in proc.stderr
