"""Compare the JAX lowering of classifier models with LiteRT and onert.

    python examples/check_keras_conformance.py MODEL.tflite [MODEL.circle ...] [--seeds 2] [--json OUT]

For each model and seeded random input, the softmax output ("probs") and the tensor
feeding the final SOFTMAX ("logits") are compared: JAX (jit, XLA CPU) against LiteRT's
builtin kernels and against onert's cpu backend, plus LiteRT against onert as the
baseline disagreement of two independent engines. Errors are reported as max |a - b|
and as that divided by max |reference| (the output's scale). The references see the
logits through a copy of the model cut with jaxfuse's IR: the SOFTMAX op is removed and
its input becomes the graph output.

Runs with the test dependencies only (ai-edge-litert, onert where available).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import jax
import numpy as np

import jaxfuse
from jaxfuse.engines import (ONERT_AVAILABLE, OnertCrash, final_softmax, logits_copy, relative_error, run_litert,
                             run_onert)
from jaxfuse.ir import Op, OpCode, Tensor
from jaxfuse.lowering import lower_graph, tensor_keys
from jaxfuse.schema import BUILTIN_CODES


def make_onert_compatible(model, input_shape) -> None:
    """Exact rewrites onert 0.1.0 needs (in place): every tensor gets the static shape it has
    for `input_shape` (its SHAPE -> RESHAPE path fails on unknown dimensions; the shapes come
    from evaluating the JAX lowering abstractly), float16 weights behind DEQUANTIZE become
    float32 constants (its DEQUANTIZE rejects float16), and HARD_SWISH is expanded."""
    g = model.main
    fn, params = lower_graph(g, all_tensors=True)
    shapes = jax.eval_shape(fn, params, jax.ShapeDtypeStruct(input_shape, g.inputs[0].dtype))
    keys = tensor_keys(g)
    for t in g.tensors:
        if keys[id(t)] in shapes:
            t.shape = tuple(shapes[keys[id(t)]].shape)
        t.shape_signature = None
    for op in [op for op in g.ops if op.type == "DEQUANTIZE" and op.inputs[0].is_constant]:
        op.outputs[0].set_data(op.inputs[0].data.astype(op.outputs[0].dtype))
        g.remove_op(op)
    for op in [op for op in g.ops if op.type == "HARD_SWISH"]:
        expand_hard_swish(g, op)
    g.cleanup()


def expand_hard_swish(g, op) -> None:
    """Replace HARD_SWISH (which onert 0.1.0 lacks) by the same float operations as LiteRT's
    kernel, x * min(max(x + 3, 0), 6) / 6: ADD(+3, fused RELU6) -> MUL(x) -> DIV(6)."""
    x, y = op.inputs[0], op.outputs[0]

    def tensor(name, value=None):
        t = g.add_tensor(Tensor(g.unique_name(f"{y.name}/{name}"), x.shape if value is None else (), x.type))
        return t if value is None else t.set_data(np.asarray(value, x.dtype))

    relu6, product = tensor("relu6"), tensor("product")
    code = {name: OpCode(BUILTIN_CODES[name]) for name in ("ADD", "MUL", "DIV")}
    g.ops[g.ops.index(op):g.ops.index(op) + 1] = [
        Op(code["ADD"], [x, tensor("three", 3)], [relu6], "AddOptions", {"fusedActivationFunction": 3}),
        Op(code["MUL"], [x, relu6], [product], "MulOptions", {}),
        Op(code["DIV"], [product, tensor("six", 6)], [y], "DivOptions", {}),
    ]


def reference_models(path: str, tmp: str, use_onert: bool, input_shape) -> dict:
    """{(engine, "probs"|"logits"): model path} for the reference runs."""
    ext = os.path.splitext(path)[1]
    paths = {("litert", "probs"): path}
    variants = [("litert", "logits", False, True)]
    if use_onert:
        variants += [("onert", "probs", True, False), ("onert", "logits", True, True)]
    for engine, which, for_onert, cut in variants:
        model = jaxfuse.load(path)
        if cut:
            model = logits_copy(model)
        if for_onert:
            make_onert_compatible(model, input_shape)
        paths[engine, which] = os.path.join(tmp, f"{engine}_{which}{ext}")
        jaxfuse.save(model, paths[engine, which])
    return paths


def model_input_shape(tensor, requested) -> tuple[int, ...]:
    """`requested` if given, else the input's static shape when only its batch may vary."""
    if requested:
        return tuple(requested)
    signature = tensor.shape_signature or tensor.shape
    if any(d < 0 for d in signature[1:]):
        raise SystemExit(f"input '{tensor.name}' has dynamic dimensions {list(signature)}: give --input-shape")
    return tuple(tensor.shape)


def _errors(a, b) -> dict:
    return {"abs": float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))),
            "rel": relative_error(a, b)}


def _worst(rows: list[dict]) -> dict:
    return {k: max(r[k] for r in rows) for k in ("abs", "rel")}


def check_model(path: str, seeds: int, low: float, high: float, use_onert: bool, input_shape=None) -> dict:
    model = jaxfuse.load(path)
    g = model.main
    softmax = final_softmax(g)
    if softmax is None:
        raise SystemExit(f"{path}: the first output is not produced by a SOFTMAX op")
    fn, params = lower_graph(g, outputs=[g.outputs[0], softmax.inputs[0]])
    fn = jax.jit(fn)
    shape, dtype = model_input_shape(g.inputs[0], input_shape), g.inputs[0].dtype
    result = {"model": os.path.basename(path), "ops": len(g.ops)}
    pairs: dict[str, list[dict]] = {}
    run = {"litert": run_litert, "onert": run_onert}
    with tempfile.TemporaryDirectory(prefix="jaxfuse-conformance-") as tmp:
        paths = reference_models(path, tmp, use_onert, shape)
        for seed in range(seeds):
            x = np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)
            ours = dict(zip(("probs", "logits"), (np.asarray(y) for y in fn(params, x))))
            refs: dict[str, dict] = {}
            for (engine, which), model_path in paths.items():
                try:
                    refs.setdefault(engine, {})[which] = run[engine](model_path, [x])[0]
                except OnertCrash as e:
                    result["onert_error"] = str(e)
            for which in ("probs", "logits"):
                for engine, out in refs.items():
                    if which in out:
                        pairs.setdefault(f"jax_vs_{engine}_{which}", []).append(_errors(ours[which], out[which]))
                if which in refs.get("onert", {}):
                    pairs.setdefault(f"litert_vs_onert_{which}", []).append(
                        _errors(refs["litert"][which], refs["onert"][which]))
    result.update({k: _worst(v) for k, v in pairs.items()})
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--seeds", type=int, default=2, help="random inputs per model (seeds 0..N-1)")
    parser.add_argument("--range", type=float, nargs=2, default=(-1.0, 1.0), metavar=("LOW", "HIGH"),
                        help="uniform input range")
    parser.add_argument("--input-shape", type=lambda v: [int(d) for d in v.split(",")], metavar="N,H,W,C",
                        help="input shape for models with dynamic dimensions (e.g. 1,224,224,3)")
    parser.add_argument("--no-onert", action="store_true", help="compare with LiteRT only")
    parser.add_argument("--json", help="append one JSON line per model to this file")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="exit status 1 when a JAX error relative to the output scale exceeds this")
    args = parser.parse_args(argv)
    use_onert = ONERT_AVAILABLE and not args.no_onert
    columns = [f"jax_vs_{e}_{w}" for e in ("litert", "onert") for w in ("probs", "logits")] + \
        ["litert_vs_onert_logits"]
    print("model".ljust(28) + "".join(c.replace("_vs_", "~").rjust(20) for c in columns), flush=True)
    failed = False
    for path in args.models:
        r = check_model(path, args.seeds, *args.range, use_onert, args.input_shape)
        print(r["model"].ljust(28) + "".join((f"{r[c]['rel']:.2e}" if c in r else "-").rjust(20) for c in columns),
              flush=True)
        if "onert_error" in r:
            print(f"  onert: {r['onert_error']}")
        failed |= any(r[c]["rel"] > args.tolerance for c in columns[:4] if c in r)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(r) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
