"""`jaxfuse bench MODEL [MODEL_B] [...]`: jaxfuse.benchmark.bench, printed."""
from __future__ import annotations

import argparse

from .common import EXIT_CODES_HELP, EXIT_OK, CLIError, Command, load_valid, print_report, register


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    if args.rounds < 1 or args.warmup < 0 or not args.min_seconds >= 0:
        raise CLIError("--rounds must be at least 1, --warmup and --min-seconds at least 0")
    paths = [args.model_a] + ([args.model_b] if args.model_b else [])
    labels = [f"{'AB'[i]}:{path}" for i, path in enumerate(paths)]  # A/A (the same file twice) shows the noise
    models = [load_valid(path) for path in paths]
    if len(models) == 2 and [tuple(t.shape) for t in models[0].main.inputs] != \
            [tuple(t.shape) for t in models[1].main.inputs]:
        raise CLIError(f"{args.model_a} and {args.model_b} have different inputs")

    from ..benchmark import bench
    from ..lowering import LoweringError
    try:
        report = bench(models, args.rounds, args.warmup, args.min_seconds, args.device, labels)
    except LoweringError as e:
        raise CLIError(f"cannot run: {e}") from None
    except ValueError as e:  # no such device
        raise CLIError(str(e)) from None
    print_report(report, args.json)
    return EXIT_OK


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
    add_arguments, run, EXIT_CODES_HELP))
