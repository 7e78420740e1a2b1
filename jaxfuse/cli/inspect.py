"""`jaxfuse inspect MODEL [--json]`: jaxfuse.summary.inspect, printed."""
from __future__ import annotations

import argparse

from .. import summary
from .common import EXIT_CODES_HELP, EXIT_OK, Command, load, print_report, register

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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a .tflite or .circle file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text (keys below)")


def run(args: argparse.Namespace) -> int:
    report = summary.inspect(load(args.model), args.model)
    print_report(report, args.json)
    return EXIT_OK


register(Command(
    "inspect", "summarize a model: ops, inputs/outputs, tensors, parameter bytes",
    "Print a summary of MODEL: file format (from the identifier), schema version, subgraph,\n"
    "tensor and op counts, constant parameter bytes (each distinct buffer counted once), the\n"
    "main subgraph's inputs and outputs (name, shape, dtype), an op histogram, signature defs\n"
    "and metadata entries. The model is read, not validated, so broken graphs can be inspected.",
    add_arguments, run, INSPECT_JSON_HELP + "\n\n" + EXIT_CODES_HELP))
