"""The examples in the public functions' docstrings run (on the committed fixtures under
examples/models), so the documentation cannot rot."""
from __future__ import annotations

import doctest
import importlib
import os
from importlib.util import find_spec

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ["jaxfuse", "jaxfuse.summary", "jaxfuse.running", "jaxfuse.optimizing", "jaxfuse.verifying",
           "jaxfuse.quantizing", "jaxfuse.benchmark", "jaxfuse.samples"]
NEEDS_QUANTIZER = {"jaxfuse.quantizing"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch):
    if name in NEEDS_QUANTIZER and find_spec("ai_edge_quantizer") is None:
        pytest.skip("ai-edge-quantizer is not installed (pip install 'jaxfuse[quantize]')")
    monkeypatch.chdir(ROOT)  # the examples name the fixtures relative to the repository
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"
