"""Regenerate the bad-model corpus in this directory (deterministic; no network, no TF).

    python tests/bad_inputs/make_corpus.py [OUT_DIR]

Every file is derived from one tiny good model built here with the circle-schema object
API (so the corpus depends on nothing but circle-schema and flatbuffers):

    x [1,4,4,2] --CONV_2D(3x3, SAME, RELU, filter w [3,3,3,2], bias b [3])--> conv [1,4,4,3]
    conv, y [1,4,4,3] --ADD--> sum;  sum, c [3] --ADD--> out [1,4,4,3]

The bias `b` and the ADD constant `c` share one buffer (as the TFLite converter's
deduplication does), so the model has 2 distinct constant buffers holding 216 + 12 bytes.
It carries a signature def and one metadata entry, so `inspect` has something to show.

Corrupt index files are made by editing the good model through the object API and
re-packing it, never by editing bytes. `CASES` lists each bad file with what is wrong and
a fragment the error message must contain; tests/test_cli.py runs every subcommand on it.
"""
from __future__ import annotations

import hashlib
import os
import sys

import flatbuffers
import numpy as np
from circle_schema.v0_10 import circle

HERE = os.path.dirname(os.path.abspath(__file__))

GOOD = "good.tflite"
# name -> (what is wrong, fragment the one-line error must contain (lower-case match),
#          subcommands that must reject it).  "missing.tflite" and "a_directory.tflite"
#          are test cases only: the test makes (or does not make) them itself.
LOAD_COMMANDS = ("inspect", "convert", "run")
CASES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "missing.tflite": ("the file does not exist", "no such file", LOAD_COMMANDS),
    "a_directory.tflite": ("a directory given as the model", "directory", LOAD_COMMANDS),
    "empty.tflite": ("zero bytes", "empty", LOAD_COMMANDS),
    "truncated_half.tflite": ("the first half of the good model", "truncated", LOAD_COMMANDS),
    "truncated_end.tflite": ("the good model cut just before its end", "truncated", LOAD_COMMANDS),
    "random_bytes.tflite": ("seeded pseudo-random bytes", "not a tflite or circle model", LOAD_COMMANDS),
    "good_model.onnx": ("a valid model with an .onnx extension", "extension", LOAD_COMMANDS),
    "good_model.txt": ("a valid model with a .txt extension", "extension", LOAD_COMMANDS),
    "text.tflite": ("a text file renamed .tflite", "not a tflite or circle model", LOAD_COMMANDS),
    "bad_tensor_index.tflite": ("op 0's first input is tensor index len(tensors)", "tensor", LOAD_COMMANDS),
    "bad_buffer_index.tflite": ("tensor 'w' points at buffer index len(buffers)", "buffer", LOAD_COMMANDS),
    "bad_opcode_index.tflite": ("op 1 has opcode index len(operator_codes)", "operator code", LOAD_COMMANDS),
    "wrong_identifier.circle": ("the good model finished with identifier CIR1", "identifier", LOAD_COMMANDS),
    "unsupported_op.tflite": ("the last ADD replaced by CUSTOM(JaxfuseNoSuchOp); loads fine, cannot run",
                              "jaxfusenosuchop", ("run",)),
}
NOT_FILES = ("missing.tflite", "a_directory.tflite")

_FLOAT32 = circle.TensorType.TensorType.FLOAT32
_OPS = circle.BuiltinOperator.BuiltinOperator


def _values(n: int, salt: int) -> np.ndarray:
    """Small deterministic float32 values in [-1, 1] (pure integer arithmetic)."""
    i = np.arange(n, dtype=np.int64)
    return (((i * 7919 + salt * 104729) % 17) - 8).astype(np.float32) / 8


def _tensor(name, shape, buffer=0):
    t = circle.Tensor.TensorT()
    t.name, t.shape, t.type, t.buffer = name, list(shape), _FLOAT32, buffer
    return t


def _buffer(data: bytes | None):
    b = circle.Buffer.BufferT()
    b.data = None if data is None else list(data)
    return b


def _opcode(code: int, custom: str | None = None):
    oc = circle.OperatorCode.OperatorCodeT()
    oc.builtinCode = code
    oc.deprecatedBuiltinCode = min(code, 127)
    oc.customCode = custom
    oc.version = 1
    return oc


def _op(opcode_index, inputs, outputs, options_type=0, options=None):
    op = circle.Operator.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode_index, list(inputs), list(outputs)
    op.builtinOptionsType, op.builtinOptions = options_type, options
    return op


def good_model_t():
    """The good model as a circle.Model.ModelT (see the module docstring)."""
    filt = _values(3 * 3 * 3 * 2, 1).reshape(3, 3, 3, 2)
    bias = _values(3, 2)
    buffers = [_buffer(None), _buffer(filt.tobytes()), _buffer(bias.tobytes()),
               _buffer(b"1.14.0".ljust(16, b"\0"))]
    #             0: x                 1: y                 2: w                   3: b
    tensors = [_tensor("x", [1, 4, 4, 2]), _tensor("y", [1, 4, 4, 3]), _tensor("w", [3, 3, 3, 2], 1),
               _tensor("b", [3], 2), _tensor("conv", [1, 4, 4, 3]), _tensor("sum", [1, 4, 4, 3]),
               _tensor("c", [3], 2), _tensor("out", [1, 4, 4, 3])]
    #          4: conv             5: sum                6: c (shares b's buffer)  7: out
    conv = circle.Conv2DOptions.Conv2DOptionsT()
    conv.padding = circle.Padding.Padding.SAME
    conv.strideW = conv.strideH = 1
    conv.fusedActivationFunction = circle.ActivationFunctionType.ActivationFunctionType.RELU
    add = circle.AddOptions.AddOptionsT()
    opt = circle.BuiltinOptions.BuiltinOptions
    sg = circle.SubGraph.SubGraphT()
    sg.name = "main"
    sg.tensors = tensors
    sg.inputs, sg.outputs = [0, 1], [7]
    sg.operators = [_op(0, [0, 2, 3], [4], opt.Conv2DOptions, conv),
                    _op(1, [4, 1], [5], opt.AddOptions, add),
                    _op(1, [5, 6], [7], opt.AddOptions, circle.AddOptions.AddOptionsT())]

    def tmap(name, index):
        m = circle.TensorMap.TensorMapT()
        m.name, m.tensorIndex = name, index
        return m

    sig = circle.SignatureDef.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = "serving_default", 0
    sig.inputs, sig.outputs = [tmap("x", 0), tmap("y", 1)], [tmap("output_0", 7)]
    meta = circle.Metadata.MetadataT()
    meta.name, meta.buffer = "min_runtime_version", 3

    model = circle.Model.ModelT()
    model.version = 3
    model.description = "jaxfuse test corpus: CONV_2D + 2 ADD"
    model.operatorCodes = [_opcode(_OPS.CONV_2D), _opcode(_OPS.ADD)]
    model.subgraphs = [sg]
    model.buffers = buffers
    model.metadata = [meta]
    model.signatureDefs = [sig]
    return model


def pack(model_t, identifier: bytes = b"TFL3") -> bytes:
    builder = flatbuffers.Builder(4096)
    builder.Finish(model_t.Pack(builder), file_identifier=identifier)
    return bytes(builder.Output())


def _edited(good: bytes, edit) -> bytes:
    """Unpack the good model with the object API, apply `edit`, re-pack as TFL3."""
    model = circle.Model.ModelT.InitFromPackedBuf(good, 0)
    edit(model)
    return pack(model, b"TFL3")


def _bad_tensor_index(m):
    op = m.subgraphs[0].operators[0]
    op.inputs = [len(m.subgraphs[0].tensors)] + [int(i) for i in op.inputs[1:]]  # unpacked arrays are read-only


def _bad_buffer_index(m):
    m.subgraphs[0].tensors[2].buffer = len(m.buffers)


def _bad_opcode_index(m):
    m.subgraphs[0].operators[1].opcodeIndex = len(m.operatorCodes)


def _unsupported_op(m):
    m.operatorCodes.append(_opcode(_OPS.CUSTOM, "JaxfuseNoSuchOp"))
    last = m.subgraphs[0].operators[2]
    last.opcodeIndex = len(m.operatorCodes) - 1
    last.builtinOptionsType, last.builtinOptions = 0, None


def _random_bytes(n: int, seed: int) -> bytes:
    """Seeded bytes from SHA-256 in counter mode (identical on every platform and version)."""
    out = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(-(-n // 32)))
    return out[:n]


def corpus() -> dict[str, bytes]:
    """File name -> content for the good model and every bad file in CASES."""
    good = pack(good_model_t())
    files = {
        GOOD: good,
        "empty.tflite": b"",
        "truncated_half.tflite": good[: len(good) // 2],
        "truncated_end.tflite": good[:-1],
        "random_bytes.tflite": _random_bytes(512, seed=0),
        "good_model.onnx": good,
        "good_model.txt": good,
        "text.tflite": b"This is not a model.\nIt is a text file that was renamed to .tflite.\n",
        "bad_tensor_index.tflite": _edited(good, _bad_tensor_index),
        "bad_buffer_index.tflite": _edited(good, _bad_buffer_index),
        "bad_opcode_index.tflite": _edited(good, _bad_opcode_index),
        "wrong_identifier.circle": pack(good_model_t(), b"CIR1"),
        "unsupported_op.tflite": _edited(good, _unsupported_op),
    }
    assert set(files) - {GOOD} == set(CASES) - set(NOT_FILES)
    return files


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out_dir = argv[0] if argv else HERE
    os.makedirs(out_dir, exist_ok=True)
    for name, content in corpus().items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(content)
    print(f"wrote {len(corpus())} files to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
