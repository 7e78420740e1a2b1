"""The `jaxfuse` command line (also `python -m jaxfuse`): one module per command, each of
which parses its arguments, calls the library function that does the work (jaxfuse.inspect,
run, optimize, verify, quantize, bench) and prints its report; common.py holds what they
share (errors and exit codes, the Command registry, reading models and inputs, atomic
writes), main.py the entry point. Commands appear in `jaxfuse --help` in the order imported
below; to add one, write its module (see common.Command) and import it here."""
from .common import (COMMANDS, EXIT_BAD_INPUT, EXIT_CODES_HELP, EXIT_FAILED, EXIT_INTERNAL, EXIT_OK, CLIError,
                     Command, register, write_npz)
from . import inspect, convert, run, optimize, verify, quantize, bench  # noqa: E402,F401  (registers, in order)
from .inspect import INSPECT_JSON_HELP
from .main import build_parser, console_main, leave, main
from ..samples import random_sample as random_inputs  # the seeded inputs of `run` without --inputs
from ..summary import model_summary, quantization_summary

__all__ = ["COMMANDS", "CLIError", "Command", "EXIT_BAD_INPUT", "EXIT_CODES_HELP", "EXIT_FAILED", "EXIT_INTERNAL",
           "EXIT_OK", "INSPECT_JSON_HELP", "build_parser", "console_main", "leave", "main", "model_summary",
           "quantization_summary", "random_inputs", "register", "write_npz"]
