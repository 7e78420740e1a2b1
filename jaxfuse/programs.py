"""Compiled programs for the checks: each distinct program is compiled once per process.

A check lowers many small XLA programs: the segments of a whole-model run, the region
before and after each rewrite. Residual blocks of one stage have the same structure and
shapes, and the reference model runs once for the activation statistics and again in the
final comparison, so most of those programs are the same program with other weights.
Weights are arguments of every program (never baked in), so such programs lower to the
same module and one executable serves them all.

The cache key is the lowered module itself (StableHLO text without locations), the
compiler options, the devices and shardings, and any constant jax hoisted out of the
module: everything that determines the compiled program, so a hit cannot be a different
program. Whatever a lowering rule bakes in at trace time (an op's options, shapes, dtypes,
a quantized rule's multipliers and tables, a static bound computed from weight values) is
in the module text. Names are not: tensors are passed as flat lists, never as dicts keyed
by name.

Programs are compiled for checks, where compile time counts more than run time: LLVM at
-O0, XLA CPU's classic (non-MLIR) fusion emitters and one codegen split make a check's
program compile about 8x faster than the defaults, and without YNNPACK's fusions its
first run (the only one, often) is not slowed down by their preparation.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from .xla import NO_YNNPACK, YNN_FLAG, YNN_INDIVIDUAL_OPS

CHECK_COMPILER_OPTIONS = {
    "xla_backend_optimization_level": 0,        # LLVM -O0
    "xla_cpu_use_fusion_emitters": False,       # classic emitters: ~3x less compile time at -O0
    "xla_cpu_parallel_codegen_split_count": 1,  # one LLVM module: ~2x less for small programs
    # no YNNPACK fusions: they miscompile (jaxfuse.xla), and they prepare each convolution on an
    # executable's first run, which costs as much as the run itself (ResNet50V2: 0.37 s -> 0.14 s)
    **NO_YNNPACK,
}
# For programs that run many times (a comparison over a large data set): XLA's optimizations,
# still without YNNPACK's fusions (ResNet50V2, 4 samples a batch, 2 CPU cores: 0.043 s a sample
# against 0.071 s with the check options and 0.053 s with XLA's defaults; ~1.5 s to compile).
RUN_COMPILER_OPTIONS = dict(NO_YNNPACK)
MAX_PROGRAMS = 512  # executables kept (code only: weights are arguments)
COMPILE_THREADS = max(1, min(2, os.cpu_count() or 1))
_UNSUPPORTED_OPTIONS: set[str] = set()  # options this jaxlib does not know


@dataclass
class CompileStats:
    """Counters since the process started (or since `reset`)."""
    compiled: int = 0            # XLA compilations
    compile_seconds: float = 0.0
    reused: int = 0              # requests served by an executable compiled before
    reused_unlowered: int = 0    # ... found by structure, without even lowering (segmented.structure_key)
    loaded: int = 0              # of the compiled: loaded from JAX's persistent compilation cache
    lowered: int = 0             # programs traced and lowered to StableHLO (every request)
    lower_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def since(self, before: dict) -> dict:
        now = self.to_dict()
        return {k: now[k] - before.get(k, 0) for k in now}


STATS = CompileStats()
_STATS_LOCK = threading.Lock()
_listening = False


def _count_persistent_cache_hits() -> None:
    """Count JAX's persistent-cache hits into STATS.loaded (one listener per process)."""
    global _listening
    if _listening:
        return
    import jax

    def on_event(event: str, **kwargs) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            with _STATS_LOCK:
                STATS.loaded += 1
    jax.monitoring.register_event_listener(on_event)
    _listening = True


def _device_text(shardings) -> str:
    if shardings is not None:
        return repr(shardings)
    import jax
    device = getattr(jax.config, "jax_default_device", None) or jax.devices()[0]
    if isinstance(device, str):  # a platform name
        device = jax.devices(device)[0]
    return f"{device.platform}:{device.id}:{getattr(device, 'device_kind', '')}"


def effective_options(text: str, options: dict) -> dict:
    """`options` for the program `text`. A quantized model's exact integer products are
    float64 convolutions and dots (lowering/fixed_point.exact_integer_product), which XLA
    CPU runs fast only through YNNPACK: those programs hand each convolution and dot to
    YNNPACK on its own (xla.YNN_INDIVIDUAL_OPS), without the fusions of neighbouring ops
    that miscompile (ResNet50V2 int8 against its float model without YNNPACK: 27 s for 2
    samples instead of 5 s)."""
    if options.get(YNN_FLAG) == "" and "f64" in text and (
            "stablehlo.convolution" in text or "stablehlo.dot_general" in text):
        return {**options, YNN_FLAG: YNN_INDIVIDUAL_OPS}
    return options


def program_key(lowered, options: dict, shardings=None) -> tuple[str, dict]:
    """What determines the executable `lowered` compiles to (see the module docstring), and
    the options to compile it with (effective_options)."""
    h = hashlib.sha256()
    text = lowered.as_text()
    options = effective_options(text, options)
    h.update(text.encode())
    h.update(repr(sorted(options.items())).encode())
    h.update(_device_text(shardings).encode())
    lowering = getattr(lowered, "_lowering", None)
    for const in getattr(lowering, "const_args", None) or []:  # constants jax passes beside the module
        value = np.asarray(const)
        h.update(f"{value.dtype}{value.shape}".encode())
        h.update(value.tobytes())
    return h.hexdigest(), options


def compile_with_options(lowered, options: dict):
    """lowered.compile with `options`, leaving out those this jaxlib does not have."""
    import re
    while True:
        usable = {k: v for k, v in options.items() if k not in _UNSUPPORTED_OPTIONS}
        try:
            return lowered.compile(compiler_options=usable)
        except Exception as e:  # jaxlib raises its own runtime error type
            match = re.search(r"No such compile option: '([^']+)'", str(e))
            named = [k for k in usable if (match and match.group(1) == k) or k in str(e)]
            if not named:
                raise
            _UNSUPPORTED_OPTIONS.update(named)


class ProgramCache:
    """Executables by program_key, least recently used dropped beyond `max_entries`.
    Compilations may run on a small thread pool (XLA releases the GIL while it compiles),
    so a caller can lower the next program while the previous one compiles; a program
    requested while it is being compiled waits for that compilation."""

    def __init__(self, max_entries: int = MAX_PROGRAMS):
        self.max_entries = max_entries
        self._entries: OrderedDict[str, object] = OrderedDict()
        self._pending: dict[str, Future] = {}
        self._effective_options: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def lower(self, fn, *args, in_shardings=None, out_shardings=None, options: dict | None = None):
        """(lowered, key) of jax.jit(fn) for these arguments (arrays or ShapeDtypeStructs)."""
        import jax
        options = CHECK_COMPILER_OPTIONS if options is None else options
        t = time.perf_counter()
        jitted = jax.jit(fn) if in_shardings is None else jax.jit(fn, in_shardings=in_shardings,
                                                                   out_shardings=out_shardings)
        lowered = jitted.lower(*args)
        key, effective = program_key(lowered, options, None if in_shardings is None else (in_shardings, out_shardings))
        with self._lock:
            self._effective_options[key] = effective  # so compiling does not print the module again
            STATS.lowered += 1
            STATS.lower_seconds += time.perf_counter() - t
        return lowered, key

    def find(self, key: str):
        """The executable compiled for `key` if it is still kept, a Future of it while it is
        being compiled, else None."""
        with self._lock:
            compiled = self._entries.get(key)
            if compiled is not None:
                self._entries.move_to_end(key)
                return compiled
            return self._pending.get(key)

    def _claim(self, key: str):
        """(executable or Future, owner): what is kept or pending for `key`, or a new pending
        Future that the caller (owner) must resolve."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            else:
                found = self._pending.get(key)
            if found is not None:
                STATS.reused += 1
                self._effective_options.pop(key, None)
                return found, False
            pending = self._pending[key] = Future()
            return pending, True

    def _resolve(self, lowered, key: str, options: dict, pending: Future):
        _count_persistent_cache_hits()
        try:
            t = time.perf_counter()
            with self._lock:
                effective = self._effective_options.pop(key, None)
            compiled = compile_with_options(lowered, effective if effective is not None
                                            else effective_options(lowered.as_text(), options))
            seconds = time.perf_counter() - t
        except BaseException as e:
            with self._lock:
                del self._pending[key]
            pending.set_exception(e)
            raise
        with self._lock:
            STATS.compiled += 1
            STATS.compile_seconds += seconds
            self._entries[key] = compiled
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            del self._pending[key]
        pending.set_result(compiled)
        return compiled

    def compile_lowered(self, lowered, key: str, options: dict | None = None):
        """The executable for `lowered` (whose program_key is `key`): kept, being compiled
        elsewhere (then awaited), or compiled now."""
        found, owner = self._claim(key)
        if not owner:
            return found.result() if isinstance(found, Future) else found
        return self._resolve(lowered, key, CHECK_COMPILER_OPTIONS if options is None else options, found)

    def submit(self, lowered, key: str, options: dict | None = None):
        """The executable for `lowered` if it is kept, else a Future of it, compiled on the
        thread pool (registered at once, so an equal program asked for meanwhile waits
        for this one)."""
        found, owner = self._claim(key)
        if not owner:
            return found
        options = CHECK_COMPILER_OPTIONS if options is None else options
        if COMPILE_THREADS == 0:
            self._resolve(lowered, key, options, found)
            return found
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=COMPILE_THREADS, thread_name_prefix="jaxfuse-compile")
            pool = self._pool
        pool.submit(self._resolve, lowered, key, options, found)
        return found

    def compile(self, fn, *args, in_shardings=None, out_shardings=None, options: dict | None = None):
        """The executable of jax.jit(fn) for these arguments (arrays or ShapeDtypeStructs),
        compiled ahead of time with `options` (default CHECK_COMPILER_OPTIONS), or the one
        compiled before for the same program."""
        lowered, key = self.lower(fn, *args, in_shardings=in_shardings, out_shardings=out_shardings,
                                  options=options)
        return self.compile_lowered(lowered, key, options)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def shutdown(self) -> None:
        """Wait for the compilations still running and stop the thread pool (a later
        submit starts a new one)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __len__(self) -> int:
        return len(self._entries)


PROGRAMS = ProgramCache()


def compile_for_check(fn, *args, **kw):
    """jit-compile fn for these arguments through the process's ProgramCache."""
    return PROGRAMS.compile(fn, *args, **kw)


_JAX_WHOLE = threading.Event()  # clear while start_jax_in_background is importing JAX
_JAX_WHOLE.set()


def start_jax_in_background(backend: bool = True) -> None:
    """Import JAX, and start its CPU (or accelerator) backend when `backend`, on a daemon
    thread, so that a command reads its model meanwhile: each takes a few tenths of a
    second, and reading is mostly file I/O and copies that leave the interpreter's lock
    free. Call wait_for_jax before using JAX on another thread. A failure is left to the
    later use, which then reports it the usual way. Keep `backend` False when
    jax.distributed.initialize is still to come (it must precede the backend)."""
    def start():
        try:
            import jax
        except Exception:
            return
        finally:
            _JAX_WHOLE.set()
        if backend:
            try:
                jax.devices()
            except Exception:
                pass
    _JAX_WHOLE.clear()
    threading.Thread(target=start, name="jaxfuse-start-jax", daemon=True).start()


def wait_for_jax() -> None:
    """Wait until a start_jax_in_background has imported JAX whole: importing one of its
    modules while another thread is still inside `import jax` can meet them half
    initialized and fail (a later jax.devices() waits for the backend by itself)."""
    _JAX_WHOLE.wait()


def default_cache_dir() -> str:
    """Where jaxfuse keeps compiled programs between runs: $JAXFUSE_CACHE_DIR, else
    $XDG_CACHE_HOME/jaxfuse/xla, else ~/.cache/jaxfuse/xla."""
    if os.environ.get("JAXFUSE_CACHE_DIR"):
        return os.environ["JAXFUSE_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxfuse", "xla")


def enable_persistent_cache(directory: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache (process-wide), so a later run loads the
    programs this one compiles. Keeps a directory the user set through JAX's own
    configuration (JAX_COMPILATION_CACHE_DIR). Returns the directory, or None when it
    cannot be created."""
    import jax
    current = jax.config.jax_compilation_cache_dir
    directory = current or directory or default_cache_dir()
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None
    if not os.access(directory, os.W_OK | os.X_OK):
        return None
    if not current:
        jax.config.update("jax_compilation_cache_dir", directory)
        import importlib.util
        if jax.config.jax_compilation_cache_max_size == -1 and importlib.util.find_spec("filelock"):
            jax.config.update("jax_compilation_cache_max_size", 2**30)  # unbounded by default: keep the last GiB
    # check programs compile in milliseconds: cache them all, however small
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
