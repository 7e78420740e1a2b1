"""What `jaxfuse inspect` reports: a model's structure, inputs and outputs, quantization,
constants, signature defs and metadata, as a ModelSummary (`to_dict()` is what --json
prints, `format_text()` what the terminal shows). Reads the model only: no JAX."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

from .ir import Model, Tensor
from .schema import TENSOR_TYPE_NAMES, TENSOR_TYPES


def dtype_name(tensor: Tensor) -> str:
    return TENSOR_TYPE_NAMES.get(tensor.type, f"type{tensor.type}").lower()


def tensor_info(t: Tensor) -> dict:
    info = {"name": t.name, "shape": [int(d) for d in t.shape],
            "shape_signature": None if t.shape_signature is None else [int(d) for d in t.shape_signature],
            "dtype": dtype_name(t), "quantized": bool(t.is_quantized)}
    if t.is_quantized:
        info["scale"] = [float(v) for v in t.quantization.scale]
        info["zero_point"] = [int(v) for v in t.quantization.zero_point] if t.quantization.zero_point is not None \
            else []
    return info


def quantization_summary(model: Model) -> dict:
    """What kind of quantization the model uses, judged from its tensors' types.

    >>> import jaxfuse
    >>> quantization_summary(jaxfuse.load("examples/models/resnet50v2_tiny_int8.tflite"))["scheme"]
    'int8'
    """
    quantized = [t for g in model.graphs for t in g.tensors if t.is_quantized and t.dtype is not None
                 and t.dtype.kind in "iu"]
    types: dict[str, int] = {}
    for t in quantized:
        types[dtype_name(t)] = types.get(dtype_name(t), 0) + 1
    activations = {dtype_name(t) for t in quantized if not t.is_constant}
    boundary = {id(t) for g in model.graphs for t in [*g.inputs, *g.outputs]}
    float_inside = any(not t.is_constant and id(t) not in boundary and t.dtype is not None and t.dtype.kind == "f"
                       for g in model.graphs for t in g.tensors)
    if not quantized:
        half = any(op.type == "DEQUANTIZE" and op.inputs[0] is not None and op.inputs[0].type == TENSOR_TYPES["FLOAT16"]
                   for g in model.graphs for op in g.ops)
        scheme = "float16 weights" if half else "float"
    elif not activations:
        scheme = "dynamic range"
    elif len(activations) > 1 or float_inside:
        scheme = "mixed"
    else:
        scheme = "int16x8" if activations == {"int16"} else activations.pop()
    return {"scheme": scheme, "quantized_tensors": len(quantized),
            "per_channel_tensors": sum(len(t.quantization.scale) > 1 for t in quantized),
            "quantized_types": dict(sorted(types.items()))}


@dataclass
class ModelSummary:
    """The facts `jaxfuse inspect` reports (the keys are documented in `jaxfuse inspect --help`)."""
    file: str | None
    format: str
    schema_version: int
    description: str | None
    subgraph_count: int
    subgraphs: list[dict]
    tensor_count: int
    op_count: int
    op_histogram: dict[str, int]
    inputs: list[dict]
    outputs: list[dict]
    quantization: dict
    constant_parameter_bytes: int
    constant_buffer_count: int
    signature_defs: list[dict]
    metadata: list[dict]

    def to_dict(self) -> dict:
        """What `jaxfuse inspect --json` prints."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def format_text(self) -> str:
        """What `jaxfuse inspect` prints."""
        lines = [f"file:         {self.file}",
                 f"format:       {self.format}",
                 f"schema:       version {self.schema_version}"]
        if self.description:
            lines.append(f"description:  {self.description}")
        lines += [f"subgraphs:    {self.subgraph_count}",
                  f"tensors:      {self.tensor_count}",
                  f"ops:          {self.op_count}",
                  f"constants:    {self.constant_parameter_bytes} bytes in {self.constant_buffer_count} distinct "
                  "buffers"]
        q = self.quantization
        if q["quantized_tensors"]:
            kinds = ", ".join(f"{n} {k}" for k, n in q["quantized_types"].items())
            lines.append(f"quantization: {q['scheme']} ({q['quantized_tensors']} quantized tensors: {kinds}; "
                         f"{q['per_channel_tensors']} per channel)")
        else:
            lines.append(f"quantization: {q['scheme']}")
        where = " (subgraph 0)" if self.subgraph_count > 1 else ""
        for role, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            lines.append(f"{role}{where}:" + ("" if tensors else " none"))
            lines += _table([[t["name"], _shape_text(t), t["dtype"] + (_quantization_text(t) if t["quantized"] else "")]
                             for t in tensors])
        lines.append("op histogram:" + ("" if self.op_histogram else " no ops"))
        lines += _table([[name, str(n)] for name, n in self.op_histogram.items()])
        lines.append("signature defs:" + ("" if self.signature_defs else " none"))
        for sig in self.signature_defs:
            lines.append(f"  {sig['key']} (subgraph {sig['subgraph']})")
            for role in ("inputs", "outputs"):
                pairs = ", ".join(f"{k} -> {v}" for k, v in sig[role].items()) or "none"
                lines.append(f"    {role}: {pairs}")
        lines.append("metadata:" + ("" if self.metadata else " none"))
        lines += _table([[m["name"], f"{m['bytes']} bytes"] for m in self.metadata])
        return "\n".join(lines)


def inspect(model, path: str | None = None) -> ModelSummary:
    """The summary `jaxfuse inspect` prints, of a model or a model file (read, not validated,
    so broken graphs can be inspected). `path` names the file in the summary (default: the
    file read, or None for a Model).

    >>> import jaxfuse
    >>> s = jaxfuse.inspect("examples/models/resnet50v2_tiny.tflite")
    >>> s.op_count, s.quantization["scheme"], s.inputs[0]["shape"]
    (115, 'float', [1, 64, 64, 3])
    >>> s.to_dict()["op_histogram"]["CONV_2D"]
    53
    >>> print(s.format_text().splitlines()[1])
    format:       tflite
    """
    if isinstance(model, (str, os.PathLike)):
        from .io import read
        path = os.fspath(model) if path is None else path
        model = read(os.fspath(model))
    hist: dict[str, int] = {}
    buffers: dict[int, int] = {}
    for g in model.graphs:
        for op in g.ops:
            hist[op.type] = hist.get(op.type, 0) + 1
        for t in g.tensors:
            if t.is_constant:
                buffers[id(t.buffer)] = t.buffer.nbytes
    main = model.graphs[0] if model.graphs else None
    return ModelSummary(
        file=path,
        format=model.file_format,
        schema_version=int(model.version),
        description=model.description,
        subgraph_count=len(model.graphs),
        subgraphs=[{"index": i, "name": g.name, "tensor_count": len(g.tensors), "op_count": len(g.ops)}
                   for i, g in enumerate(model.graphs)],
        tensor_count=sum(len(g.tensors) for g in model.graphs),
        op_count=sum(len(g.ops) for g in model.graphs),
        op_histogram=dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        inputs=[tensor_info(t) for t in main.inputs] if main else [],
        outputs=[tensor_info(t) for t in main.outputs] if main else [],
        quantization=quantization_summary(model),
        constant_parameter_bytes=sum(buffers.values()),
        constant_buffer_count=len(buffers),
        signature_defs=[{"key": s.key, "subgraph": s.graph_index,
                         "inputs": {k: t.name for k, t in s.inputs},
                         "outputs": {k: t.name for k, t in s.outputs}} for s in model.signatures],
        metadata=[{"name": name, "bytes": len(content)} for name, content in model.metadata])


def model_summary(model: Model, path: str) -> dict:
    """The JSON-ready dict `jaxfuse inspect --json` prints (inspect(model, path).to_dict())."""
    return inspect(model, path).to_dict()


def _table(rows: list[list[str]], indent="  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _shape_text(info: dict) -> str:
    text = str(info["shape"])
    if info["shape_signature"] is not None and info["shape_signature"] != info["shape"]:
        text += f" (signature {info['shape_signature']})"
    return text


def _quantization_text(info: dict) -> str:
    if len(info["scale"]) == 1:
        return f" quantized (scale {info['scale'][0]:.6g}, zero point {info['zero_point'][0]})"
    return f" quantized ({len(info['scale'])} per-channel scales)"
