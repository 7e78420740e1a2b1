"""The `jaxfuse` entry point: the parser built from the Command registry, `main` (the error
contract of cli/common.py: exit status and one line on stderr) and the console script's exit."""
from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..io import ModelError
from ..ir import GraphError
from ..memory import map_large_allocations
from .common import COMMANDS, EXIT_BAD_INPUT, EXIT_CODES_HELP, EXIT_INTERNAL, EXIT_OK, CLIError

_MAX_MESSAGE = 600     # characters; longer error messages are cut


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


def one_line(message: str) -> str:
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
    from .. import progress
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
        print(f"jaxfuse: internal error: {one_line(f'{type(e).__name__}: {e}')} "
              f"(set JAXFUSE_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    print(f"jaxfuse: error: {one_line(message)}", file=sys.stderr)
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
        from .. import distributed, programs
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
