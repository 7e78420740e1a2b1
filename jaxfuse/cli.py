"""The `jaxfuse` command line (also `python -m jaxfuse`).

Subcommands are `Command` records kept in one registry, in the order they appear in
`jaxfuse --help`. To add one (optimize, verify, bench, ...): write
`_add_NAME_arguments(parser)` and `_run_NAME(args) -> int` (an exit code), then
`register(Command(name, summary, description, _add_NAME_arguments, _run_NAME))` next to the
others at the bottom of this module. `register` rejects duplicate names.

Error contract: every problem with the user's input (unreadable model, bad .npz, unwritable
output, unsupported op) is raised as an exception that `main` turns into ONE line on stderr,
"jaxfuse: error: <file>: <problem>", and exit status 2, without a traceback. Anything else is
a bug in jaxfuse: one line "jaxfuse: internal error: ..." and exit status 3 (set
JAXFUSE_DEBUG=1 to get the traceback instead). Outputs are written to a temporary file in the
destination directory and renamed into place, so a failed command never leaves a partial file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import __version__, io
from .memory import map_large_allocations
from .programs import wait_for_jax
from .io import ModelError, read as _read_model, write as _write_model
from .io.write import atomic_write
from .ir import GraphError, Model, Tensor
from .numerics import RANDOM_INT_RANGE, json_safe, random_input, short_name
from .quantization import SCHEMES
from .samples import SINGLE, SampleError, SampleSet, open_samples, read_samples
from .schema import TENSOR_TYPE_NAMES, TENSOR_TYPES

EXIT_OK = 0
EXIT_FAILED = 1        # a verification found a difference (verify / optimize)
EXIT_BAD_INPUT = 2     # bad input or usage
EXIT_INTERNAL = 3      # a bug in jaxfuse
MODEL_EXTENSIONS = (".tflite", ".circle")
_MAX_MESSAGE = 600     # characters; longer error messages are cut

EXIT_CODES_HELP = """\
exit status:
  0  success
  1  verification failed (the models differ; used by verify and optimize)
  2  bad input or usage: unreadable or corrupt model, unsupported op, bad .npz,
     unwritable output (one line on stderr: "jaxfuse: error: ...")
  3  internal error, a bug in jaxfuse (one line on stderr: "jaxfuse: internal
     error: ..."); set JAXFUSE_DEBUG=1 to see the traceback"""


class CLIError(Exception):
    """A problem with the user's input; the message is one line naming the file."""


@dataclass(frozen=True)
class Command:
    name: str
    summary: str                                            # one line in `jaxfuse --help`
    description: str                                        # `jaxfuse NAME --help` body
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]                # returns the exit status
    epilog: str = ""                                        # output format, exit codes


COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    if command.name in COMMANDS:
        raise ValueError(f"subcommand {command.name!r} is already registered")
    COMMANDS[command.name] = command
    return command


# -- shared helpers ----------------------------------------------------------------------
def _dtype_name(tensor: Tensor) -> str:
    return TENSOR_TYPE_NAMES.get(tensor.type, f"type{tensor.type}").lower()


def _load(path: str) -> Model:
    """Read a model; ModelError messages already name the file."""
    if os.path.exists(path) and not os.path.isdir(path) and not os.access(path, os.R_OK):
        raise CLIError(f"{path}: permission denied")
    try:
        return _read_model(path)
    except OSError as e:
        raise CLIError(f"{path}: cannot read ({e.strerror or e})") from None


def _validated(model: Model, path: str) -> Model:
    try:
        return model.validate()
    except GraphError as e:
        raise CLIError(f"{path}: invalid model: {e}") from None


def _check_output_path(path: str, extensions: tuple[str, ...], what: str) -> None:
    """Fail early (before any work) on an output path that cannot be written."""
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory")
    ext = os.path.splitext(path)[1]
    if ext.lower() not in extensions:
        raise CLIError(f"{path}: unknown {what} extension '{ext}' (use {' or '.join(extensions)})")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CLIError(f"{path}: directory {os.path.dirname(path) or '.'} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CLIError(f"{path}: permission denied (cannot write to {os.path.dirname(path) or '.'})")


def _write_error(path: str, e: OSError) -> CLIError:
    return CLIError(f"{path}: cannot write ({e.strerror or e})")


def _atomic_write(path: str, write: Callable) -> None:
    """Call write(file_object) on a temporary file beside `path`, then rename it to `path`."""
    try:
        atomic_write(path, write)
    except OSError as e:
        raise _write_error(path, e) from None


def _save_model(model: Model, path: str, source: str) -> None:
    try:
        _write_model(model, path)
    except GraphError as e:
        raise CLIError(f"{source}: cannot be written: {e}") from None
    except OSError as e:
        raise _write_error(path, e) from None


# -- inspect -----------------------------------------------------------------------------
INSPECT_JSON_HELP = """\
--json prints one JSON object with these keys:
  file                      the MODEL argument
  format                    "tflite" or "circle" (from the file identifier TFL3 / CIR0)
  schema_version            the model's schema version field
  description               the model's description string, or null
  subgraph_count            number of subgraphs
  subgraphs                 [{"index", "name", "tensor_count", "op_count"}] per subgraph
  tensor_count              tensors in all subgraphs
  op_count                  ops in all subgraphs
  op_histogram              {op type: count}, most frequent first; custom ops appear as
                            "CUSTOM(code)"
  inputs, outputs           the main subgraph's (subgraph 0) graph inputs / outputs, in order:
                            [{"name", "shape", "shape_signature" (list or null),
                              "dtype" (e.g. "float32", "int8"), "quantized" (bool),
                              "scale", "zero_point" (lists; only when quantized)}]
  quantization              {"scheme": "float", "float16 weights", "int8", "uint8",
                             "int16x8", "dynamic range" (integer weights, float
                             activations) or "mixed", "quantized_tensors",
                             "per_channel_tensors", "quantized_types" ({type: count})}
  constant_parameter_bytes  bytes of constant data, each shared buffer counted once
  constant_buffer_count     number of distinct constant buffers
  signature_defs            [{"key", "subgraph", "inputs": {name: tensor name},
                              "outputs": {name: tensor name}}]
  metadata                  [{"name", "bytes"}] (the model's metadata entries)"""


def _add_inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a .tflite or .circle file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text (keys below)")


def _tensor_info(t: Tensor) -> dict:
    info = {"name": t.name, "shape": [int(d) for d in t.shape],
            "shape_signature": None if t.shape_signature is None else [int(d) for d in t.shape_signature],
            "dtype": _dtype_name(t), "quantized": bool(t.is_quantized)}
    if t.is_quantized:
        info["scale"] = [float(v) for v in t.quantization.scale]
        info["zero_point"] = [int(v) for v in t.quantization.zero_point] if t.quantization.zero_point is not None \
            else []
    return info


def quantization_summary(model: Model) -> dict:
    """What kind of quantization the model uses, judged from its tensors' types."""
    quantized = [t for g in model.graphs for t in g.tensors if t.is_quantized and t.dtype is not None
                 and t.dtype.kind in "iu"]
    types: dict[str, int] = {}
    for t in quantized:
        types[_dtype_name(t)] = types.get(_dtype_name(t), 0) + 1
    activations = {_dtype_name(t) for t in quantized if not t.is_constant}
    boundary = {id(t) for g in model.graphs for t in [*g.inputs, *g.outputs]}
    float_inside = any(not t.is_constant and id(t) not in boundary and t.dtype is not None and t.dtype.kind == "f"
                       for g in model.graphs for t in g.tensors)
    if not quantized:
        half = any(op.type == "DEQUANTIZE" and op.inputs[0] is not None and op.inputs[0].type == TENSOR_TYPES["FLOAT16"]
                   for g in model.graphs for op in g.ops)
        scheme = "float16 weights" if half else "float"
    elif not activations:
        scheme = "dynamic range"
    elif len(activations) > 1 or float_inside:
        scheme = "mixed"
    else:
        scheme = "int16x8" if activations == {"int16"} else activations.pop()
    return {"scheme": scheme, "quantized_tensors": len(quantized),
            "per_channel_tensors": sum(len(t.quantization.scale) > 1 for t in quantized),
            "quantized_types": dict(sorted(types.items()))}


def model_summary(model: Model, path: str) -> dict:
    """The facts `jaxfuse inspect` reports, as the JSON-ready dict --json prints."""
    hist: dict[str, int] = {}
    buffers: dict[int, int] = {}
    for g in model.graphs:
        for op in g.ops:
            hist[op.type] = hist.get(op.type, 0) + 1
        for t in g.tensors:
            if t.is_constant:
                buffers[id(t.buffer)] = t.buffer.nbytes
    main = model.graphs[0] if model.graphs else None
    return {
        "file": path,
        "format": model.file_format,
        "schema_version": int(model.version),
        "description": model.description,
        "subgraph_count": len(model.graphs),
        "subgraphs": [{"index": i, "name": g.name, "tensor_count": len(g.tensors), "op_count": len(g.ops)}
                      for i, g in enumerate(model.graphs)],
        "tensor_count": sum(len(g.tensors) for g in model.graphs),
        "op_count": sum(len(g.ops) for g in model.graphs),
        "op_histogram": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        "inputs": [_tensor_info(t) for t in main.inputs] if main else [],
        "outputs": [_tensor_info(t) for t in main.outputs] if main else [],
        "quantization": quantization_summary(model),
        "constant_parameter_bytes": sum(buffers.values()),
        "constant_buffer_count": len(buffers),
        "signature_defs": [{"key": s.key, "subgraph": s.graph_index,
                            "inputs": {k: t.name for k, t in s.inputs},
                            "outputs": {k: t.name for k, t in s.outputs}} for s in model.signatures],
        "metadata": [{"name": name, "bytes": len(content)} for name, content in model.metadata],
    }


def _shape_text(info: dict) -> str:
    text = str(info["shape"])
    if info["shape_signature"] is not None and info["shape_signature"] != info["shape"]:
        text += f" (signature {info['shape_signature']})"
    return text


def _quantization_text(info: dict) -> str:
    if len(info["scale"]) == 1:
        return f" quantized (scale {info['scale'][0]:.6g}, zero point {info['zero_point'][0]})"
    return f" quantized ({len(info['scale'])} per-channel scales)"


def _format_summary(s: dict) -> str:
    lines = [f"file:         {s['file']}",
             f"format:       {s['format']}",
             f"schema:       version {s['schema_version']}"]
    if s["description"]:
        lines.append(f"description:  {s['description']}")
    lines += [f"subgraphs:    {s['subgraph_count']}",
              f"tensors:      {s['tensor_count']}",
              f"ops:          {s['op_count']}",
              f"constants:    {s['constant_parameter_bytes']} bytes in {s['constant_buffer_count']} distinct buffers"]
    q = s["quantization"]
    if q["quantized_tensors"]:
        kinds = ", ".join(f"{n} {k}" for k, n in q["quantized_types"].items())
        lines.append(f"quantization: {q['scheme']} ({q['quantized_tensors']} quantized tensors: {kinds}; "
                     f"{q['per_channel_tensors']} per channel)")
    else:
        lines.append(f"quantization: {q['scheme']}")

    def table(rows: list[list[str]], indent="  ") -> list[str]:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
        return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]

    where = " (subgraph 0)" if s["subgraph_count"] > 1 else ""
    for role in ("inputs", "outputs"):
        lines.append(f"{role}{where}:" + ("" if s[role] else " none"))
        lines += table([[t["name"], _shape_text(t), t["dtype"] + (_quantization_text(t) if t["quantized"] else "")]
                        for t in s[role]])
    lines.append("op histogram:" + ("" if s["op_histogram"] else " no ops"))
    lines += table([[name, str(n)] for name, n in s["op_histogram"].items()])
    lines.append("signature defs:" + ("" if s["signature_defs"] else " none"))
    for sig in s["signature_defs"]:
        lines.append(f"  {sig['key']} (subgraph {sig['subgraph']})")
        for role in ("inputs", "outputs"):
            pairs = ", ".join(f"{k} -> {v}" for k, v in sig[role].items()) or "none"
            lines.append(f"    {role}: {pairs}")
    lines.append("metadata:" + ("" if s["metadata"] else " none"))
    lines += table([[m["name"], f"{m['bytes']} bytes"] for m in s["metadata"]])
    return "\n".join(lines)


def _run_inspect(args: argparse.Namespace) -> int:
    summary = model_summary(_load(args.model), args.model)
    print(json.dumps(summary, indent=2) if args.json else _format_summary(summary))
    return EXIT_OK


# -- convert -----------------------------------------------------------------------------
def _add_convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="the model to read (.tflite or .circle)")
    p.add_argument("output", metavar="OUT", help="the file to write; its extension picks the format: "
                                                  ".tflite (identifier TFL3) or .circle (CIR0)")


def _run_convert(args: argparse.Namespace) -> int:
    _check_output_path(args.output, MODEL_EXTENSIONS, "model")
    model = _load(args.input)
    _save_model(model, args.output, args.input)
    out_format = "circle" if args.output.lower().endswith(".circle") else "tflite"
    print(f"wrote {args.output} ({out_format}, {os.path.getsize(args.output)} bytes) "
          f"from {args.input} ({model.file_format})")
    return EXIT_OK


# -- run ---------------------------------------------------------------------------------


def _unique_names(tensors: list[Tensor], role: str, path: str) -> list[str]:
    names = [t.name for t in tensors]
    for name in names:
        if names.count(name) > 1:
            raise CLIError(f"{path}: {names.count(name)} graph {role}s are named '{name}', so .npz arrays "
                           f"cannot be keyed by name")
    return names


def random_inputs(tensors: list[Tensor], seed: int, path: str = "model") -> list[np.ndarray]:
    """Seeded inputs for `run` without --inputs, drawn in graph-input order from one numpy
    Generator as the equivalence checks draw them: floats standard normal, integers uniform
    in RANDOM_INT_RANGE, bools fair."""
    rng = np.random.default_rng(seed)
    arrays = []
    for t in tensors:
        if any(int(d) < 0 for d in t.shape):
            raise CLIError(f"{path}: input '{t.name}' has unknown dimensions {list(t.shape)}; give --inputs")
        if t.dtype is None or t.dtype.kind not in "fcbiu":
            raise CLIError(f"{path}: input '{t.name}' has type {_dtype_name(t)}, which run cannot generate")
        arrays.append(random_input(t, rng))
    return arrays


def read_npz_inputs(npz_path: str, tensors: list[Tensor]) -> list[np.ndarray]:
    """Arrays for the graph inputs from an .npz keyed by input tensor name, checked strictly:
    every input present, nothing extra, exact shape and dtype (no casting)."""
    if os.path.isdir(npz_path):
        raise CLIError(f"{npz_path}: is a directory, not an .npz file")
    if not os.path.exists(npz_path):
        raise CLIError(f"{npz_path}: no such file")
    try:
        archive = np.load(npz_path, allow_pickle=False)
    except OSError as e:
        raise CLIError(f"{npz_path}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # numpy raises ValueError, zipfile.BadZipFile, EOFError, ... on junk
        raise CLIError(f"{npz_path}: not a readable .npz archive ({type(e).__name__}: {e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CLIError(f"{npz_path}: holds a single array (.npy), expected an .npz archive keyed by input name")
    with archive:
        names = [t.name for t in tensors]
        expected = ", ".join(f"'{n}'" for n in names) or "none"
        missing = [n for n in names if n not in archive.files]
        if missing:
            raise CLIError(f"{npz_path}: missing input {', '.join(repr(n) for n in missing)} "
                           f"(the model's inputs are {expected})")
        extra = [k for k in archive.files if k not in names]
        if extra:
            raise CLIError(f"{npz_path}: unexpected array {', '.join(repr(k) for k in extra)} "
                           f"(the model's inputs are {expected})")
        arrays = []
        for t in tensors:
            try:
                a = archive[t.name]
            except Exception as e:
                raise CLIError(f"{npz_path}: array '{t.name}' cannot be loaded ({type(e).__name__}: {e})") from None
            want_shape = [int(d) for d in t.shape]
            if list(a.shape) != want_shape:
                raise CLIError(f"{npz_path}: input '{t.name}' has shape {list(a.shape)}, the model expects "
                               f"{want_shape}")
            if t.dtype is None or a.dtype != t.dtype:
                raise CLIError(f"{npz_path}: input '{t.name}' has dtype {a.dtype}, the model expects "
                               f"{_dtype_name(t)}")
            arrays.append(a)
        return arrays


def _read_samples(path: str, tensors: list[Tensor], limit: int | None = None) -> list[list[np.ndarray]]:
    try:
        return read_samples(path, tensors, limit)
    except SampleError as e:
        raise CLIError(str(e)) from None


def _open_inputs(path: str, tensors: list[Tensor], model_path: str) -> SampleSet:
    """The sample set of --inputs (an .npz keyed by input name, arrays with or without a
    leading sample axis, or a directory of such files), checked but not read."""
    _unique_names(tensors, "input", model_path)
    try:
        return open_samples(path, tensors)
    except SampleError as e:
        raise CLIError(str(e)) from None


DISTRIBUTED_HELP = ("run as one of several processes with jax.distributed (coordinator, process count and id "
                    "from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or detected on a cluster "
                    "JAX knows); each process reads its share of the samples, one prints the report. Implied "
                    "when JAX_COORDINATOR_ADDRESS is set and JAX_NUM_PROCESSES > 1")


def _add_scale_out_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--distributed", action="store_true", help=DISTRIBUTED_HELP)


def _start_jax(args: argparse.Namespace) -> None:
    """Have JAX start while the command reads its models (programs.start_jax_in_background);
    its backend only where no jax.distributed run is to be joined first."""
    from . import distributed
    from .programs import start_jax_in_background
    start_jax_in_background(backend=not (getattr(args, "distributed", False)
                                         or distributed.requested_by_environment()))


def _start(args: argparse.Namespace) -> bool:
    """Join a distributed run when asked to, and keep compiled programs between runs (JAX's
    persistent compilation cache). True on the process that reports and writes files."""
    from . import distributed
    from .programs import enable_persistent_cache
    if getattr(args, "distributed", False) or distributed.requested_by_environment():
        try:
            distributed.initialize()
        except distributed.DistributedError as e:
            raise CLIError(str(e)) from None
    if getattr(args, "_persistent_cache", False):
        enable_persistent_cache()
    return distributed.process_index() == 0


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """np.savez-compatible archive, written atomically (temp file + rename). Any key works,
    including names like 'file' that np.savez's keyword arguments would swallow."""
    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, array in arrays.items():
                with zf.open(key + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
    _atomic_write(path, write)


def _stats(a: np.ndarray) -> str:
    if a.size == 0:
        return "empty"
    if a.dtype.kind == "c":
        a = np.abs(a)
        prefix = "|x| "
    else:
        prefix = ""
    if a.dtype.kind == "b":
        a = a.astype(np.int8)
    return (f"{prefix}min {a.min():.6g}  max {a.max():.6g}  mean {a.mean(dtype=np.float64):.6g}")


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a .tflite or .circle file")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--inputs", metavar="FILE.npz",
                        help="input arrays keyed by input tensor name, of the model's dtype (no casting): exactly "
                             "the input's shape for one sample, or with a leading sample axis ([N, *shape], or "
                             "[N, ...] in place of a batch dimension of 1); or a directory of such files. Every "
                             "graph input must be present, and nothing else")
    source.add_argument("--seed", type=int, metavar="N",
                        help="seed of the random inputs used without --inputs (default: 0)")
    p.add_argument("-o", "--output", metavar="OUT.npz",
                   help="save the outputs here, keyed by output tensor name (written atomically); for N samples "
                        "each with a leading sample axis, laid out as the inputs were")
    _add_scale_out_arguments(p)


def _run_run(args: argparse.Namespace) -> int:
    if args.output is not None:
        _check_output_path(args.output, (".npz",), "output")
    _start_jax(args)
    model = _validated(_load(args.model), args.model)
    graph = model.main
    _unique_names(graph.inputs, "input", args.model)
    out_names = _unique_names(graph.outputs, "output", args.model)
    dataset = None
    if args.inputs is not None:
        dataset = _open_inputs(args.inputs, graph.inputs, args.model)
        source = f"from {args.inputs}"
        if len(dataset) == 1 and dataset.form == SINGLE:  # one sample of exactly the model's shapes
            inputs, dataset = dataset[0], None
        else:
            source += f" ({len(dataset)} samples)"
    else:
        seed = 0 if args.seed is None else args.seed
        inputs = random_inputs(graph.inputs, seed, args.model)
        source = f"random, seed {seed}"
    wait_for_jax()
    leader = _start(args)

    import jax  # deferred: jax is slow to import and only run needs it

    from .lowering import LoweringError, lower, resource_variables, run_steps
    try:
        if dataset is None and resource_variables(model):  # one step from the state the model starts in
            outputs = [o[0] for o in run_steps(model, [np.asarray(x)[None] for x in inputs])[0]]
        elif dataset is None:
            fn, params = lower(model)
            outputs = [np.asarray(o) for o in jax.jit(fn)(params, *inputs)]  # tracing may reject an op too
        else:
            from . import progress
            from .batched import run_model
            with progress.bar(len(dataset), "running", "sample") as bar:
                outputs = run_model(model, dataset, progress_bar=bar)
            if dataset.form == "in place of batch":  # outputs [N, ...] in place of their batch of 1 too
                outputs = [o.reshape(o.shape[0], *o.shape[2:]) if o.ndim >= 2 and o.shape[1] == 1 else o
                           for o in outputs]
    except (LoweringError, GraphError) as e:
        raise CLIError(f"{args.model}: cannot run: {e}") from None
    if not leader:
        return EXIT_OK
    if len(outputs) != len(out_names):
        raise RuntimeError(f"lowered function returned {len(outputs)} outputs, the graph has {len(out_names)}")
    print(f"inputs: {source}")
    width = max((len(n) for n in out_names), default=0)
    for name, a in zip(out_names, outputs):
        print(f"{name.ljust(width)}  {list(a.shape)}  {a.dtype}  {_stats(a)}")
    if args.output is not None:
        write_npz(args.output, dict(zip(out_names, outputs)))
        print(f"wrote {args.output} ({len(outputs)} array{'s' if len(outputs) != 1 else ''})")
    return EXIT_OK


# -- optimize ----------------------------------------------------------------------------
def _add_optimize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="INPUT", help="a .tflite or .circle file")
    p.add_argument("-o", "--output", metavar="OUTPUT", required=True,
                   help="where to write the optimized model; .circle writes circle (CIR0), .tflite writes TFLite (TFL3)")
    p.add_argument("--pass", dest="passes", action="append", metavar="NAME",
                   help="run only this pass (repeatable, in the order given); default: every exact pass. "
                        "Names: see the list below")
    p.add_argument("--report", metavar="FILE.json", help="also write the full report as JSON")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the final whole-model comparison (every single rewrite is still checked)")
    p.add_argument("--inputs", metavar="FILE.npz",
                   help="samples for the whole-model comparison, as for 'jaxfuse verify --inputs' (keyed by input "
                        "name, with or without a leading sample axis, or a directory of such files; the per-rewrite "
                        "checks take their activation statistics from the first); default: 2 seeded random samples")
    _add_scale_out_arguments(p)
    p.add_argument("--tolerance", type=float, default=None, metavar="T",
                   help="largest accepted whole-model error, relative to each output's scale (default: 1e-4)")
    p.add_argument("--lossy-float16-weights", action="store_true",
                   help="LOSSY, opt-in: a float16-weight model's fused weights are stored as float16 again (by "
                        "default they stay float32, which is exact but grows the file); the error this adds is "
                        "measured and printed")
    target = p.add_argument_group("quantized deployment (see 'for int8' below)")
    target.add_argument("--for", dest="target", choices=["float", *SCHEMES], default="float",
                        help="what the model will run as: float (default) writes the fold that is fastest in "
                             "float; int8 / int16x8 measure which exact fold stays best after quantization with "
                             "ai-edge-quantizer (pip install 'jaxfuse[quantize]') and write that one")
    target.add_argument("--calibration", metavar="FILE.npz",
                        help="with --for int8: calibration samples, as for 'jaxfuse quantize' (default: --samples "
                             "seeded random samples)")
    target.add_argument("--samples", type=int, default=None, metavar="N",
                        help=f"with --for int8 and no --calibration: how many seeded random samples (default "
                             f"{DEFAULT_CALIBRATION_SAMPLES}); with it: its first N")
    target.add_argument("--seed", type=int, default=0, metavar="N", help="seed of those random samples (default 0)")
    target.add_argument("--max-sqnr-loss", type=float, default=None, metavar="DB",
                        help="with --for int8: the SQNR a fold may lose against the quantized unfused model "
                             "(default 0.3 dB)")


FOR_INT8_HELP = """for int8 (and int16x8):
  Every fold is exact in float, but quantization sees them differently: folding a batch
  norm's scale into the next convolution changes its int8 weights and the range of the
  tensor in between; moving the shift into the previous convolution's bias shifts the
  residual stream's range. --for int8 makes three candidates (full fold with each ReLU
  written as MUL by 1 with a fused RELU, which LiteRT's XNNPACK delegate runs in int8;
  shift only; scale only), quantizes each and the unfused model with ai-edge-quantizer
  on the same calibration samples (as 'jaxfuse quantize' does), measures each one's SQNR
  against the float model on those samples through jaxfuse's quantized lowering (before a
  final SOFTMAX, whose int8 steps of 1/256 hide differences), and writes the candidate
  with the fewest ops among those within --max-sqnr-loss of the unfused model. The output
  is still a float model: quantize it with 'jaxfuse quantize' and the same calibration."""


def _standalone_relus(model: Model) -> int:
    return sum(op.type in ("RELU", "RELU6", "RELU_N1_TO_1") for op in model.main.ops)


def _run_optimize(args: argparse.Namespace) -> int:
    import time

    _check_output_path(args.output, MODEL_EXTENSIONS, "model")
    if args.report is not None:
        _check_output_path(args.report, (".json",), "report")
    _start_jax(args)
    t0 = time.perf_counter()
    model = _validated(_load(args.input), args.input)
    read_time = time.perf_counter() - t0
    t = time.perf_counter()
    wait_for_jax()
    from .equivalence import DEFAULT_TOLERANCE, VerificationError  # JAX: what is left of its start
    from .passes import DEFAULT_PIPELINE, PASSES, optimize
    import_time = time.perf_counter() - t
    for name in args.passes or []:
        if name not in PASSES:
            raise CLIError(f"unknown pass '{name}' (known: {', '.join(sorted(PASSES))})")
    samples = None
    if args.inputs is not None:
        samples = _open_inputs(args.inputs, model.main.inputs, args.input)
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    if not tolerance > 0:
        raise CLIError(f"--tolerance must be positive, got {args.tolerance}")
    leader = _start(args)
    from . import progress
    if not leader:
        progress.enable(False)

    from .lowering import LoweringError
    failed = selection = None
    try:
        if args.target == "float":
            optimized, report = optimize(model, args.passes or DEFAULT_PIPELINE, verify=not args.no_verify,
                                         inputs=samples, tolerance=tolerance,
                                         lossy_float16=args.lossy_float16_weights)
        else:
            optimized, report, selection = _optimize_for_quantization(args, model, samples, tolerance)
    except LoweringError as e:
        raise CLIError(f"{args.input}: cannot optimize: {e}") from None
    except VerificationError as e:
        failed, report, optimized = e, e.report, None
    if args.target == "float" and optimized is not None and _standalone_relus(optimized) > _standalone_relus(model):
        report.notes.append(
            f"{_standalone_relus(optimized) - _standalone_relus(model)} ReLU(s) are now RELU ops of their own: "
            "quantized to int8, LiteRT's XNNPACK delegate does not run those (measured on ResNet50V2: 2.8x slower "
            "with 1 thread), and the full fold changes int8 ranges (-0.5 dB SQNR there): for a model you will "
            "quantize, use --for int8")
    report.timings = {"read": read_time, "import": import_time, **report.timings}
    if not leader:  # every process optimized the same model; the first writes and reports
        return EXIT_OK if failed is None else EXIT_FAILED
    if optimized is not None:
        t = time.perf_counter()
        _save_model(optimized, args.output, args.input)
        report.timings["write"] = time.perf_counter() - t
    print(f"{args.input} -> {args.output if failed is None else '(nothing written)'}")
    print(report.format_text())
    if selection is not None:
        print(selection.format_text())
    report.timings["total"] = time.perf_counter() - t0
    print("  time: " + ", ".join(f"{k} {v:.2f}s" for k, v in report.timings.items()))
    if args.report is not None:
        data = report.to_dict() if selection is None else {**report.to_dict(), "for": selection.to_dict()}
        text = json.dumps(json_safe(data), indent=2, default=_json_default)
        _atomic_write(args.report, lambda f: f.write(text.encode()))
    if failed is not None:
        print(f"jaxfuse: verification failed: {_one_line(str(failed))}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _optimize_for_quantization(args, model: Model, samples, tolerance: float):
    from .quantization import QuantizationError, QuantizerUnavailable, quantizer_version
    from .quantized_target import DEFAULT_MAX_LOSS, optimize_for_quantization

    try:
        quantizer_version()
    except QuantizerUnavailable as e:
        raise CLIError(f"--for {args.target}: {e}") from None
    if args.samples is not None and args.samples < 1:
        raise CLIError(f"--samples must be at least 1, got {args.samples}")
    max_loss = DEFAULT_MAX_LOSS if args.max_sqnr_loss is None else args.max_sqnr_loss
    if not max_loss >= 0:
        raise CLIError(f"--max-sqnr-loss must be at least 0, got {args.max_sqnr_loss}")
    _unique_names(model.main.inputs, "input", args.input)
    calibration, source = _calibration(args, model.main)
    print(f"--for {args.target}: calibration {source}")
    try:
        return optimize_for_quantization(model, calibration, calibration, args.target,
                                         args.passes, max_loss, verify=not args.no_verify, inputs=samples,
                                         tolerance=tolerance, lossy_float16=args.lossy_float16_weights)
    except QuantizationError as e:
        raise CLIError(f"{args.input}: cannot quantize a candidate: {e}") from None


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# -- verify ------------------------------------------------------------------------------
def _add_verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_a", metavar="MODEL_A", help="the reference model (.tflite or .circle)")
    p.add_argument("model_b", metavar="MODEL_B", help="the model to check against it")
    p.add_argument("--inputs", metavar="FILE.npz",
                   help="samples keyed by MODEL_A's input names: arrays of exactly the input's shape (one sample) "
                        "or with a leading sample axis ([N, *shape], or [N, ...] in place of a batch dimension "
                        "of 1), or a directory of such files; default: --samples seeded random samples")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help="without --inputs: how many seeded random samples (default 2); with it: use only its "
                        "first N (default: all)")
    _add_scale_out_arguments(p)
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the random samples (default 0)")
    p.add_argument("--tolerance", type=float, default=None, metavar="T",
                   help="float models: largest accepted error relative to each tensor's scale (default: 1e-4)")
    p.add_argument("--max-lsb", type=float, default=None, metavar="N",
                   help="two quantized models: largest accepted difference in quantization steps (LSB) of "
                        "MODEL_A's tensors (default: 1)")
    p.add_argument("--min-sqnr", type=float, default=None, metavar="DB",
                   help="a float model against a quantized one: the SQNR every output must reach, in dB "
                        "(default: 20); with two quantized models, also required when given")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def _failing_model(paths: list[str], models: list[Model]) -> str | None:
    """The path of the first model whose lowering fails when traced on its input shapes."""
    import jax

    from .lowering import LoweringError, lower, resource_variables
    for path, model in zip(paths, models):
        try:
            fn, params = lower(model)
            jax.eval_shape(fn, params, *[jax.ShapeDtypeStruct(t.shape, t.dtype) for t in model.main.inputs],
                           *[jax.ShapeDtypeStruct(v.shape, v.dtype) for v in resource_variables(model)])
        except LoweringError:
            return path
    return None


def _format_diff(d) -> str:
    if d.kind == "quantized":
        return (f"max {d.lsb_error:.3g} LSB, {d.within_1_lsb:.3%} of elements within 1 LSB, "
                f"SQNR {d.sqnr_db:.2f} dB")
    if d.kind == "float-vs-quantized":
        return f"SQNR {d.sqnr_db:.2f} dB, max abs error {d.max_abs_error:.3g} (scale {d.scale:.3g})"
    return f"max abs error {d.max_abs_error:.3g}, scale {d.scale:.3g}, relative {d.rel_error:.3g}"


def _format_samples(d, samples: int) -> str:
    """Per-sample figures of an output: 99th percentile, worst sample, top-1 agreement."""
    if d.worst_sample is None or samples < 2:
        return ""
    unit = " LSB" if d.kind == "quantized" else " of the scale"
    text = f"; over {samples} samples: 99th percentile {d.p99_error:.3g}{unit}, worst sample {d.worst_sample}"
    if d.top1_agreement is not None:
        text += f", top-1 agreement {d.top1_agreement:.2%}"
    return text


def _run_verify(args: argparse.Namespace) -> int:
    _start_jax(args)
    a = _validated(_load(args.model_a), args.model_a)
    b = _validated(_load(args.model_b), args.model_b)
    wait_for_jax()
    from .equivalence import DEFAULT_MAX_LSB, DEFAULT_TOLERANCE, compare
    from .lowering import LoweringError, WholeModelNeeded
    if args.samples is not None and args.samples < 1:
        raise CLIError(f"--samples must be at least 1, got {args.samples}")
    samples = None
    if args.inputs is not None:
        samples = _open_inputs(args.inputs, a.main.inputs, args.model_a)
        if args.samples is not None and args.samples < len(samples):
            samples = samples.head(args.samples)
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    max_lsb = DEFAULT_MAX_LSB if args.max_lsb is None else args.max_lsb
    if not tolerance > 0 or not max_lsb >= 0:
        raise CLIError("--tolerance must be positive and --max-lsb at least 0")
    leader = _start(args)
    if not leader:
        from . import progress
        progress.enable(False)
    try:
        report = compare(a, b, samples, tolerance=tolerance, seed=args.seed,
                         num_samples=2 if args.samples is None else args.samples,
                         max_lsb=max_lsb, min_sqnr=args.min_sqnr)
    except WholeModelNeeded as e:  # the checks run one graph at a time
        raise CLIError(f"{args.model_a} vs {args.model_b}: cannot be verified: the checks run one graph at a time; "
                       f"{e}") from None
    except LoweringError as e:
        raise CLIError(f"{_failing_model([args.model_a, args.model_b], [a, b]) or 'cannot run the models'}: {e}") \
            from None
    except ValueError as e:  # incompatible inputs/outputs
        raise CLIError(f"{args.model_a} vs {args.model_b}: {e}") from None
    if not leader:  # every process holds the whole report; the first prints it
        return EXIT_OK if report.ok else EXIT_FAILED
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=_json_default))
    else:
        print(f"{args.model_a} vs {args.model_b}: {report.summary()}")
        for o in report.outputs:
            print(f"  output '{o.name}': {_format_diff(o)}{_format_samples(o, report.samples)}")
        if report.mode != "float":
            for t in report.worst_tensors:
                print(f"  lowest SQNR: '{short_name(t.name)}': {_format_diff(t)}")
    return EXIT_OK if report.ok else EXIT_FAILED


# -- quantize ----------------------------------------------------------------------------
DEFAULT_CALIBRATION_SAMPLES = 32
CHECK_SAMPLES = 8


def _add_quantize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="the float model (.tflite or .circle)")
    p.add_argument("-o", "--output", metavar="OUT", required=True,
                   help="where to write the quantized model; .tflite writes TFLite (TFL3), .circle circle (CIR0)")
    p.add_argument("--calibration", metavar="FILE.npz",
                   help="calibration samples: an .npz keyed by input name whose arrays carry a leading sample "
                        "axis ([N, *input_shape], or [N, ...] in place of a batch dimension of 1), or a "
                        "directory of such files; default: --samples seeded random samples")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help=f"without --calibration: how many seeded random samples (default "
                        f"{DEFAULT_CALIBRATION_SAMPLES}); with it: use only its first N samples (default: all)")
    p.add_argument("--scheme", choices=list(SCHEMES), default="int8",
                   help="int8: int8 weights per channel and int8 activations (default); int16x8: int8 "
                        "weights and int16 activations")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the random samples (default 0)")
    p.add_argument("--min-sqnr", type=float, default=None, metavar="DB",
                   help="the SQNR (dB) every output of the quantized model must reach against the float "
                        "model in the check; below it nothing is written and the exit status is 1 (default: 20)")
    p.add_argument("--report", metavar="FILE.json", help="also write the full report as JSON")


def _run_quantize(args: argparse.Namespace) -> int:
    import time

    from .quantization import QuantizationError, QuantizerUnavailable, quantize, quantizer_version

    _check_output_path(args.output, MODEL_EXTENSIONS, "model")
    if args.report is not None:
        _check_output_path(args.report, (".json",), "report")
    if args.samples is not None and args.samples < 1:
        raise CLIError(f"--samples must be at least 1, got {args.samples}")
    try:
        quantizer_version()
    except QuantizerUnavailable as e:
        raise CLIError(str(e)) from None
    t0 = time.perf_counter()
    model = _validated(_load(args.input), args.input)
    graph = model.main
    quantized_inputs = [t.name for t in graph.tensors if t.is_quantized and t.dtype is not None
                        and t.dtype.kind in "iu"]
    if quantized_inputs:
        raise CLIError(f"{args.input}: is already quantized (tensor '{quantized_inputs[0]}')")
    _unique_names(graph.inputs, "input", args.input)
    calibration, source = _calibration(args, graph)
    timings = {"read": time.perf_counter() - t0}
    t = time.perf_counter()
    try:
        result = quantize(model, calibration, args.scheme)
    except QuantizationError as e:
        raise CLIError(f"{args.input}: cannot quantize: {e}") from None
    timings["quantize"] = time.perf_counter() - t
    t = time.perf_counter()
    check = _check_quantized(model, result, calibration[:CHECK_SAMPLES], args.min_sqnr)
    timings["check"] = time.perf_counter() - t
    written = check["ok"]
    if written:
        t = time.perf_counter()
        if args.output.lower().endswith(".circle"):
            _save_model(result.model, args.output, args.input)
        else:
            _atomic_write(args.output, lambda f: f.write(result.tflite_bytes))
        timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    report = {"input": args.input, "output": args.output if written else None, "scheme": args.scheme,
              "scheme_description": SCHEMES[args.scheme][1], "quantizer": f"ai-edge-quantizer {result.quantizer_version}",
              "calibration": source, "calibration_samples": len(calibration),
              "ops": {"before": sum(model.op_histogram().values()), "after": sum(result.model.op_histogram().values())},
              "bytes": {"before": model.parameter_bytes(), "after": result.model.parameter_bytes()},
              "check": check, "timings": timings}
    print(f"{args.input} -> {args.output if written else '(nothing written)'}: {args.scheme} "
          f"({SCHEMES[args.scheme][1]}), {report['quantizer']}")
    print(f"  calibration: {source}")
    print(f"  ops {report['ops']['before']} -> {report['ops']['after']}, constants {report['bytes']['before']} -> "
          f"{report['bytes']['after']} bytes")
    print(f"  check on {check['samples']} calibration sample(s), float model vs quantized model:")
    for out in check["outputs"]:
        line = f"    output '{out['name']}': SQNR {out['sqnr_db']:.2f} dB through jaxfuse"
        if out.get("litert_sqnr_db") is not None:
            line += (f", {out['litert_sqnr_db']:.2f} dB through LiteRT; jaxfuse vs LiteRT: max "
                     f"{out['jaxfuse_vs_litert_max_lsb']} LSB, {out['jaxfuse_vs_litert_within_1_lsb']:.3%} within 1 LSB")
        print(line)
    if check["litert"] is not None:
        print(f"    LiteRT: {check['litert']}")
    print("  lowest SQNR tensors: " + ", ".join(f"'{short_name(w['name'])}' {w['sqnr_db']:.1f} dB"
                                             for w in check["worst_tensors"]))
    print("  time: " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    if args.report is not None:
        text = json.dumps(json_safe(report), indent=2, default=_json_default)
        _atomic_write(args.report, lambda f: f.write(text.encode()))
    if not written:
        print(f"jaxfuse: quantized model rejected: an output's SQNR is below {check['min_sqnr']:g} dB "
              "(--min-sqnr sets the limit)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _calibration(args: argparse.Namespace, graph) -> tuple[list[list[np.ndarray]], str]:
    """(samples, where they come from) for ai-edge-quantizer: --calibration, or --samples
    seeded random ones (which the text says: the ranges come from them)."""
    if args.calibration is not None:
        calibration = _read_samples(args.calibration, graph.inputs, args.samples)
        return calibration, f"{len(calibration)} sample(s) from {args.calibration}"
    count = DEFAULT_CALIBRATION_SAMPLES if args.samples is None else args.samples
    rng = np.random.default_rng(args.seed)
    calibration = [random_inputs(graph.inputs, int(rng.integers(2 ** 31)), args.input) for _ in range(count)]
    return calibration, (f"{count} seeded random sample(s) (seed {args.seed}; floats standard normal): the ranges "
                         "come from these, so give --calibration FILE.npz with real data for a model you will deploy")


def _check_quantized(model: Model, result, samples: list[list[np.ndarray]], min_sqnr: float | None) -> dict:
    """SQNR of the quantized model against the float one through jaxfuse's lowering, and
    the same through LiteRT with the LSB agreement of the two lowerings."""
    from .engines import LITERT_AVAILABLE, run_litert
    from .equivalence import compare
    from .numerics import convert_sample, dequantize, sqnr_db
    from .lowering import LoweringError, lower

    try:
        verdict = compare(model, result.model, samples, min_sqnr=min_sqnr)
    except LoweringError as e:
        raise CLIError(f"cannot check the quantized model: {e}") from None
    outputs = [{"name": o.name, "sqnr_db": o.sqnr_db} for o in verdict.outputs]
    litert_note = None
    if LITERT_AVAILABLE:
        import jax
        float_model, quantized = model.main, result.model.main
        fn, params = lower(result.model)
        jitted = jax.jit(fn)
        float_bytes = io.to_bytes(model, "tflite")
        signal = [0.0] * len(outputs)
        noise = [0.0] * len(outputs)
        worst_lsb = [0] * len(outputs)
        within = [0] * len(outputs)
        count = [0] * len(outputs)
        for sample in samples:
            inputs = convert_sample(sample, float_model.inputs, quantized.inputs)
            reference = run_litert(float_bytes, sample)
            litert = run_litert(result.tflite_bytes, inputs)
            ours = [np.asarray(y) for y in jitted(params, *inputs)]
            for i, (ref, lit, own, t) in enumerate(zip(reference, litert, ours, quantized.outputs)):
                real = dequantize(lit, t)
                signal[i] += float(np.sum(np.asarray(ref, np.float64) ** 2))
                noise[i] += float(np.sum((np.asarray(ref, np.float64) - real) ** 2))
                diff = np.abs(own.astype(np.int64) - lit.astype(np.int64)) if own.dtype.kind in "iu" else \
                    np.abs(own.astype(np.float64) - lit.astype(np.float64)) / max(float(np.max(np.abs(lit))), 1e-30)
                worst_lsb[i] = max(worst_lsb[i], float(np.max(diff, initial=0)))
                within[i] += int(np.sum(diff <= 1))
                count[i] += diff.size
        for i, out in enumerate(outputs):
            out.update(litert_sqnr_db=sqnr_db(signal[i], noise[i]), jaxfuse_vs_litert_max_lsb=worst_lsb[i],
                       jaxfuse_vs_litert_within_1_lsb=within[i] / max(count[i], 1))
    else:
        litert_note = "ai-edge-litert is not installed: no cross-check"
    return {"ok": verdict.ok, "samples": len(samples), "min_sqnr": verdict.min_sqnr, "outputs": outputs,
            "worst_tensors": [{"name": w.name, "sqnr_db": w.sqnr_db} for w in verdict.worst_tensors],
            "litert": litert_note}


# -- bench -------------------------------------------------------------------------------
def _add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_a", metavar="MODEL", help="a .tflite or .circle file (the baseline)")
    p.add_argument("model_b", metavar="MODEL_B", nargs="?", help="optional second model, timed against MODEL")
    p.add_argument("--rounds", type=int, default=30, metavar="N", help="timed rounds after warm-up (default 30)")
    p.add_argument("--warmup", type=int, default=2, metavar="N",
                   help="untimed inferences of each fresh instance before it is timed (default 2)")
    p.add_argument("--min-seconds", type=float, default=0.1, metavar="S",
                   help="per round, each model runs single inferences for about S seconds and its fastest is "
                        "kept (default 0.1)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="XLA device (default cpu)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")


def _run_bench(args: argparse.Namespace) -> int:
    if args.rounds < 1 or args.warmup < 0 or not args.min_seconds >= 0:
        raise CLIError("--rounds must be at least 1, --warmup and --min-seconds at least 0")
    paths = [args.model_a] + ([args.model_b] if args.model_b else [])
    labels = [f"{'AB'[i]}:{path}" for i, path in enumerate(paths)]  # A/A (the same file twice) shows the noise
    models = [_validated(_load(path), path) for path in paths]
    if len(models) == 2 and [tuple(t.shape) for t in models[0].main.inputs] != \
            [tuple(t.shape) for t in models[1].main.inputs]:
        raise CLIError(f"{args.model_a} and {args.model_b} have different inputs")

    import jax

    from .benchmark import interleaved, summarize, xla_factory
    from .lowering import LoweringError
    try:
        device = jax.devices(args.device)[0]
    except RuntimeError:
        raise CLIError(f"JAX sees no {args.device} device") from None
    try:
        factories = {label: xla_factory(model, args.device) for label, model in zip(labels, models)}
    except LoweringError as e:
        raise CLIError(f"cannot run: {e}") from None
    times = interleaved(factories, args.rounds, args.warmup, min_seconds=args.min_seconds)
    summary = summarize(times, labels[0])
    if args.json:
        print(json.dumps({"device": str(device), "rounds": args.rounds,
                          "models": {n: t.to_dict() for n, t in summary.items()}}, indent=2))
        return EXIT_OK
    print(f"XLA on {device} ({device.platform}), {args.rounds} interleaved rounds, each on fresh instances "
          f"after {args.warmup} warm-up inference(s)")
    for name, t in summary.items():
        line = f"  {name}: median {t.median_s * 1e3:.3f} ms"
        if name != labels[0]:
            line += (f"; B/A per-round ratio median {t.ratio_median:.4f} "
                     f"[95% interval {t.ratio_ci_low:.4f}, {t.ratio_ci_high:.4f}] "
                     f"(IQR {t.ratio_q1:.4f}-{t.ratio_q3:.4f})")
        print(line)
    return EXIT_OK


# -- registry ----------------------------------------------------------------------------
register(Command(
    "inspect", "summarize a model: ops, inputs/outputs, tensors, parameter bytes",
    "Print a summary of MODEL: file format (from the identifier), schema version, subgraph,\n"
    "tensor and op counts, constant parameter bytes (each distinct buffer counted once), the\n"
    "main subgraph's inputs and outputs (name, shape, dtype), an op histogram, signature defs\n"
    "and metadata entries. The model is read, not validated, so broken graphs can be inspected.",
    _add_inspect_arguments, _run_inspect, INSPECT_JSON_HELP + "\n\n" + EXIT_CODES_HELP))
register(Command(
    "convert", "convert between .tflite and .circle",
    "Read IN (.tflite or .circle) and write it to OUT in the format OUT's extension names\n"
    "(.tflite -> identifier TFL3, .circle -> CIR0). Same-format copies are allowed (the model is\n"
    "re-serialized). Nothing is lost: ops, options, quantization, signature defs and metadata\n"
    "are kept. Prints one line: what was written, its format and size.",
    _add_convert_arguments, _run_convert, EXIT_CODES_HELP))
register(Command(
    "run", "run a model through JAX/XLA on given or random inputs",
    "Lower MODEL's main subgraph (subgraph 0) to JAX and run it once under jax.jit (XLA, on\n"
    "JAX's default device).\n\n"
    "inputs: with --inputs FILE.npz, one array per graph input keyed by the input tensor's name\n"
    "(np.savez(FILE, **{name: array})); a missing or extra key, or a shape or dtype that differs\n"
    "from the model's, is an error (no casting: convert with .astype first). Arrays with a leading\n"
    "sample axis (or a directory of such files) run every sample, batched and sharded over the\n"
    "local devices (--distributed: over hosts too); outputs then carry the sample axis. Without --inputs,\n"
    "inputs are random, drawn in graph-input order from numpy.random.default_rng(--seed):\n"
    f"floats standard normal, integers uniform in [{RANDOM_INT_RANGE[0]}, {RANDOM_INT_RANGE[1]}], "
    "bools fair coin flips\n(integer inputs that are indices or sizes usually need real values: give --inputs).\n\n"
    "output: the line 'inputs: ...', then one line per graph output: name, shape, dtype, min, max\n"
    "and mean. With -o OUT.npz the outputs are also saved keyed by output tensor name.",
    _add_run_arguments, _run_run, EXIT_CODES_HELP))

register(Command(
    "optimize", "fuse batch norms and per-channel scale/shift ops, proving every rewrite",
    "Read INPUT, run fusion passes (default: every exact pass, repeated until nothing changes),\n"
    "and write the optimized model to OUTPUT (.circle -> CIR0, .tflite -> TFL3).\n\n"
    "Every single rewrite is checked as it is applied: the affected region before and after is\n"
    "jit-compiled and run on random inputs shaped like the original's activations; a rewrite whose error\n"
    "exceeds 1e-5 of the tensor's scale is rolled back and reported. At the end the whole\n"
    "optimized model is compared with the original (unless --no-verify); if they differ, nothing\n"
    "is written and the exit status is 1.\n\n"
    "output: per pass how many matches were fused, refused (with reasons) and rolled back, op\n"
    "counts before and after, the largest error of any rewrite and of the whole model, timings.",
    _add_optimize_arguments, _run_optimize, "passes:\n  " + "\n  ".join(
        ["fuse_preactivation_batchnorm   (default pipeline: all of these)",
         "canonicalize_scale_shift       (first: elementwise constant chains -> MUL -> ADD)",
         "fuse_batchnorm_with_conv, fuse_batchnorm_with_dwconv, fuse_batchnorm_with_tconv",
         "fuse_mul_with_conv, fuse_add_with_conv, fuse_add_with_tconv",
         "fuse_mul_with_fullyconnected, fuse_add_with_fullyconnected, fuse_activation_function"])
    + "\n\n" + FOR_INT8_HELP + "\n\n" + EXIT_CODES_HELP))
register(Command(
    "verify", "compare two models through JAX, tensor by tensor (float, quantized, or one of each)",
    "Run MODEL_A and MODEL_B through JAX/XLA on the same inputs and compare their outputs (by\n"
    "position) and every tensor the two share by name, in MODEL_A's execution order. A rewrite\n"
    "that changes what a tensor holds renames it, so it is not compared.\n\n"
    "  two float models: errors relative to the scale (max |value|) of MODEL_A's tensor; every\n"
    "    output and shared tensor within --tolerance; names the first shared tensor that is not.\n"
    "  two quantized models (int8 / uint8 / int16, run as LiteRT's kernels compute them):\n"
    "    differences in LSB (quantization steps of MODEL_A's tensor), the share of elements\n"
    "    within 1 LSB and the SQNR; outputs and shared tensors within --max-lsb.\n"
    "  a float model and a quantized one (a model and its quantized version): SQNR in dB of\n"
    "    the dequantized values against the float ones, per output and per shared tensor;\n"
    "    every output must reach --min-sqnr; the tensors with the lowest SQNR are named.\n"
    "Samples are drawn in MODEL_A's input types; MODEL_B gets the same real values in its own\n"
    "(quantized with its input scale and zero point, or dequantized).\n\n"
    "samples: --inputs takes a data set of any size (see --inputs); it is read chunk by chunk\n"
    "(uncompressed .npz memory-mapped), each chunk evaluated as one batch, the batches sharded\n"
    "over every local device (a jax.sharding mesh over the sample axis) and, with --distributed,\n"
    "over hosts. Each chunk is computed the same way whichever device or host takes it.\n\n"
    "output: one summary line and one line per output (with several samples: the 99th percentile\n"
    "of the per-sample error, the worst sample's index, a classifier's top-1 agreement); --json\n"
    "prints the report object (keys: ok, mode, tolerance, max_lsb, min_sqnr, samples, devices,\n"
    "processes, max_abs_error, max_rel_error, outputs, compared_tensors, first_divergent,\n"
    "worst_tensors, notes; a tensor entry has name, kind, max_abs_error, scale, rel_error, sqnr_db,\n"
    "lsb_error, within_1_lsb, p99_error, worst_sample, top1_agreement; infinite values are the\n"
    "strings \"inf\" / \"-inf\").",
    _add_verify_arguments, _run_verify, EXIT_CODES_HELP))

register(Command(
    "quantize", "quantize a float model with ai-edge-quantizer, then check it in JAX and LiteRT",
    "Quantize IN with Google's ai-edge-quantizer (static post-training quantization; install it\n"
    "with pip install 'jaxfuse[quantize]') and write OUT (.tflite -> TFL3, .circle -> CIR0). The\n"
    "scales and the quantized graph are ai-edge-quantizer's, calibrated on the samples of\n"
    "--calibration (or on seeded random samples, which the output says: real data gives the\n"
    "ranges a deployed model needs). A model without a signature def gets one for the quantizer.\n\n"
    "Afterwards the quantized model is checked against the float one on the first calibration\n"
    f"samples (up to {CHECK_SAMPLES}): the SQNR of every output through jaxfuse's own quantized\n"
    "lowering (integer arithmetic as LiteRT's kernels do it), the same through LiteRT, how far\n"
    "the two lowerings are apart in LSB, and the tensors with the lowest SQNR. An output below\n"
    "--min-sqnr means nothing is written and the exit status is 1.\n\n"
    "output: what was written, the calibration source, op counts and constant bytes before and\n"
    "after, the check, timings; --report FILE.json has the same as JSON.",
    _add_quantize_arguments, _run_quantize, EXIT_CODES_HELP))
register(Command(
    "bench", "time one model, or two against each other, through XLA",
    "Compile MODEL (and MODEL_B) with jax.jit on the chosen device and time them interleaved,\n"
    "A B A B ..., on seeded random inputs. Each round places a fresh instance of each model\n"
    "(weights and inputs put on the device anew: where they land changes the speed), warms\n"
    "it up and keeps its fastest single inference of those that fill --min-seconds. Prints\n"
    "each model's median time and, with two models, the median per-round ratio B/A with its\n"
    "95% bootstrap interval and interquartile range (the machine's noise: a ratio whose\n"
    "interval holds 1.0 is no difference). bench/ has the full benchmark (onert, LiteRT, the\n"
    "ceilings).",
    _add_bench_arguments, _run_bench, EXIT_CODES_HELP))


# -- entry point -------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxfuse",
        description="Fuse batch norms in TFLite / circle models exactly, prove it in JAX/XLA; inspect, convert, run.",
        epilog=EXIT_CODES_HELP + "\n\nRun 'jaxfuse COMMAND --help' for a command's arguments and output.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"jaxfuse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.summary, description=cmd.description, epilog=cmd.epilog or None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_arguments(p)
        p.set_defaults(_command=cmd)
    return parser


def _one_line(message: str) -> str:
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    if len(text) <= _MAX_MESSAGE:
        return text
    # the start names the file and the op, the end says what is wrong: keep both, cut the
    # middle (converter tensor names run to hundreds of characters)
    head = _MAX_MESSAGE // 3
    return text[:head] + " ... " + text[len(text) - (_MAX_MESSAGE - head - 5):]


def _debug() -> bool:
    return os.environ.get("JAXFUSE_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it).
    Without `argv` (the console script, python -m jaxfuse) the arguments come from sys.argv
    and the process keeps its compiled programs in JAX's persistent compilation cache
    (jaxfuse.programs.default_cache_dir: $JAXFUSE_CACHE_DIR, else ~/.cache/jaxfuse/xla)."""
    parser = build_parser()
    map_large_allocations()  # before jax allocates anything: freed buffers go back to the OS
    from . import progress
    progress.enable(sys.stderr.isatty())  # bars for runs longer than ~2 s, only on a terminal
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors (argparse already printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_BAD_INPUT)
    # a command-line process (not a call from Python) keeps its compiled programs for the next run
    args._persistent_cache = argv is None
    try:
        return args._command.run(args)
    except (CLIError, ModelError, GraphError) as e:
        message = str(e)
    except BrokenPipeError:  # `jaxfuse inspect m | head`: the reader left, which is not an error
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_OK
    except OSError as e:
        message = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
    except MemoryError:
        message = "out of memory"
    except KeyboardInterrupt:
        print("jaxfuse: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if _debug():
            raise
        print(f"jaxfuse: internal error: {_one_line(f'{type(e).__name__}: {e}')} "
              f"(set JAXFUSE_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    print(f"jaxfuse: error: {_one_line(message)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def console_main() -> None:
    """The `jaxfuse` console script and `python -m jaxfuse`: `main`, then `leave`."""
    leave(main())


def leave(status: int | None) -> None:
    """End the process with `status` without tearing the interpreter down. That teardown
    (XLA's client and compiled programs, JAX's modules) took 0.15-0.3 s after an optimize
    of ResNet50V2 (the command itself: 4-6 s) and saves nothing: every output file is
    already written, closed and renamed into place. Compilations still running are waited
    for (one may be writing JAX's persistent cache), then stdout and stderr are flushed. A
    distributed run exits normally: JAX's exit handler leaves the coordination service."""
    if "jax" in sys.modules:
        from . import distributed, programs
        if distributed.initialized():
            sys.exit(status)
        try:
            programs.PROGRAMS.shutdown()
        except KeyboardInterrupt:  # interrupted while waiting: leave at once
            status = 130
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach the reader
            pass
    os._exit(0 if status is None else status)  # as sys.exit(None) would
