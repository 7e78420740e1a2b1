"""The reference engines for tests (jaxfuse.engines) plus the skip marker for onert."""
import platform

import pytest

from jaxfuse.engines import (ONERT_AVAILABLE, OnertCrash, litert_interpreter, logits_copy,  # noqa: F401
                             relative_error, run_litert, run_onert)

requires_onert = pytest.mark.skipif(
    not ONERT_AVAILABLE, reason="onert wheels exist only for Linux x86_64 CPython 3.11 "
    f"(this is {platform.system()} {platform.machine()} CPython {platform.python_version()})")
