"""The reference engines for tests (jaxfuse.engines), plus the skip marker for onert and a run that
skips, in onert's own words, where onert 0.1.0 cannot run a model."""
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from jaxfuse.engines import (ONERT_AVAILABLE, OnertCrash, litert_interpreter, logits_copy,  # noqa: F401
                             relative_error, run_litert, run_onert)

requires_onert = pytest.mark.skipif(
    not ONERT_AVAILABLE, reason="onert wheels exist only for Linux x86_64 CPython 3.11 "
    f"(this is {platform.system()} {platform.machine()} CPython {platform.python_version()})")


def run_onert_or_skip(path, inputs, what: str) -> list:
    """run_onert's outputs, or a skip saying that onert 0.1.0 cannot run `what`, in onert's own words."""
    try:
        return run_onert(path, inputs)
    except OnertCrash as crash:
        pytest.skip(f"onert 0.1.0 cannot run {what}: {_onert_reason(path, inputs) or crash}")


def _onert_reason(path, inputs) -> str:
    """onert's own line saying why it failed on `path`, or "" (OnertCrash keeps only the last line of its log)."""
    with tempfile.TemporaryDirectory(prefix="jaxfuse-onert-reason-") as tmp:
        feeds, outputs = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(feeds, *inputs)
        proc = subprocess.run([sys.executable, "-m", "jaxfuse.engines", str(path), feeds, outputs],
                              capture_output=True, text=True, timeout=300)
    lines = [line.strip() for line in proc.stderr.splitlines()
             if "Error during" in line or "Fail to load" in line or "nsupported" in line]
    return lines[0] if lines else ""
