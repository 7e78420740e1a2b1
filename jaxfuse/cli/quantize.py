"""`jaxfuse quantize IN -o OUT [...]`: jaxfuse.quantizing (ai-edge-quantizer, then the SQNR
check), written and printed."""
from __future__ import annotations

import argparse
import json
import sys
import time

from ..quantization import SCHEMES
from ..quantizing import CHECK_SAMPLES, already_quantized, quantize_checked
from ..samples import DEFAULT_CALIBRATION_SAMPLES, calibration_samples, unique_names
from .common import (EXIT_CODES_HELP, EXIT_FAILED, EXIT_OK, MODEL_EXTENSIONS, CLIError, Command, check_output_path,
                     check_samples_option, json_default, load_valid, register, sample_errors, save_model,
                     write_atomically, write_text)


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    from ..lowering import LoweringError
    from ..quantization import QuantizationError, QuantizerUnavailable, quantizer_version

    check_output_path(args.output, MODEL_EXTENSIONS, "model")
    if args.report is not None:
        check_output_path(args.report, (".json",), "report")
    check_samples_option(args.samples)
    try:
        quantizer_version()
    except QuantizerUnavailable as e:
        raise CLIError(str(e)) from None
    t0 = time.perf_counter()
    model = load_valid(args.input)
    quantized_tensor = already_quantized(model)
    if quantized_tensor is not None:
        raise CLIError(f"{args.input}: is already quantized (tensor '{quantized_tensor}')")
    sample_errors(unique_names, model.main.inputs, "input", args.input)
    calibration, source = sample_errors(calibration_samples, args.calibration, model.main.inputs, args.samples,
                                        args.seed, args.input)
    read_time = time.perf_counter() - t0
    try:
        result, report = quantize_checked(model, calibration, source, args.scheme, args.min_sqnr, args.input)
    except QuantizationError as e:
        raise CLIError(f"{args.input}: cannot quantize: {e}") from None
    except LoweringError as e:
        raise CLIError(f"cannot check the quantized model: {e}") from None
    report.timings = {"read": read_time, **report.timings}
    if report.ok:
        t = time.perf_counter()
        if args.output.lower().endswith(".circle"):
            save_model(result.model, args.output, args.input)
        else:
            write_atomically(args.output, lambda f: f.write(result.tflite_bytes))
        report.timings["write"] = time.perf_counter() - t
        report.output = args.output
    report.timings["total"] = time.perf_counter() - t0
    print(report.format_text())
    if args.report is not None:
        write_text(args.report, json.dumps(report.to_dict(), indent=2, default=json_default))
    if not report.ok:
        print(f"jaxfuse: quantized model rejected: an output's SQNR is below {report.check['min_sqnr']:g} dB "
              "(--min-sqnr sets the limit)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


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
    add_arguments, run, EXIT_CODES_HELP))
