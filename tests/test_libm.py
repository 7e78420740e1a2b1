"""jaxfuse.lowering.libm: the C library's float32 functions (as LiteRT's table builders call
them), within a few float32 steps of the correctly rounded value (glibc documents up to 2-3), and the fallback where the
library lacks a function."""
import math

import numpy as np

from jaxfuse.lowering import libm

X = np.linspace(-9.0, 9.0, 20001, dtype=np.float32)


def ulps(a, b):
    return np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))


def test_functions_are_float32_and_within_a_few_steps():
    for function, exact in ((libm.erfcf, np.vectorize(math.erfc)), (libm.tanhf, np.tanh), (libm.expf, np.exp)):
        got = function(X)
        assert got.dtype == np.float32 and got.shape == X.shape
        assert ulps(got, exact(X.astype(np.float64)).astype(np.float32)).max() <= 4


def test_a_function_the_library_lacks_falls_back_to_the_correctly_rounded_value():
    fallback = libm._float32_function("no_such_function_in_libm", np.tanh)
    np.testing.assert_array_equal(fallback(X), np.tanh(X.astype(np.float64)).astype(np.float32))
