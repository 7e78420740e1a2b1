"""The reference engines for tests (jaxfuse.engines) plus the skip marker for onert."""
import platform
import subprocess
import sys

import numpy as np
import pytest

from jaxfuse.engines import (ONERT_AVAILABLE, OnertCrash, litert_interpreter, logits_copy,  # noqa: F401
                             relative_error, run_litert, run_onert)

requires_onert = pytest.mark.skipif(
    not ONERT_AVAILABLE, reason="onert wheels exist only for Linux x86_64 CPython 3.11 "
    f"(this is {platform.system()} {platform.machine()} CPython {platform.python_version()})")


def onert_reason(path, inputs, tmp_path) -> str:
    """onert's own line saying why it failed on `path` (OnertCrash keeps only the last line of its log)."""
    np.savez(tmp_path / "in.npz", *inputs)
    proc = subprocess.run([sys.executable, "-m", "jaxfuse.engines", str(path), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=300)
    lines = [line.strip() for line in proc.stderr.splitlines()
             if "Error during" in line or "Fail to load" in line or "nsupported" in line]
    return lines[0] if lines else (proc.stderr.strip().splitlines() or ["no message"])[-1]
