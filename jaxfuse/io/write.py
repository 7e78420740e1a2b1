"""Serialize jaxfuse.ir objects to .tflite (TFL3) or .circle (CIR0) bytes.

Buffer indices are assigned here: 0 is the empty sentinel, then one buffer per distinct
`ir.Buffer` in order of first use (sharing survives), then the metadata buffers. Buffers
nothing refers to are not written. Constant data is 16-byte aligned like the TFLite
converter's. Models whose constants exceed the 2 GiB flatbuffer limit (or when asked)
keep their constants after the flatbuffer, addressed by Buffer.offset/size.
"""
from __future__ import annotations

import mmap
import os
import tempfile

import flatbuffers
import numpy as np
from circle_schema.v0_10 import circle

from ..ir import Buffer, GraphError, Model
from ..schema import PLACEHOLDER_FOR_GREATER_OP_CODES
from ..sparsity import INDEX_DTYPES

EXTENSIONS = {".tflite": b"TFL3", ".circle": b"CIR0"}
_OPTION_TYPES = {k: v for k, v in vars(circle.BuiltinOptions.BuiltinOptions).items()
                 if not k.startswith("_") and isinstance(v, int)}
_OPTION2_TYPES = {k: v for k, v in vars(circle.BuiltinOptions2.BuiltinOptions2).items()
                  if not k.startswith("_") and isinstance(v, int)}
_ALIGN = 16
_FLATBUFFER_LIMIT = 2**31 - 2**26  # leave room for the tables next to the data
_PLACEHOLDER_OFFSET = 2**40        # same width as a real offset, so the layout does not move
_TABLE_ROOM = 4096                 # bytes reserved per tensor, op and buffer for the tables (untouched room is free)


class _ReservingBuilder(flatbuffers.Builder):
    """A Builder whose constant payloads get their place in the layout but are not copied
    in: they are written from the model's own arrays when the file is. Its byte buffer is
    an anonymous mapping sized generously up front, so only the pages the tables use
    become resident: writing a model costs its tables, not a second copy of its weights."""

    def __init__(self, size: int):
        super().__init__(0)
        size = max(size, mmap.PAGESIZE)
        self.Bytes = mmap.mmap(-1, size)
        self.head = size
        self.payloads: list[tuple[int, np.ndarray]] = []  # (offset from the end, bytes)

    def reserve(self, payload: np.ndarray) -> None:
        self.head -= payload.size
        self.payloads.append((len(self.Bytes) - self.head, payload))

    def pieces(self) -> list:
        """The finished flatbuffer as byte-like pieces in file order: table bytes from the
        builder, payloads from the model (growing the buffer keeps offsets from the end)."""
        view, end = memoryview(self.Bytes), len(self.Bytes)
        pieces, cursor = [], self.head
        for from_end, payload in sorted(self.payloads, key=lambda p: -p[0]):
            start = end - from_end
            pieces += [view[cursor:start], payload]
            cursor = start + payload.size
        pieces.append(view[cursor:])
        return [p for p in pieces if len(p)]


class _AlignedBufferT(circle.Buffer.BufferT):
    """A BufferT whose data vector is 16-byte aligned, as TFLite kernels expect."""

    def Pack(self, builder):
        data = None
        if self.data is not None:
            payload = np.ascontiguousarray(self.data).view(np.uint8).reshape(-1)
            builder.StartVector(1, payload.size, _ALIGN)
            builder.reserve(payload)
            builder.vectorNumElems = payload.size
            data = builder.EndVector()
        circle.Buffer.BufferStart(builder)
        if data is not None:
            circle.Buffer.BufferAddData(builder, data)
        circle.Buffer.BufferAddOffset(builder, self.offset)
        circle.Buffer.BufferAddSize(builder, self.size)
        return circle.Buffer.BufferEnd(builder)


def _option_object(type_name: str, fields: dict, module_suffix="T"):
    cls = getattr(getattr(circle, type_name), type_name + module_suffix)
    obj = cls()
    for k, v in fields.items():
        setattr(obj, k, v)
    return obj


def _quantization_t(q):
    if q is None:
        return None
    qt = circle.QuantizationParameters.QuantizationParametersT()
    qt.scale = None if q.scale is None else np.asarray(q.scale, np.float32)
    qt.zeroPoint = None if q.zero_point is None else np.asarray(q.zero_point, np.int64)
    qt.min = None if q.min is None else np.asarray(q.min, np.float32)
    qt.max = None if q.max is None else np.asarray(q.max, np.float32)
    qt.quantizedDimension = q.quantized_dimension
    qt.details, qt.detailsType = q.details, q.details_type
    return qt


_INDEX_VECTORS = [circle.Int32Vector.Int32VectorT, circle.Uint16Vector.Uint16VectorT, circle.Uint8Vector.Uint8VectorT]


def _sparsity_t(sparsity):
    if sparsity is None:
        return None
    st = circle.SparsityParameters.SparsityParametersT()
    st.traversalOrder = None if sparsity.traversal_order is None else np.asarray(sparsity.traversal_order, np.int32)
    st.blockMap = None if sparsity.block_map is None else np.asarray(sparsity.block_map, np.int32)

    def index_vector(values):
        if values is None:
            return 0, None
        kind = INDEX_DTYPES.index(values.dtype)
        vector = _INDEX_VECTORS[kind]()
        vector.values = values
        return kind + 1, vector

    st.dimMetadata = []
    for dm in sparsity.dim_metadata:
        dt = circle.DimensionMetadata.DimensionMetadataT()
        dt.format, dt.denseSize = dm.format, dm.dense_size
        dt.arraySegmentsType, dt.arraySegments = index_vector(dm.array_segments)
        dt.arrayIndicesType, dt.arrayIndices = index_vector(dm.array_indices)
        st.dimMetadata.append(dt)
    return st


def _encode_opcode(opcode):
    oc = circle.OperatorCode.OperatorCodeT()
    code = opcode.builtin
    oc.builtinCode = code
    oc.deprecatedBuiltinCode = code if code < PLACEHOLDER_FOR_GREATER_OP_CODES else PLACEHOLDER_FOR_GREATER_OP_CODES
    oc.version = opcode.version
    oc.customCode = opcode.custom_code
    return oc


def _model_t(model: Model, constant_bytes_out: list[np.ndarray] | None):
    """Build the object-API model. With `constant_bytes_out`, constants go there instead
    of into the flatbuffer and their buffers get placeholder offsets."""
    mt = circle.Model.ModelT()
    mt.version = model.version
    mt.description = model.description
    mt.buffers = [_AlignedBufferT()]
    buffer_index: dict[int, int] = {}

    def add_buffer(buf: Buffer) -> int:
        key = id(buf)
        if key not in buffer_index:
            bt = _AlignedBufferT()
            if buf.nbytes == 0:
                pass  # a constant of zero elements: a buffer of its own, with no data
            elif constant_bytes_out is None:
                bt.data = buf.data
            else:
                bt.offset, bt.size = _PLACEHOLDER_OFFSET, buf.nbytes
                constant_bytes_out.append(buf.data)
            buffer_index[key] = len(mt.buffers)
            mt.buffers.append(bt)
        return buffer_index[key]

    opcode_index: dict[tuple, int] = {}
    mt.operatorCodes = []
    mt.subgraphs = []
    for gi, g in enumerate(model.graphs):
        index = {id(t): i for i, t in enumerate(g.tensors)}

        def idx(t, where):
            if t is None:
                return -1
            if id(t) not in index:
                raise GraphError(f"subgraph {gi}: {where} refers to tensor '{t.name}' that is not in the graph")
            return index[id(t)]

        sg = circle.SubGraph.SubGraphT()
        sg.name = g.name
        sg.tensors = []
        for t in g.tensors:
            tt = circle.Tensor.TensorT()
            tt.name = t.name
            tt.shape = np.asarray(t.shape, np.int32)
            tt.type = t.type
            tt.buffer = add_buffer(t.buffer) if t.is_constant else 0
            tt.quantization = _quantization_t(t.quantization)
            tt.shapeSignature = None if t.shape_signature is None else np.asarray(t.shape_signature, np.int32)
            tt.isVariable, tt.hasRank = t.is_variable, t.has_rank
            tt.sparsity = _sparsity_t(t.sparsity)
            for k, v in t.extra.items():
                setattr(tt, k, v)
            sg.tensors.append(tt)
        sg.operators = []
        for oi, op in enumerate(g.ops):
            key = (op.opcode.builtin, op.opcode.custom_code, op.opcode.version)
            if key not in opcode_index:
                opcode_index[key] = len(mt.operatorCodes)
                mt.operatorCodes.append(_encode_opcode(op.opcode))
            where = f"op {oi} ({op.type})"
            ot = circle.Operator.OperatorT()
            ot.opcodeIndex = opcode_index[key]
            ot.inputs = np.asarray([idx(t, where) for t in op.inputs], np.int32)
            ot.outputs = np.asarray([idx(t, where) for t in op.outputs], np.int32)
            if op.options_type is not None:
                ot.builtinOptionsType = _OPTION_TYPES[op.options_type]
                ot.builtinOptions = _option_object(op.options_type, op.options)
            extra = op.extra
            if "custom_options" in extra:
                ot.customOptions = np.frombuffer(extra["custom_options"], np.uint8)
            ot.customOptionsFormat = extra.get("custom_options_format", 0)
            if "mutating_variable_inputs" in extra:
                ot.mutatingVariableInputs = list(extra["mutating_variable_inputs"])
            if "intermediates" in extra:
                ot.intermediates = np.asarray([idx(t, where) for t in extra["intermediates"]], np.int32)
            if "options2" in extra:
                name, obj = extra["options2"]
                ot.builtinOptions2Type, ot.builtinOptions2 = _OPTION2_TYPES[name], obj
            sg.operators.append(ot)
        sg.inputs = np.asarray([idx(t, "graph inputs") for t in g.inputs], np.int32)
        sg.outputs = np.asarray([idx(t, "graph outputs") for t in g.outputs], np.int32)
        mt.subgraphs.append(sg)

    # metadata buffers: one per distinct content, after the constants
    meta_index: dict[bytes, int] = {}

    def add_meta(content: bytes) -> int:
        if content not in meta_index:
            bt = _AlignedBufferT()
            bt.data = np.frombuffer(content, np.uint8) if content else None
            meta_index[content] = len(mt.buffers)
            mt.buffers.append(bt)
        return meta_index[content]

    mt.metadata = []
    for name, content in model.metadata:
        md = circle.Metadata.MetadataT()
        md.name, md.buffer = name, add_meta(content)
        mt.metadata.append(md)
    if "metadata_buffer" in model.extra:
        mt.metadataBuffer = [add_meta(c) for c in model.extra["metadata_buffer"]]
    mt.signatureDefs = []
    for s in model.signatures:
        g = model.graphs[s.graph_index]
        index = {id(t): i for i, t in enumerate(g.tensors)}
        sd = circle.SignatureDef.SignatureDefT()
        sd.signatureKey, sd.subgraphIndex = s.key, s.graph_index
        sd.inputs, sd.outputs = [], []
        for role, entries, out in (("input", s.inputs, sd.inputs), ("output", s.outputs, sd.outputs)):
            for key, t in entries:
                if id(t) not in index:
                    raise GraphError(f"signature {role} '{key}' refers to tensor '{t.name}' that is not in subgraph "
                                     f"{s.graph_index}")
                tm = circle.TensorMap.TensorMapT()
                tm.name, tm.tensorIndex = key, index[id(t)]
                out.append(tm)
        mt.signatureDefs.append(sd)
    if not mt.metadata:
        mt.metadata = None
    if not mt.signatureDefs:
        mt.signatureDefs = None
    return mt


def _finish(mt, identifier: bytes, payload_bytes: int) -> list:
    """Pack the object-API model: the file's byte-like pieces, in order."""
    counts = len(mt.buffers) + sum(len(sg.tensors or []) + len(sg.operators or []) for sg in mt.subgraphs or [])
    builder = _ReservingBuilder(payload_bytes + 64 * len(mt.buffers) + _TABLE_ROOM * (counts + 4096))
    builder.Finish(mt.Pack(builder), file_identifier=identifier)
    return builder.pieces()


def _chunks(model: Model, file_format: str, buffer_offsets: bool | None) -> list:
    """Byte-like pieces whose concatenation is the file."""
    identifier = {"tflite": b"TFL3", "circle": b"CIR0"}[file_format]
    model.validate()
    constant_bytes = sum(b.nbytes for b in {id(t.buffer): t.buffer for g in model.graphs for t in g.tensors
                                            if t.is_constant}.values())
    if buffer_offsets is None:
        buffer_offsets = constant_bytes > _FLATBUFFER_LIMIT
    if not buffer_offsets:
        return _finish(_model_t(model, None), identifier, constant_bytes)

    # Two builds with identical layout: the first measures the flatbuffer, the second
    # carries the real offsets of the data appended after it.
    constants: list[np.ndarray] = []
    mt = _model_t(model, constants)
    head = sum(len(p) for p in _finish(mt, identifier, 0))
    position = -(-head // _ALIGN) * _ALIGN
    offsets = []
    for data in constants:
        offsets.append(position)
        position = -(-(position + data.size) // _ALIGN) * _ALIGN
    for bt, offset in zip((b for b in mt.buffers if b.offset == _PLACEHOLDER_OFFSET), offsets):
        bt.offset = offset
    chunks = _finish(mt, identifier, 0)
    position = sum(len(p) for p in chunks)
    for data, offset in zip(constants, offsets):
        chunks += [bytes(offset - position), data]
        position = offset + data.size
    return chunks


def to_bytes(model: Model, file_format: str = "tflite", buffer_offsets: bool | None = None) -> bytes:
    """Serialize `model`; file_format is "tflite" or "circle".

    buffer_offsets: None chooses automatically (only when the constants would not fit in a
    flatbuffer); True stores every constant after the flatbuffer; False never does.
    """
    return b"".join(_chunks(model, file_format, buffer_offsets))


def write(model: Model, path: str | os.PathLike, buffer_offsets: bool | None = None) -> None:
    """Write `model` to `path`; the extension picks the format (.tflite or .circle).

    The file appears atomically: it is written to a temporary file beside `path` and
    renamed, so a failure never leaves a partial output behind.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise ValueError(f"{path}: unknown output extension '{ext}' (use .tflite or .circle)")
    chunks = _chunks(model, "circle" if ext == ".circle" else "tflite", buffer_offsets)

    def write_chunks(f):
        for chunk in chunks:
            f.write(chunk)

    atomic_write(path, write_chunks)


def atomic_write(path: str | os.PathLike, write_to) -> None:
    """Call write_to(binary file) on a temporary file beside `path`, then rename it to `path`:
    `path` appears complete or not at all."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write_to(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is not what a user expects of an output
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
