"""float32 C library functions as LiteRT's kernels call them when they build lookup tables
(std::erfc(float) is erfcf, std::tanh(float) tanhf, std::exp(float) expf).

LiteRT's shared libraries import these from the host's C library (glibc on Linux), whose
float32 versions are not all correctly rounded (erfcf differs from the correctly rounded
value on about 18% of arguments, tanhf on about 10%); a table entry rounded from such a
value can differ by one step. So the host library's own functions are called here, through
ctypes, wherever it has them; elsewhere the correctly rounded value stands in."""
from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np


def _load_libm():
    name = ctypes.util.find_library("m")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBM = _load_libm()


def _float32_function(name: str, correctly_rounded):
    """A NumPy function float32 -> float32 calling the C library's `name`, or the fallback
    (a float64 function rounded once to float32) where the library lacks it."""
    function = getattr(_LIBM, name, None) if _LIBM is not None else None
    if function is None:
        return lambda x: correctly_rounded(np.asarray(x, np.float32).astype(np.float64)).astype(np.float32)
    function.restype = ctypes.c_float
    function.argtypes = [ctypes.c_float]
    call = np.frompyfunc(lambda v: function(float(v)), 1, 1)
    return lambda x: np.asarray(call(np.asarray(x, np.float32)), dtype=np.float32)


erfcf = _float32_function("erfcf", np.vectorize(math.erfc, otypes=[np.float64]))
tanhf = _float32_function("tanhf", np.tanh)
expf = _float32_function("expf", np.exp)
