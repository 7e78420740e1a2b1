"""Parse .tflite / .circle bytes into jaxfuse.ir objects.

Both formats share one flatbuffer layout (circle is a superset of TFLite), so the file
identifier (TFL3 or CIR0) only decides `Model.file_format`. Constant buffers may be
stored inside the flatbuffer or after it (Buffer.offset/size, used by recent TFLite
converters for large models); both are read. Each constant is copied once, to an aligned
array (jaxfuse.ir.Buffer), so the checks can hand it to XLA without copying it again.
"""
from __future__ import annotations

import os
import struct

import numpy as np
from circle_schema.v0_10 import circle

from ..ir import Buffer, Graph, Model, Op, OpCode, Quantization, SignatureDef, Tensor
from ..sparsity import INDEX_DTYPES, DimMetadata, Sparsity

IDENTIFIERS = {b"TFL3": "tflite", b"CIR0": "circle"}
_OPTION_TYPE_NAMES = {v: k for k, v in vars(circle.BuiltinOptions.BuiltinOptions).items()
                      if not k.startswith("_") and isinstance(v, int)}
_OPTION2_TYPE_NAMES = {v: k for k, v in vars(circle.BuiltinOptions2.BuiltinOptions2).items()
                       if not k.startswith("_") and isinstance(v, int)}


class ModelError(ValueError):
    """The file is not a readable model; the message is one line naming the problem."""


def read(path: str | os.PathLike) -> Model:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelError(f"{path}: is a directory, not a model file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".tflite", ".circle"):
        raise ModelError(f"{path}: unknown model extension '{ext}' (expected .tflite or .circle)")
    with open(path, "rb") as f:
        data = f.read()
    try:
        return read_bytes(data)
    except ModelError as e:
        raise ModelError(f"{path}: {e}") from None


def read_bytes(data: bytes) -> Model:
    data = bytes(data)
    if len(data) == 0:
        raise ModelError("empty file")
    if len(data) < 8:
        raise ModelError(f"{len(data)} bytes is too short for a model")
    ident = data[4:8]
    if ident not in IDENTIFIERS:
        raise ModelError(f"not a TFLite or circle model (file identifier {ident!r}, expected b'TFL3' or b'CIR0')")
    (root,) = struct.unpack_from("<I", data, 0)
    if root + 4 > len(data):
        raise ModelError("truncated or corrupt model (root table lies past the end of the file)")
    try:
        raw = circle.Model.ModelT.InitFromPackedBuf(data, 0)
    except Exception as e:  # the generated parser raises whatever struct/numpy raise on bad offsets
        detail = "an offset points past the end of the file" if isinstance(e, struct.error) else type(e).__name__
        raise ModelError(f"truncated or corrupt model (flatbuffer parse failed: {detail})") from None
    try:
        return _convert(raw, data, IDENTIFIERS[ident])
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"corrupt model ({type(e).__name__}: {e})") from None


def _as_list(x):
    return [] if x is None else [int(v) for v in x]


def _buffer_bytes(raw_buffer, index: int, data: bytes) -> np.ndarray | None:
    if raw_buffer.offset > 1:  # stored after the flatbuffer
        start, size = int(raw_buffer.offset), int(raw_buffer.size)
        if start + size > len(data):
            raise ModelError(f"buffer {index} lies past the end of the file (offset {start} + size {size} > "
                             f"{len(data)} bytes): truncated model?")
        return np.frombuffer(data, np.uint8, size, start)
    if raw_buffer.data is None or len(raw_buffer.data) == 0:
        return None
    return np.asarray(raw_buffer.data, dtype=np.uint8)


def _quantization(q) -> Quantization | None:
    if q is None:
        return None

    def arr(x, dtype):
        return None if x is None or len(x) == 0 else np.asarray(x, dtype=dtype)

    return Quantization(scale=arr(q.scale, np.float32), zero_point=arr(q.zeroPoint, np.int64),
                        min=arr(q.min, np.float32), max=arr(q.max, np.float32),
                        quantized_dimension=int(q.quantizedDimension), details=q.details,
                        details_type=int(q.detailsType))


def _sparsity(sp, owner: str) -> Sparsity | None:
    if sp is None:
        return None

    def index_vector(kind, vector, what):
        if not kind:
            return None
        if not 1 <= kind <= len(INDEX_DTYPES) or vector is None:
            raise ModelError(f"{owner}: sparsity {what} have unknown vector type {kind}")
        return np.asarray(vector.values if vector.values is not None else [], INDEX_DTYPES[kind - 1])

    levels = [DimMetadata(int(d.format), int(d.denseSize), index_vector(d.arraySegmentsType, d.arraySegments,
                                                                        "segments"),
                          index_vector(d.arrayIndicesType, d.arrayIndices, "indices"))
              for d in sp.dimMetadata or []]
    return Sparsity(None if sp.traversalOrder is None else tuple(_as_list(sp.traversalOrder)),
                    None if sp.blockMap is None else tuple(_as_list(sp.blockMap)), levels)


def _options(obj) -> dict:
    if obj is None:
        return {}
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vars(obj).items()}


def _convert(raw, data: bytes, file_format: str) -> Model:
    raw_buffers = raw.buffers or []
    buffers: dict[int, Buffer | None] = {}

    def buffer_at(index: int, owner: str) -> Buffer | None:
        if not 0 <= index < len(raw_buffers):
            if index == 0 and not raw_buffers:
                return None
            raise ModelError(f"{owner} refers to buffer {index}, the model has {len(raw_buffers)} buffers")
        if index not in buffers:
            array = _buffer_bytes(raw_buffers[index], index, data)
            buffers[index] = None if array is None or array.size == 0 else Buffer(array)
        return buffers[index]

    empty_constants: dict[int, Buffer] = {}

    def empty_constant_at(index: int) -> Buffer:
        """The constant of zero elements a tensor with buffer `index` (not 0) holds."""
        return empty_constants.setdefault(index, Buffer(np.zeros(0, np.uint8)))

    opcodes = []
    for ci, oc in enumerate(raw.operatorCodes or []):
        dep, code = int(oc.deprecatedBuiltinCode), int(oc.builtinCode)
        resolved = min(dep, code) if min(dep, code) < 0 else max(dep, code)
        if resolved < -128:  # circle's own ops are small negatives that fit deprecated_builtin_code (int8)
            raise ModelError(f"operator code {ci} has builtin code {resolved}, which is not a valid operator")
        custom = oc.customCode.decode() if isinstance(oc.customCode, bytes) else oc.customCode
        opcodes.append(OpCode(resolved, int(oc.version), custom))

    graphs = []
    for gi, sg in enumerate(raw.subgraphs or []):
        tensors = []
        for ti, rt in enumerate(sg.tensors or []):
            name = rt.name.decode(errors="replace") if isinstance(rt.name, bytes) else (rt.name or "")
            buf = buffer_at(int(rt.buffer), f"tensor '{name}' (index {ti})")
            extra = {k: getattr(rt, k) for k in ("variantTensors", "compressionType")
                     if getattr(rt, k) not in (None, 0)}
            tensors.append(Tensor(
                name=name, shape=tuple(_as_list(rt.shape)), type=int(rt.type), buffer=buf,
                quantization=_quantization(rt.quantization),
                shape_signature=None if rt.shapeSignature is None else tuple(_as_list(rt.shapeSignature)),
                is_variable=bool(rt.isVariable), has_rank=bool(rt.hasRank), extra=extra,
                sparsity=_sparsity(rt.sparsity, f"tensor '{name}' (index {ti})")))

        def tensor_at(index: int, owner: str) -> Tensor:
            if not 0 <= index < len(tensors):
                raise ModelError(f"{owner} refers to tensor {index}, subgraph {gi} has {len(tensors)} tensors")
            return tensors[index]

        ops = []
        for oi, ro in enumerate(sg.operators or []):
            if not 0 <= ro.opcodeIndex < len(opcodes):
                raise ModelError(f"op {oi} of subgraph {gi} has operator code index {ro.opcodeIndex}, "
                                 f"the model has {len(opcodes)} operator codes")
            opcode = opcodes[ro.opcodeIndex]
            owner = f"op {oi} ({opcode.name}) of subgraph {gi}"
            # -1 marks an omitted optional input; any other negative index is corrupt
            inputs = [None if i == -1 else tensor_at(i, owner) for i in _as_list(ro.inputs)]
            outputs = [tensor_at(i, owner) for i in _as_list(ro.outputs)]
            extra = {}
            if ro.customOptions is not None and len(ro.customOptions):
                extra["custom_options"] = bytes(np.asarray(ro.customOptions, dtype=np.uint8))
            if ro.largeCustomOptionsSize:
                start, size = int(ro.largeCustomOptionsOffset), int(ro.largeCustomOptionsSize)
                if start + size > len(data):
                    raise ModelError(f"{owner}: custom options lie past the end of the file")
                extra["custom_options"] = data[start:start + size]
            if ro.customOptionsFormat:
                extra["custom_options_format"] = int(ro.customOptionsFormat)
            if ro.mutatingVariableInputs is not None and len(ro.mutatingVariableInputs):
                extra["mutating_variable_inputs"] = [bool(v) for v in ro.mutatingVariableInputs]
            if ro.intermediates is not None and len(ro.intermediates):
                extra["intermediates"] = [None if i == -1 else tensor_at(i, owner) for i in _as_list(ro.intermediates)]
            if ro.builtinOptions2Type:
                extra["options2"] = (_OPTION2_TYPE_NAMES.get(ro.builtinOptions2Type), ro.builtinOptions2)
            options_type = _OPTION_TYPE_NAMES.get(int(ro.builtinOptionsType)) if ro.builtinOptionsType else None
            ops.append(Op(opcode, inputs, outputs, options_type, _options(ro.builtinOptions), extra))
        name = sg.name.decode(errors="replace") if isinstance(sg.name, bytes) else sg.name
        graph_inputs = [tensor_at(i, f"subgraph {gi} inputs") for i in _as_list(sg.inputs)]
        # A tensor with zero elements that nothing computes is a constant (e.g. an empty RESHAPE target,
        # usually with an empty buffer of its own): its empty value is all there is to know. Converters
        # also give activations empty buffers of their own: a producer or being a graph input tells those
        # apart. (LiteRT reads such a tensor as an unwritten one of zero elements: the same value.)
        computed = {id(t) for op in ops for t in op.outputs} | {id(t) for t in graph_inputs}
        for t, rt in zip(tensors, sg.tensors or []):
            if t.buffer is None and 0 in t.shape and id(t) not in computed and not t.is_variable:
                t.buffer = empty_constant_at(int(rt.buffer)) if rt.buffer else Buffer(np.zeros(0, np.uint8))
        graphs.append(Graph(tensors, ops, graph_inputs,
                            [tensor_at(i, f"subgraph {gi} outputs") for i in _as_list(sg.outputs)], name))

    metadata = []
    for md in raw.metadata or []:
        md_name = md.name.decode(errors="replace") if isinstance(md.name, bytes) else md.name
        buf = buffer_at(int(md.buffer), f"metadata '{md_name}'")
        metadata.append((md_name, b"" if buf is None else bytes(buf.data)))

    signatures = []
    for sd in raw.signatureDefs or []:
        gi = int(sd.subgraphIndex)
        if not 0 <= gi < len(graphs):
            raise ModelError(f"signature def refers to subgraph {gi}, the model has {len(graphs)}")
        g = graphs[gi]

        def entries(maps, role):
            out = []
            for m in maps or []:
                key = m.name.decode() if isinstance(m.name, bytes) else m.name
                if not 0 <= m.tensorIndex < len(g.tensors):
                    raise ModelError(f"signature {role} '{key}' refers to tensor {m.tensorIndex}, "
                                     f"subgraph {gi} has {len(g.tensors)} tensors")
                out.append((key, g.tensors[m.tensorIndex]))
            return out

        key = sd.signatureKey.decode() if isinstance(sd.signatureKey, bytes) else sd.signatureKey
        signatures.append(SignatureDef(key, gi, entries(sd.inputs, "input"), entries(sd.outputs, "output")))

    description = raw.description.decode(errors="replace") if isinstance(raw.description, bytes) else raw.description
    extra = {}
    if raw.metadataBuffer is not None and len(raw.metadataBuffer):
        extra["metadata_buffer"] = [bytes(b.data) if b is not None else b""
                                    for b in (buffer_at(int(i), "metadata_buffer") for i in raw.metadataBuffer)]
    return Model(graphs, int(raw.version), description, metadata, signatures, file_format, extra)
