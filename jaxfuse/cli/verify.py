"""`jaxfuse verify MODEL_A MODEL_B [...]`: equivalence.compare on the two models, printed.

The command reads the samples (`_samples`), compares (`_compare`) and prints the report;
an option that compares against something else (another engine on the same samples)
belongs in `_compare`."""
from __future__ import annotations

import argparse
import json

from ..programs import wait_for_jax
from .common import (EXIT_CODES_HELP, EXIT_FAILED, EXIT_OK, CLIError, Command, add_against_argument,
                     add_scale_out_arguments, check_samples_option, crosscheck_or_fail, json_default, load_valid,
                     open_inputs, print_report, register, start, start_jax)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_a", metavar="MODEL_A", help="the reference model (.tflite or .circle)")
    p.add_argument("model_b", metavar="MODEL_B", help="the model to check against it")
    p.add_argument("--inputs", metavar="FILE.npz",
                   help="samples keyed by MODEL_A's input names: arrays of exactly the input's shape (one sample) "
                        "or with a leading sample axis ([N, *shape], or [N, ...] in place of a batch dimension "
                        "of 1), or a directory of such files; default: --samples seeded random samples")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help="without --inputs: how many seeded random samples (default 2); with it: use only its "
                        "first N (default: all)")
    add_scale_out_arguments(p)
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
    add_against_argument(p, "also run both models in LiteRT's builtin kernels on the first sample and compare "
                            "jaxfuse's values with LiteRT's, output by output and tensor by tensor (the JSON "
                            "report gets 'against_litert'); exit 1 where they disagree")


def _samples(args: argparse.Namespace, a):
    """--inputs (its first --samples) as a sample set, or None for seeded random samples."""
    check_samples_option(args.samples)
    if args.inputs is None:
        return None
    samples = open_inputs(args.inputs, a.main.inputs, args.model_a)
    if args.samples is not None and args.samples < len(samples):
        samples = samples.head(args.samples)
    return samples


def _compare(args: argparse.Namespace, a, b, samples):
    from ..equivalence import DEFAULT_MAX_LSB, DEFAULT_TOLERANCE, compare
    from ..lowering import LoweringError
    from ..verifying import failing_model

    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    max_lsb = DEFAULT_MAX_LSB if args.max_lsb is None else args.max_lsb
    if not tolerance > 0 or not max_lsb >= 0:
        raise CLIError("--tolerance must be positive and --max-lsb at least 0")
    leader = start(args)
    try:
        report = compare(a, b, samples, tolerance=tolerance, seed=args.seed,
                         num_samples=2 if args.samples is None else args.samples,
                         max_lsb=max_lsb, min_sqnr=args.min_sqnr)
    except LoweringError as e:
        raise CLIError(f"{failing_model([args.model_a, args.model_b], [a, b]) or 'cannot run the models'}: {e}") \
            from None
    except ValueError as e:  # incompatible inputs/outputs
        raise CLIError(f"{args.model_a} vs {args.model_b}: {e}") from None
    return report, leader


def run(args: argparse.Namespace) -> int:
    start_jax(args)
    a = load_valid(args.model_a)
    b = load_valid(args.model_b)
    wait_for_jax()
    samples = _samples(args, a)
    report, leader = _compare(args, a, b, samples)
    against = _against(args, a, b, samples) if args.against is not None and leader else []
    if leader:  # every process holds the whole report; the first prints it
        if args.json and against:
            data = {**report.to_dict(), "against_litert": {label: c.to_dict() for label, c in against}}
            print(json.dumps(data, indent=2, default=json_default))
        elif args.json:
            print_report(report, True)
        else:
            print_report(report, False, args.model_a, args.model_b)
            for label, check in against:
                print(f"{label}: {check.format_text()}")
    return EXIT_OK if report.ok and all(c.agrees for _, c in against) else EXIT_FAILED


def _against(args: argparse.Namespace, a, b, samples) -> list:
    """(path, CrosscheckReport) of each model against LiteRT on the first sample (in its own types)."""
    from ..numerics import convert_sample
    from ..samples import random_sample
    first = random_sample(a.main.inputs, args.seed) if samples is None else samples[0]
    return [(args.model_a, crosscheck_or_fail(args.model_a, a, [first])),
            (args.model_b, crosscheck_or_fail(args.model_b, b, [convert_sample(first, a.main.inputs, b.main.inputs)]))]


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
    "worst_tensors, notes, unchecked; with --against litert also against_litert, per model: agrees,\n"
    "outputs, first_divergence, ...; a tensor entry has name, kind, max_abs_error, scale, rel_error, sqnr_db,\n"
    "lsb_error, within_1_lsb, p99_error, worst_sample, top1_agreement; infinite values are the\n"
    "strings \"inf\" / \"-inf\").",
    add_arguments, run, EXIT_CODES_HELP))
