"""`jaxfuse convert IN OUT`: read a model, write it in the format OUT's extension names."""
from __future__ import annotations

import argparse
import os

from .common import EXIT_CODES_HELP, EXIT_OK, MODEL_EXTENSIONS, Command, check_output_path, load, register, save_model


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="the model to read (.tflite or .circle)")
    p.add_argument("output", metavar="OUT", help="the file to write; its extension picks the format: "
                                                  ".tflite (identifier TFL3) or .circle (CIR0)")


def run(args: argparse.Namespace) -> int:
    check_output_path(args.output, MODEL_EXTENSIONS, "model")
    model = load(args.input)
    save_model(model, args.output, args.input)
    out_format = "circle" if args.output.lower().endswith(".circle") else "tflite"
    print(f"wrote {args.output} ({out_format}, {os.path.getsize(args.output)} bytes) "
          f"from {args.input} ({model.file_format})")
    return EXIT_OK


register(Command(
    "convert", "convert between .tflite and .circle",
    "Read IN (.tflite or .circle) and write it to OUT in the format OUT's extension names\n"
    "(.tflite -> identifier TFL3, .circle -> CIR0). Same-format copies are allowed (the model is\n"
    "re-serialized). Nothing is lost: ops, options, quantization, signature defs and metadata\n"
    "are kept. Prints one line: what was written, its format and size.",
    add_arguments, run, EXIT_CODES_HELP))
