"""What every `jaxfuse` command shares: the error contract and exit codes, the Command
registry, reading models and inputs, writing outputs atomically, starting JAX.

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
import zipfile
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..io import read as _read_model, write as _write_model
from ..io.write import atomic_write
from ..ir import GraphError, Model, Tensor
from ..samples import SampleError, SampleSet, open_samples, unique_names

EXIT_OK = 0
EXIT_FAILED = 1        # a verification found a difference (verify / optimize)
EXIT_BAD_INPUT = 2     # bad input or usage
EXIT_INTERNAL = 3      # a bug in jaxfuse
MODEL_EXTENSIONS = (".tflite", ".circle")

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
    """One subcommand. To add one: a module in jaxfuse/cli/ with `add_arguments(parser)` and
    `run(args) -> int` (an exit code) that registers `Command(name, summary, description,
    add_arguments, run, epilog)`, imported in jaxfuse/cli/__init__.py in --help order."""
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


# -- models ------------------------------------------------------------------------------
def load(path: str) -> Model:
    """Read a model; ModelError messages already name the file."""
    if os.path.exists(path) and not os.path.isdir(path) and not os.access(path, os.R_OK):
        raise CLIError(f"{path}: permission denied")
    try:
        return _read_model(path)
    except OSError as e:
        raise CLIError(f"{path}: cannot read ({e.strerror or e})") from None


def validated(model: Model, path: str) -> Model:
    try:
        return model.validate()
    except GraphError as e:
        raise CLIError(f"{path}: invalid model: {e}") from None


def load_valid(path: str) -> Model:
    return validated(load(path), path)


# -- outputs -----------------------------------------------------------------------------
def check_output_path(path: str, extensions: tuple[str, ...], what: str) -> None:
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


def write_error(path: str, e: OSError) -> CLIError:
    return CLIError(f"{path}: cannot write ({e.strerror or e})")


def write_atomically(path: str, write: Callable) -> None:
    """Call write(file_object) on a temporary file beside `path`, then rename it to `path`."""
    try:
        atomic_write(path, write)
    except OSError as e:
        raise write_error(path, e) from None


def write_text(path: str, text: str) -> None:
    write_atomically(path, lambda f: f.write(text.encode()))


def save_model(model: Model, path: str, source: str) -> None:
    try:
        _write_model(model, path)
    except GraphError as e:
        raise CLIError(f"{source}: cannot be written: {e}") from None
    except OSError as e:
        raise write_error(path, e) from None


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """np.savez-compatible archive, written atomically (temp file + rename). Any key works,
    including names like 'file' that np.savez's keyword arguments would swallow."""
    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, array in arrays.items():
                with zf.open(key + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
    write_atomically(path, write)


def json_default(value):
    """json.dumps(default=...) for numpy scalars and arrays in reports."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def print_report(report, as_json: bool, *labels: str) -> None:
    """A report as --json prints it (to_dict(), indented) or as text (format_text(*labels))."""
    print(json.dumps(report.to_dict(), indent=2, default=json_default) if as_json else report.format_text(*labels))


# -- cross-check against LiteRT ------------------------------------------------------------
def add_against_argument(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--against", choices=["litert"], help=help_text)


def crosscheck_or_fail(path: str, model: Model, samples, outputs: list | None = None):
    """jaxfuse.crosscheck of `model` on the first of `samples`, and, given jaxfuse's `outputs`
    for all of them ([N, ...] each), LiteRT's outputs on every sample compared with those. A
    stateful model takes the samples as its steps, in order."""
    from ..crosscheck import CrosscheckError, crosscheck, compare_outputs
    from ..lowering import resource_variables
    try:
        if resource_variables(model):
            return crosscheck(model, steps=[list(samples[i]) for i in range(len(samples))])
        report = crosscheck(model, list(samples[0]))
        if outputs is not None:
            compare_outputs(report, model, samples, outputs)
        return report
    except CrosscheckError as e:
        raise CLIError(f"{path}: --against litert: {e}") from None


# -- inputs ------------------------------------------------------------------------------
def sample_errors(call: Callable, *args, **kwargs):
    """call(*args, **kwargs), a SampleError (a bad .npz, a bad name) made a CLIError."""
    try:
        return call(*args, **kwargs)
    except SampleError as e:
        raise CLIError(str(e)) from None


def open_inputs(path: str, tensors: list[Tensor], model_path: str) -> SampleSet:
    """The sample set of --inputs (an .npz keyed by input name, arrays with or without a
    leading sample axis, or a directory of such files), checked but not read."""
    sample_errors(unique_names, tensors, "input", model_path)
    return sample_errors(open_samples, path, tensors)


def check_samples_option(samples: int | None) -> None:
    if samples is not None and samples < 1:
        raise CLIError(f"--samples must be at least 1, got {samples}")


# -- JAX and scale-out -------------------------------------------------------------------
DISTRIBUTED_HELP = ("run as one of several processes with jax.distributed (coordinator, process count and id "
                    "from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or detected on a cluster "
                    "JAX knows); each process reads its share of the samples, one prints the report. Implied "
                    "when JAX_COORDINATOR_ADDRESS is set and JAX_NUM_PROCESSES > 1")


def add_scale_out_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--distributed", action="store_true", help=DISTRIBUTED_HELP)


def start_jax(args: argparse.Namespace) -> None:
    """Have JAX start while the command reads its models (programs.start_jax_in_background);
    its backend only where no jax.distributed run is to be joined first."""
    from .. import distributed
    from ..programs import start_jax_in_background
    start_jax_in_background(backend=not (getattr(args, "distributed", False)
                                         or distributed.requested_by_environment()))


def start(args: argparse.Namespace, quiet_followers: bool = True) -> bool:
    """Join a distributed run when asked to, and keep compiled programs between runs (JAX's
    persistent compilation cache). True on the process that reports and writes files; with
    `quiet_followers` the others keep their progress bars off."""
    from .. import distributed, progress
    from ..programs import enable_persistent_cache
    if getattr(args, "distributed", False) or distributed.requested_by_environment():
        try:
            distributed.initialize()
        except distributed.DistributedError as e:
            raise CLIError(str(e)) from None
    if getattr(args, "_persistent_cache", False):
        enable_persistent_cache()
    leader = distributed.process_index() == 0
    if not leader and quiet_followers:
        progress.enable(False)
    return leader
