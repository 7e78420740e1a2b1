"""XLA compiler settings under which every program jaxfuse compiles gives LiteRT's answers.

jaxlib 0.10.2's YNNPACK fusions (on by default for jit on CPU) miscompile real models: on a
BlazeFace-style detector, RELU -> 3x3 depthwise conv -> zero pad of the channel axis ->
ADD of the padded RELU output -> 2x2 MAX_POOL computes 15-27% wrong under jit (the whole
detector 0.87 of its output's scale), while eager execution, jit without those fusions and
jaxlib 0.10.1 are exact. Public reports show the fusions wrong in later releases too. Handing
YNNPACK single convolutions and dots only, never fusions of their neighbours, is exact on that
pattern and as fast as XLA's defaults (bench/results/xla_settings.md; turning YNNPACK off
altogether costs 1.8-3x on MediaPipe's detectors). So jaxfuse compiles that way, on every path:

- programs that run many times (`jaxfuse.jit`, `bench`'s XLA timings) pass
  SAFE_COMPILER_OPTIONS; the checks' programs, compiled to run once, leave YNNPACK out
  entirely (programs.CHECK_COMPILER_OPTIONS and RUN_COMPILER_OPTIONS, NO_YNNPACK), except
  for the float64 products of quantized lowerings (programs.effective_options);
- `jaxfuse.jit(fn)` is `jax.jit(fn)` with SAFE_COMPILER_OPTIONS, for a script's own programs;
- importing jaxfuse adds the same setting to XLA_FLAGS when JAX's backend has not started
  yet (XLA reads XLA_FLAGS once, when the backend starts), so a plain `jax.jit` of a
  lowered model is safe too. A setting of the user's own for the same flag is kept, and
  JAXFUSE_KEEP_XLA_FLAGS=1 leaves XLA_FLAGS alone.

`status()` says which of these took effect in this process.
"""
from __future__ import annotations

import os
import sys
from importlib import metadata

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
# Single convolutions and dots through YNNPACK, no fusions of their neighbours
YNN_INDIVIDUAL_OPS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
SAFE_COMPILER_OPTIONS = {YNN_FLAG: YNN_INDIVIDUAL_OPS}
NO_YNNPACK = {YNN_FLAG: ""}
# Releases whose XLA knows the flag (an unknown flag in XLA_FLAGS aborts the process)
FIRST_JAXLIB_WITH_FLAG = (0, 10, 0)
OPT_OUT_VARIABLE = "JAXFUSE_KEEP_XLA_FLAGS"

_environment_state = "not applied"


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def jaxlib_knows_flag() -> bool:
    try:
        return _version_tuple(metadata.version("jaxlib")) >= FIRST_JAXLIB_WITH_FLAG
    except metadata.PackageNotFoundError:
        return False


def _backend_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


def apply_to_environment() -> str:
    """Add the safe setting to XLA_FLAGS if it can still take effect; returns what happened
    (also kept for `status()`)."""
    global _environment_state
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get(OPT_OUT_VARIABLE, "") not in ("", "0"):
        _environment_state = f"left alone ({OPT_OUT_VARIABLE} is set)"
    elif f"--{YNN_FLAG}" in flags:
        _environment_state = "the user's own setting kept"
    elif not jaxlib_knows_flag():
        _environment_state = "not needed (this jaxlib has no YNNPACK fusions)"
    elif _backend_started():
        _environment_state = ("too late: JAX's backend started before jaxfuse was imported; "
                              "use jaxfuse.jit for programs of lowered models")
    else:
        os.environ["XLA_FLAGS"] = f"{flags} --{YNN_FLAG}={YNN_INDIVIDUAL_OPS}".strip()
        _environment_state = "applied"
    return _environment_state


def status() -> dict:
    """What guards this process's programs: the XLA_FLAGS setting and the compiler options."""
    return {"xla_flags": _environment_state, "compiler_options": dict(SAFE_COMPILER_OPTIONS),
            "jaxlib_knows_flag": jaxlib_knows_flag()}


def compiler_options() -> dict:
    """SAFE_COMPILER_OPTIONS where this jaxlib knows them, else none."""
    return dict(SAFE_COMPILER_OPTIONS) if jaxlib_knows_flag() else {}


def jit(fn, **jit_options):
    """`jax.jit(fn, **jit_options)` compiled with the settings that give LiteRT's answers.

    >>> import jaxfuse, numpy as np
    >>> fn, params = jaxfuse.lower(jaxfuse.load("examples/models/resnet50v2_tiny.tflite"))
    >>> x = np.zeros([1, 64, 64, 3], np.float32)
    >>> [y.shape for y in jaxfuse.jit(fn)(params, x)]
    [(1, 10)]
    """
    import jax
    options = {**compiler_options(), **jit_options.pop("compiler_options", {})}
    return jax.jit(fn, compiler_options=options or None, **jit_options)
