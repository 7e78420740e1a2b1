"""`jaxfuse optimize INPUT -o OUTPUT [...]`: jaxfuse.optimizing.optimize, written and printed."""
from __future__ import annotations

import argparse
import json
import sys
import time

from ..numerics import json_safe
from ..programs import wait_for_jax
from ..quantization import SCHEMES
from ..samples import DEFAULT_CALIBRATION_SAMPLES, calibration_samples, unique_names
from .common import (EXIT_CODES_HELP, EXIT_FAILED, EXIT_OK, MODEL_EXTENSIONS, CLIError, Command,
                     add_scale_out_arguments, check_output_path, check_samples_option, json_default, load_valid,
                     open_inputs, register, sample_errors, save_model, start, start_jax, write_text)
from .main import one_line

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

PASSES_HELP = "passes:\n  " + "\n  ".join(
    ["fuse_preactivation_batchnorm   (default pipeline: all of these)",
     "canonicalize_scale_shift       (first: elementwise constant chains -> MUL -> ADD)",
     "fuse_batchnorm_with_conv, fuse_batchnorm_with_dwconv, fuse_batchnorm_with_tconv",
     "fuse_mul_with_conv, fuse_add_with_conv, fuse_add_with_tconv",
     "fuse_mul_with_fullyconnected, fuse_add_with_fullyconnected, fuse_activation_function"])


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    add_scale_out_arguments(p)
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


def _calibration(args: argparse.Namespace, model) -> list:
    """--for int8's checks, before any work, and its calibration samples (said on stdout)."""
    from ..quantization import QuantizerUnavailable, quantizer_version
    from ..quantized_target import DEFAULT_MAX_LOSS

    try:
        quantizer_version()
    except QuantizerUnavailable as e:
        raise CLIError(f"--for {args.target}: {e}") from None
    check_samples_option(args.samples)
    max_loss = DEFAULT_MAX_LOSS if args.max_sqnr_loss is None else args.max_sqnr_loss
    if not max_loss >= 0:
        raise CLIError(f"--max-sqnr-loss must be at least 0, got {args.max_sqnr_loss}")
    sample_errors(unique_names, model.main.inputs, "input", args.input)
    calibration, source = sample_errors(calibration_samples, args.calibration, model.main.inputs, args.samples,
                                        args.seed, args.input)
    print(f"--for {args.target}: calibration {source}")
    return calibration


def run(args: argparse.Namespace) -> int:
    check_output_path(args.output, MODEL_EXTENSIONS, "model")
    if args.report is not None:
        check_output_path(args.report, (".json",), "report")
    start_jax(args)
    t0 = time.perf_counter()
    model = load_valid(args.input)
    read_time = time.perf_counter() - t0
    t = time.perf_counter()
    wait_for_jax()
    from ..equivalence import DEFAULT_TOLERANCE, VerificationError  # JAX: what is left of its start
    from ..passes import DEFAULT_PIPELINE, PASSES
    import_time = time.perf_counter() - t
    for name in args.passes or []:
        if name not in PASSES:
            raise CLIError(f"unknown pass '{name}' (known: {', '.join(sorted(PASSES))})")
    samples = None if args.inputs is None else open_inputs(args.inputs, model.main.inputs, args.input)
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    if not tolerance > 0:
        raise CLIError(f"--tolerance must be positive, got {args.tolerance}")
    leader = start(args)

    from ..lowering import LoweringError
    from ..optimizing import optimize
    from ..quantization import QuantizationError
    failed = None
    options = dict(verify=not args.no_verify, inputs=samples, tolerance=tolerance,
                   lossy_float16=args.lossy_float16_weights)
    try:
        if args.target == "float":
            optimized, report = optimize(model, args.passes or DEFAULT_PIPELINE, **options)
        else:
            optimized, report = optimize(model, args.passes, args.target, _calibration(args, model),
                                         max_sqnr_loss=args.max_sqnr_loss, **options)
    except LoweringError as e:
        raise CLIError(f"{args.input}: cannot optimize: {e}") from None
    except QuantizationError as e:
        raise CLIError(f"{args.input}: cannot quantize a candidate: {e}") from None
    except VerificationError as e:
        failed, report, optimized = e, e.report, None
    report.timings = {"read": read_time, "import": import_time, **report.timings}
    if not leader:  # every process optimized the same model; the first writes and reports
        return EXIT_OK if failed is None else EXIT_FAILED
    if optimized is not None:
        t = time.perf_counter()
        save_model(optimized, args.output, args.input)
        report.timings["write"] = time.perf_counter() - t
    print(f"{args.input} -> {args.output if failed is None else '(nothing written)'}")
    print(report.format_text())
    report.timings["total"] = time.perf_counter() - t0
    print("  time: " + ", ".join(f"{k} {v:.2f}s" for k, v in report.timings.items()))
    if args.report is not None:
        write_text(args.report, json.dumps(json_safe(report.to_dict()), indent=2, default=json_default))
    if failed is not None:
        print(f"jaxfuse: verification failed: {one_line(str(failed))}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


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
    add_arguments, run, PASSES_HELP + "\n\n" + FOR_INT8_HELP + "\n\n" + EXIT_CODES_HELP))
