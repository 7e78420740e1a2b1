"""`jaxfuse run MODEL [--inputs DATA | --seed N] [--raw] [-o OUT.npz]`: jaxfuse.running, printed.

The command reads its inputs (`_inputs`), computes the outputs (`_outputs`), then prints and
saves them (`_report`); an option that changes where outputs come from (another engine, a
step axis fed in order) belongs in `_outputs`, one that changes the inputs in `_inputs`."""
from __future__ import annotations

import argparse

from ..ir import GraphError, Model
from ..numerics import RANDOM_INT_RANGE
from ..programs import wait_for_jax
from ..running import Inputs, RunResult, model_inputs, run_inputs
from ..samples import unique_names
from .common import (EXIT_CODES_HELP, EXIT_FAILED, EXIT_OK, CLIError, Command, add_against_argument,
                     add_scale_out_arguments, check_output_path, crosscheck_or_fail, load_valid, register,
                     sample_errors, start, start_jax, write_npz)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a .tflite or .circle file")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--inputs", metavar="FILE.npz",
                        help="input arrays keyed by input tensor name, of the model's dtype (no casting; a "
                             "quantized model's integer inputs also take float arrays, see --raw): exactly "
                             "the input's shape for one sample, or with a leading sample axis ([N, *shape], or "
                             "[N, ...] in place of a batch dimension of 1); or a directory of such files. Every "
                             "graph input must be present, and nothing else")
    source.add_argument("--seed", type=int, metavar="N",
                        help="seed of the random inputs used without --inputs (default: 0)")
    p.add_argument("--raw", action="store_true",
                   help="a quantized model's integer inputs take only integer arrays, the values as stored (by "
                        "default float arrays are real values, quantized with the input's scale and zero point)")
    p.add_argument("-o", "--output", metavar="OUT.npz",
                   help="save the outputs here, keyed by output tensor name (written atomically); for N samples "
                        "each with a leading sample axis, laid out as the inputs were")
    add_against_argument(p, "run the same inputs in LiteRT's builtin kernels too and compare: every output of "
                            "every sample, and every tensor of the first sample; exit 1 where they disagree "
                            "(the outputs are still saved)")
    add_scale_out_arguments(p)


def _inputs(args: argparse.Namespace, model: Model) -> Inputs:
    seed = 0 if args.seed is None else args.seed
    return sample_errors(model_inputs, model, args.inputs, args.raw, seed, args.model)


def _outputs(args: argparse.Namespace, model: Model, inputs: Inputs) -> list:
    from ..lowering import LoweringError
    from ..shapes import is_dynamic
    try:
        return run_inputs(model, inputs)
    except (LoweringError, GraphError) as e:
        dynamic = [t.name for t in model.main.inputs if is_dynamic(t)]
        hint = (f" (random inputs take the stored instance of the dynamic input(s) {', '.join(dynamic)}: "
                "give --inputs of a size the model runs at)") if dynamic and args.inputs is None else ""
        raise CLIError(f"{args.model}: cannot run: {e}{hint}") from None


def _report(args: argparse.Namespace, result: RunResult) -> None:
    print(result.format_text())
    if args.output is not None:
        write_npz(args.output, dict(zip(result.names, result.outputs)))
        print(f"wrote {args.output} ({len(result.outputs)} array{'s' if len(result.outputs) != 1 else ''})")


def run(args: argparse.Namespace) -> int:
    if args.output is not None:
        check_output_path(args.output, (".npz",), "output")
    start_jax(args)
    model = load_valid(args.model)
    sample_errors(unique_names, model.main.inputs, "input", args.model)
    out_names = sample_errors(unique_names, model.main.outputs, "output", args.model)
    inputs = _inputs(args, model)
    wait_for_jax()
    leader = start(args, quiet_followers=False)
    outputs = _outputs(args, model, inputs)
    if not leader:
        return EXIT_OK
    if len(outputs) != len(out_names):
        raise RuntimeError(f"lowered function returned {len(outputs)} outputs, the graph has {len(out_names)}")
    samples = None if inputs.dataset is None else len(inputs.dataset)
    _report(args, RunResult(out_names, outputs, inputs.description, samples, inputs.quantized))
    if args.against is None:
        return EXIT_OK
    sample_list = [inputs.sample] if inputs.dataset is None else inputs.dataset
    per_sample = None if inputs.dataset is None else outputs
    report = crosscheck_or_fail(args.model, model, sample_list, per_sample)
    print(report.format_text())
    return EXIT_OK if report.agrees else EXIT_FAILED


register(Command(
    "run", "run a model through JAX/XLA on given or random inputs",
    "Lower MODEL's main subgraph (subgraph 0) to JAX and run it once under jax.jit (XLA, on\n"
    "JAX's default device).\n\n"
    "inputs: with --inputs FILE.npz, one array per graph input keyed by the input tensor's name\n"
    "(np.savez(FILE, **{name: array})); a missing or extra key, or a shape or dtype that differs\n"
    "from the model's, is an error (no casting: convert with .astype first), except that a\n"
    "quantized model's integer input takes float arrays as real values: they are quantized with\n"
    "the input's scale and zero point, and the 'inputs:' line says so (--raw refuses them and\n"
    "takes the integers as stored). Arrays with a leading sample axis (or a directory of such\n"
    "files) run every sample, batched and sharded over the local devices (--distributed: over\n"
    "hosts too); outputs then carry the sample axis. Without --inputs,\n"
    "inputs are random, drawn in graph-input order from numpy.random.default_rng(--seed):\n"
    f"floats standard normal, integers uniform in [{RANDOM_INT_RANGE[0]}, {RANDOM_INT_RANGE[1]}], "
    "bools fair coin flips\n(integer inputs that are indices or sizes usually need real values: give --inputs).\n\n"
    "output: the line 'inputs: ...', then one line per graph output: name, shape, dtype, min, max\n"
    "and mean. With -o OUT.npz the outputs are also saved keyed by output tensor name. Outputs\n"
    "keep the model's types: a quantized model's are its integers, with or without --raw\n"
    "(dequantize with the scale and zero point 'jaxfuse inspect' shows).\n\n"
    "--against litert: an independent check of jaxfuse's numbers (XLA shares no code with LiteRT):\n"
    "the same inputs through LiteRT's builtin kernels; each output within 1e-4 of its scale (or\n"
    "LiteRT's own XNNPACK-vs-builtin spread; 1 LSB for quantized outputs) agrees, and the first\n"
    "other tensor where the two part is named. Exit status 1 when an output disagrees.",
    add_arguments, run, EXIT_CODES_HELP))
