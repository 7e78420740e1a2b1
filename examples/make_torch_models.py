#!/usr/bin/env python3
"""Build PyTorch models with randomized batch-norm statistics and convert them to TFLite.

The PyTorch route of jaxfuse's fixture generator (examples/make_models.py is the keras
route and delegates PyTorch model names here). Every model is built with random weights
(timm models with ``pretrained=False``; nothing is downloaded), put in eval mode, every
BatchNorm2d gets randomized running statistics and affine parameters, and the model is
converted by one of two converters:

``litert-torch``
    Google's PyTorch -> LiteRT converter (``litert_torch.convert``), torch -> .tflite
    directly. The input stays NCHW: the file starts with one TRANSPOSE to NHWC.
``onnx2tf``
    ``torch.onnx.export`` (the default torch.export-based exporter, opset 18), then
    ``onnx2tf.convert`` to a float32 .tflite. The input becomes NHWC and the file has no
    TRANSPOSE. onnx2tf loads a calibration sample for 4-D image inputs (even for float
    output) from ``calibration_image_sample_data_20x128x128x3_float32.npy`` in the working
    directory and downloads it when it is missing; this script runs onnx2tf in a
    temporary directory holding a seeded stand-in (uniform [0, 1]) and makes any download
    attempt an error. onnx-simplifier is not used (``not_use_onnxsim``).

Each written model is then checked: it must run in LiteRT's builtin kernels and agree with
the torch model within 1e-4 of the output scale, the interpreter must see the ops the file
holds, and models whose structure is known must have the expected op histogram (the small
models mirror the block structure of the full ones, so they must match exactly).

Transformers (vit_tiny_timm, decoder_rms_tiny): every LayerNorm / RMSNorm weight and bias
gets the batch-norm draws of gamma and beta (negated and zeroed fractions included, a
Generator seeded by --seed + 1, as make_models.py does for keras norms). litert-torch writes
nn.LayerNorm as MEAN (no keep_dims) -> RESHAPE -> SQUARED_DIFFERENCE -> MEAN -> ADD(eps) ->
RSQRT, n = x * r + (-mean * r), then MUL(gamma) -> ADD(beta); nn.RMSNorm as x * RSQRT(MEAN(x * x)
+ eps) -> MUL(gamma). onnx2tf writes LayerNormalization as tf.nn.batch_normalization does
(x * m + (beta - mean * m), m = rsqrt(var + eps) * gamma) and RMSNorm with SQRT and a
reciprocal DIV; it reads a [1, tokens, width] input as NCW and so transposes the first
block's statistics.

Randomized batch norm: the same distributions and draws as make_models.py (per channel
gamma ~ U(0.5, 1.5) with --zero-gamma-fraction set to 0 and --negative-gamma-fraction
negated on disjoint channels, floor(f * C + u) channels per layer; beta ~ N(0, 0.5);
running mean ~ N(0, 0.5); running variance ~ U(0.5, 2.0)), in ``model.modules()`` order,
deterministic given --seed, which also seeds torch's weight initialization and the test
input. Two models built with the same seed differ only in the signs and zeros of gamma.

What the converters do to batch norm: a BatchNorm2d right after a conv is folded into it
by both. A pre-activation batch norm (after a residual add or a max pool) stays:
litert-torch writes SUB(x, mean) -> MUL(rsqrt(var + eps)) -> MUL(gamma) -> ADD(beta) with
the ReLU fused into the ADD, all four constants shaped [1, 1, 1, C]; onnx2tf writes
MUL(gamma * rsqrt(var + eps)) -> ADD(shift) with the ReLU fused into the ADD, constants
shaped [C]. The stem's max pool (padding 1) becomes PADV2 -> MAX_POOL_2D (VALID) with
-inf as the pad value (litert-torch) or -3.4028235e38 (onnx2tf).

Examples::

    python examples/make_torch_models.py --list
    python examples/make_torch_models.py --all-fixtures        # regenerate the committed ones
    python examples/make_torch_models.py resnetv2_50 resnetv2_18 --out-dir /work/models \\
        --converter onnx2tf --negative-gamma-fraction 0.05

Requires the "torch" extra (torch, timm, litert-torch) and, for --converter onnx2tf, the
"onnx2tf" extra; install a CPU-only torch first (see README, "Tests and fixtures").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_models import (GenerationError, Job, captured_output, checked_jobs, draw_batch_norm,  # noqa: E402
                         format_histogram, fraction, positive_int, read_op_histogram, report_record,
                         report_total)

PROG = "make_torch_models.py"
TORCH_HINT = ("install a CPU-only torch, then the torch extra (pip install .[torch]) and for "
              "--converter onnx2tf the onnx2tf extra (pip install .[onnx2tf])")
DEFAULT_FIXTURE_DIR = Path(__file__).resolve().parent / "models"

CONVERTERS = ("litert-torch", "onnx2tf")
#: File-name tag of each converter.
CONVERTER_TAGS = {"litert-torch": "litert", "onnx2tf": "onnx2tf"}

# --------------------------------------------------------------------------------------
# Model registry (names only; nothing here imports torch)
# --------------------------------------------------------------------------------------

#: Full timm models (pretrained=False, 224x224 input, 1000 classes; never committed).
TIMM_MODELS = {
    "resnetv2_50": "timm resnetv2_50: pre-activation bottlenecks [3, 4, 6, 3], BatchNorm + ReLU",
    "resnetv2_18": "timm resnetv2_18: pre-activation basic blocks [2, 2, 2, 2], BatchNorm + ReLU",
}

#: Small models (64x64 input, 10 classes): short descriptions for --list.
SMALL_MODELS = {
    "resnetv2_50_tiny": "timm ResNetV2 as resnetv2_50, widths / 32 rounded up to 8 (stem 8, "
                        "channels 8-64, bottlenecks 8-16), 64x64, 10 classes",
    "resnetv2_18_tiny": "timm ResNetV2 as resnetv2_18, widths / 16 rounded up to 8 (stem 8, "
                        "channels 8-32), 64x64, 10 classes",
    "preact3_tiny": "hand-written: stem conv 3x3/2 -> maxpool 3x3/2, 3 pre-activation blocks "
                    "(identity, maxpool 1x1/2 and strided-conv shortcuts), BN+ReLU, GAP, Linear",
    "vit_tiny_timm": "timm VisionTransformer (pre-LN): 16x16, patch 4, width 24, 2 blocks of 2 "
                     "heads, GELU MLP 48, class token, final LayerNorm, 10 classes",
    "decoder_rms_tiny": "hand-written pre-RMSNorm decoder (LLaMA-style): 8 tokens of width 32 in, "
                        "2 blocks (torch.nn.RMSNorm, causal 4-head attention, SwiGLU MLP 64, no "
                        "biases), final RMSNorm, 64-way head per token",
}

MODEL_NAMES = (*TIMM_MODELS, *SMALL_MODELS)

#: timm keyword arguments of each timm-based model (timm rounds widths to multiples of 8).
TIMM_ARGS = {
    "resnetv2_50": ("resnetv2_50", {}),
    "resnetv2_18": ("resnetv2_18", {}),
    "resnetv2_50_tiny": ("resnetv2_50", {"channels": (8, 16, 32, 64), "stem_chs": 8,
                                         "num_classes": 10}),
    "resnetv2_18_tiny": ("resnetv2_18", {"channels": (8, 8, 16, 32), "stem_chs": 8,
                                         "num_classes": 10}),
    "vit_tiny_timm": ("vit_tiny_patch16_224", {"patch_size": 4, "embed_dim": 24, "depth": 2,
                                               "num_heads": 2, "mlp_ratio": 2.0, "num_classes": 10}),
}
DEFAULT_INPUT_SIZES = {"resnetv2_50": 224, "resnetv2_18": 224, "vit_tiny_timm": 16}  # others: 64
#: Models whose input is a sequence of embeddings [1, tokens, width], not an image.
SEQUENCE_INPUTS = {"decoder_rms_tiny": (1, 8, 32)}

#: Op histograms the converters must produce (float32, default input size).
RESNETV2_50_HISTOGRAMS = {
    "litert-torch": {"TRANSPOSE": 1, "PAD": 4, "CONV_2D": 54, "PADV2": 1, "MAX_POOL_2D": 1,
                     "SUB": 17, "MUL": 34, "ADD": 33, "MEAN": 1, "RESHAPE": 1},
    "onnx2tf": {"PAD": 4, "CONV_2D": 54, "PADV2": 1, "MAX_POOL_2D": 1, "MUL": 17, "ADD": 33,
                "MEAN": 1, "RESHAPE": 1},
}
RESNETV2_18_HISTOGRAMS = {
    "litert-torch": {"TRANSPOSE": 1, "PAD": 4, "CONV_2D": 21, "PADV2": 1, "MAX_POOL_2D": 1,
                     "SUB": 9, "MUL": 18, "ADD": 17, "MEAN": 1, "RESHAPE": 1},
    "onnx2tf": {"PAD": 4, "CONV_2D": 21, "PADV2": 1, "MAX_POOL_2D": 1, "MUL": 9, "ADD": 17,
                "MEAN": 1, "RESHAPE": 1},
}
PREACT3_HISTOGRAMS = {
    "litert-torch": {"TRANSPOSE": 1, "PAD": 3, "CONV_2D": 8, "PADV2": 1, "MAX_POOL_2D": 2,
                     "SUB": 4, "MUL": 8, "ADD": 7, "MEAN": 1, "FULLY_CONNECTED": 1},
    "onnx2tf": {"PAD": 3, "CONV_2D": 8, "PADV2": 1, "MAX_POOL_2D": 2, "MUL": 4, "ADD": 7,
                "MEAN": 1, "FULLY_CONNECTED": 1},
}
EXPECTED_HISTOGRAMS = {
    "preact3_tiny": PREACT3_HISTOGRAMS,
    "resnetv2_50": RESNETV2_50_HISTOGRAMS,
    "resnetv2_50_tiny": RESNETV2_50_HISTOGRAMS,
    "resnetv2_18": RESNETV2_18_HISTOGRAMS,
    "resnetv2_18_tiny": RESNETV2_18_HISTOGRAMS,
}

#: Size limits for committed fixtures (each file, and the PyTorch ones together).
FIXTURE_MAX_BYTES = 500_000
FIXTURE_SET_MAX_BYTES = 1_500_000


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that determines a generated model besides its name."""

    converter: str = "litert-torch"
    seed: int = 0
    negative_gamma_fraction: float = 0.0
    zero_gamma_fraction: float = 0.0
    input_size: int | None = None


def default_stem(model: str, s: Settings) -> str:
    """<model>[_<input size>]_<converter tag>[_mixed] (mixed: negative or zero gammas)."""
    stem = model
    if s.input_size is not None:
        stem += f"_{s.input_size}"
    stem += f"_{CONVERTER_TAGS[s.converter]}"
    if s.negative_gamma_fraction or s.zero_gamma_fraction:
        stem += "_mixed"
    return stem


def _fixture_job(model: str, converter: str, **kw) -> Job:
    settings = Settings(converter=converter, seed=0, **kw)
    return Job(model, settings, default_stem(model, settings))


#: Exactly the PyTorch models committed under examples/models/ (--all-fixtures).
FIXTURE_SET = (
    _fixture_job("resnetv2_50_tiny", "litert-torch", negative_gamma_fraction=0.05),
    _fixture_job("resnetv2_50_tiny", "litert-torch"),
    _fixture_job("resnetv2_50_tiny", "onnx2tf", negative_gamma_fraction=0.05),
    _fixture_job("preact3_tiny", "litert-torch", negative_gamma_fraction=0.05),
    _fixture_job("preact3_tiny", "onnx2tf", negative_gamma_fraction=0.05),
    _fixture_job("vit_tiny_timm", "litert-torch", negative_gamma_fraction=0.1, zero_gamma_fraction=0.05),
    _fixture_job("vit_tiny_timm", "onnx2tf", negative_gamma_fraction=0.1, zero_gamma_fraction=0.05),
    _fixture_job("decoder_rms_tiny", "litert-torch", negative_gamma_fraction=0.1, zero_gamma_fraction=0.05),
    _fixture_job("decoder_rms_tiny", "onnx2tf", negative_gamma_fraction=0.1, zero_gamma_fraction=0.05),
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------
# Lazy imports
# --------------------------------------------------------------------------------------


class MissingPackage(Exception):
    """A package of the torch / onnx2tf extras is not installed (exit status 2)."""


def _missing(exc: ImportError) -> MissingPackage:
    return MissingPackage(f"{exc.name} is not installed; {TORCH_HINT}")


def import_torch(quiet: bool = True):
    """Import torch quietly, or raise MissingPackage (status 2) with a one-line hint."""
    try:
        with captured_output(quiet):
            import torch
    except ImportError as exc:
        raise _missing(exc) from None
    return torch


_TORCHVISION_SCHEMAS = None


def import_timm(torch):
    """Import timm, working around a torchvision whose compiled ops cannot load.

    timm imports torchvision (for its data transforms). A torchvision wheel built for
    another torch, e.g. PyPI's CUDA build beside a CPU-only torch, cannot load its
    compiled ops, and torchvision then fails at import while registering fake kernels for
    ``torchvision::nms`` and ``torchvision::qnms``. Declaring those two schemas (without
    kernels) lets its Python part import; no model here uses torchvision ops.
    """
    try:
        import torchvision  # noqa: F401
    except ImportError as exc:
        raise _missing(exc) from None
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        global _TORCHVISION_SCHEMAS
        _TORCHVISION_SCHEMAS = torch.library.Library("torchvision", "DEF")  # kept alive
        for op in ("nms", "qnms"):
            _TORCHVISION_SCHEMAS.define(
                f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision  # noqa: F401
    try:
        import timm
    except ImportError as exc:
        raise _missing(exc) from None
    return timm


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


def build_preact3_tiny(torch):
    """The hand-written pre-activation net (module classes made here so that torch is
    imported lazily). BatchNorm2d + ReLU before each conv of a block; the shortcut is the
    identity, a 1x1 max pool with stride 2 (as keras' ResNetV2 downsamples), or a strided
    1x1 conv of the pre-activated input (as timm's ResNetV2)."""
    nn = torch.nn

    class PreActBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, shortcut: str):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(cin)
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.kind = shortcut
            if shortcut == "conv":
                self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)
            elif shortcut == "maxpool":
                self.shortcut = nn.MaxPool2d(1, stride)
            else:
                self.shortcut = nn.Identity()

        def forward(self, x):
            pre = torch.relu(self.bn1(x))
            shortcut = self.shortcut(pre if self.kind == "conv" else x)
            out = self.conv1(pre)
            out = self.conv2(torch.relu(self.bn2(out)))
            return out + shortcut

    class PreAct3(nn.Module):
        def __init__(self, num_classes: int = 10):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, 2, 1, bias=True)
            self.pool = nn.MaxPool2d(3, 2, 1)
            self.block1 = PreActBlock(8, 8, 1, "identity")
            self.block2 = PreActBlock(8, 8, 2, "maxpool")
            self.block3 = PreActBlock(8, 16, 2, "conv")
            self.norm = nn.BatchNorm2d(16)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, num_classes)

        def forward(self, x):
            x = self.pool(self.stem(x))
            x = self.block3(self.block2(self.block1(x)))
            x = torch.relu(self.norm(x))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    # Tensor names in litert-torch's output carry the module path: keep it the same
    # whichever script imported this one.
    for cls in (PreActBlock, PreAct3):
        cls.__module__, cls.__qualname__ = "make_torch_models", cls.__name__
    return PreAct3()


def build_decoder_rms_tiny(torch):
    """A LLaMA-style decoder on embeddings: x + attn(RMSNorm(x)), x + SwiGLU(RMSNorm(x)),
    then RMSNorm and the head; causal scaled-dot-product attention, no biases."""
    nn = torch.nn
    functional = torch.nn.functional

    class DecoderBlock(nn.Module):
        def __init__(self, width: int, heads: int, hidden: int):
            super().__init__()
            self.heads = heads
            self.attention_norm = nn.RMSNorm(width, eps=1e-6)
            self.qkv = nn.Linear(width, 3 * width, bias=False)
            self.out = nn.Linear(width, width, bias=False)
            self.mlp_norm = nn.RMSNorm(width, eps=1e-6)
            self.gate = nn.Linear(width, hidden, bias=False)
            self.up = nn.Linear(width, hidden, bias=False)
            self.down = nn.Linear(hidden, width, bias=False)

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.qkv(self.attention_norm(x)).split(c, dim=-1)
            q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
            a = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.out(a.transpose(1, 2).reshape(b, t, c))
            h = self.mlp_norm(x)
            return x + self.down(functional.silu(self.gate(h)) * self.up(h))

    class DecoderRmsTiny(nn.Module):
        def __init__(self, width: int = 32, heads: int = 4, hidden: int = 64, vocab: int = 64):
            super().__init__()
            self.blocks = nn.ModuleList([DecoderBlock(width, heads, hidden) for _ in range(2)])
            self.norm = nn.RMSNorm(width, eps=1e-6)
            self.head = nn.Linear(width, vocab, bias=False)

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x))

    for cls in (DecoderBlock, DecoderRmsTiny):
        cls.__module__, cls.__qualname__ = "make_torch_models", cls.__name__
    return DecoderRmsTiny()


def build_model(torch, name: str, s: Settings):
    """Build model `name` in eval mode with torch's initialization seeded by ``s.seed``."""
    torch.manual_seed(s.seed)
    if name == "preact3_tiny":
        model = build_preact3_tiny(torch)
    elif name == "decoder_rms_tiny":
        model = build_decoder_rms_tiny(torch)
    else:
        timm = import_timm(torch)
        variant, kwargs = TIMM_ARGS[name]
        if name.startswith("vit"):
            kwargs = {**kwargs, "img_size": input_size(name, s)}
        model = timm.create_model(variant, pretrained=False, **kwargs)
    return model.eval()


def sample_shape(name: str, s: Settings) -> tuple:
    if name in SEQUENCE_INPUTS:
        return SEQUENCE_INPUTS[name]
    size = input_size(name, s)
    return (1, 3, size, size)


def input_size(name: str, s: Settings) -> int:
    return s.input_size or DEFAULT_INPUT_SIZES.get(name, 64)


def randomize_batch_norms(torch, model, s: Settings) -> dict:
    """Random statistics for every BatchNorm2d (make_models.py's draws); return counts."""
    import numpy as np

    rng = np.random.default_rng(s.seed)
    stats = {"layers": 0, "channels": 0, "negative_gamma": 0, "zero_gamma": 0}
    for layer in model.modules():
        if not isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            continue
        n = layer.num_features
        gamma, beta, mean, var, n_neg, n_zero = draw_batch_norm(rng, n, s)
        with torch.no_grad():
            if layer.weight is not None:
                layer.weight.copy_(torch.from_numpy(gamma.astype("float32")))
            if layer.bias is not None:
                layer.bias.copy_(torch.from_numpy(beta.astype("float32")))
            layer.running_mean.copy_(torch.from_numpy(mean.astype("float32")))
            layer.running_var.copy_(torch.from_numpy(var.astype("float32")))
        stats["layers"] += 1
        stats["channels"] += n
        if layer.weight is not None:
            stats["negative_gamma"] += n_neg
            stats["zero_gamma"] += n_zero
    return stats


def randomize_norms(torch, model, s: Settings) -> dict:
    """LayerNorm and RMSNorm weights (and biases) with the batch-norm draws of gamma and
    beta (make_models.randomize_norms' distributions, a Generator seeded by ``s.seed + 1``):
    with torch's defaults (1 and 0) the affine would be invisible. Returns counts."""
    import numpy as np

    rng = np.random.default_rng(s.seed + 1)
    stats = {"layers": 0, "channels": 0, "negative_gamma": 0, "zero_gamma": 0}
    for layer in model.modules():
        if not isinstance(layer, (torch.nn.LayerNorm, torch.nn.RMSNorm)) or layer.weight is None:
            continue
        n = layer.weight.numel()
        gamma, beta, _, _, n_neg, n_zero = draw_batch_norm(rng, n, s)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(gamma.astype("float32")).reshape(layer.weight.shape))
            if getattr(layer, "bias", None) is not None:
                layer.bias.copy_(torch.from_numpy(beta.astype("float32")).reshape(layer.bias.shape))
        stats["layers"] += 1
        stats["channels"] += n
        stats["negative_gamma"] += n_neg
        stats["zero_gamma"] += n_zero
    return stats


# --------------------------------------------------------------------------------------
# Converters
# --------------------------------------------------------------------------------------


def convert_litert_torch(torch, model, sample, quiet: bool) -> bytes:
    """torch -> .tflite with litert_torch.convert (NCHW input kept)."""
    with captured_output(quiet) as log:
        try:
            import litert_torch
        except ImportError as exc:
            raise _missing(exc) from None
        try:
            return bytes(litert_torch.convert(model, (sample,)).model_content())
        except Exception as exc:
            raise GenerationError(f"litert-torch conversion failed: {_first_line(exc)}"
                                  f"{_log_tail(log())}") from exc


CALIBRATION_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


@contextlib.contextmanager
def _no_download(module):
    """Make `module.requests.get` (onnx2tf's only download) raise GenerationError."""
    requests = getattr(module, "requests", None)
    if requests is None:
        yield
        return
    original = requests.get

    def refuse(url, *args, **kwargs):
        raise GenerationError(f"onnx2tf tried to download {url}")

    requests.get = refuse
    try:
        yield
    finally:
        requests.get = original


def convert_onnx2tf(torch, model, sample, seed: int, quiet: bool) -> tuple[bytes, dict]:
    """torch.onnx.export, then onnx2tf to a float32 .tflite; also returns ONNX op counts."""
    import numpy as np

    with captured_output(quiet) as log, tempfile.TemporaryDirectory(prefix="onnx2tf-") as tmp:
        try:
            import onnx
            import onnx2tf
            from onnx2tf.utils import common_functions
        except ImportError as exc:
            raise _missing(exc) from None
        onnx_path = os.path.join(tmp, "model.onnx")
        try:
            torch.onnx.export(model, (sample,), onnx_path, input_names=["input"],
                              output_names=["output"], dynamo=True, external_data=False)
        except Exception as exc:
            raise GenerationError(f"torch.onnx.export failed: {_first_line(exc)}"
                                  f"{_log_tail(log())}") from exc
        onnx_ops = dict(Counter(n.op_type for n in onnx.load(onnx_path).graph.node))
        # The stand-in for the calibration sample onnx2tf would download (uniform [0, 1]).
        calib = np.random.default_rng(seed).uniform(0.0, 1.0, (20, 128, 128, 3))
        np.save(os.path.join(tmp, CALIBRATION_FILE), calib.astype(np.float32))
        # onnx2tf builds a tf_keras model; a fresh session keeps its tensor names (and so
        # the file's bytes) independent of the models converted before in this process.
        import tf_keras
        tf_keras.backend.clear_session()
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            with _no_download(common_functions):
                onnx2tf.convert(input_onnx_file_path=onnx_path, output_folder_path="out",
                                not_use_onnxsim=True, non_verbose=quiet)
        except GenerationError:
            raise
        except SystemExit as exc:
            raise GenerationError(f"onnx2tf exited with status {exc.code}"
                                  f"{_log_tail(log())}") from exc
        except Exception as exc:
            raise GenerationError(f"onnx2tf failed: {_first_line(exc)}{_log_tail(log())}") from exc
        finally:
            os.chdir(cwd)
        path = Path(tmp, "out", "model_float32.tflite")
        if not path.is_file():
            raise GenerationError(f"onnx2tf wrote no {path.name}{_log_tail(log())}")
        return path.read_bytes(), onnx_ops


def _log_tail(text: str) -> str:
    tail = [line for line in text.strip().splitlines() if line.strip()][-5:]
    return f" (log tail: {' | '.join(tail)})" if tail else ""


# --------------------------------------------------------------------------------------
# Inspection and checks
# --------------------------------------------------------------------------------------


def inspect_flatbuffer(data: bytes) -> dict:
    """Op histogram (first-appearance order) read from the file with LiteRT's schema."""
    from ai_edge_litert import schema_py_generated as schema

    model, histogram = read_op_histogram(schema, data)
    metadata = [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]
    return {"num_ops": sum(histogram.values()), "op_histogram": dict(histogram),
            "subgraphs": model.SubgraphsLength(), "buffers": model.BuffersLength(),
            "metadata": metadata}


def run_interpreter(torch, model, data: bytes, shape: tuple, seed: int) -> dict:
    """Run the .tflite in LiteRT's builtin kernels and compare with the torch model on a
    seeded sample of `shape` (an NCHW image, or a sequence fed as it is)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with captured_output():
        interp = Interpreter(model_content=data, experimental_op_resolver_type=(
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
        interp.allocate_tensors()
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    x = np.random.default_rng(seed).normal(0.0, 1.0, shape).astype(np.float32)
    size = shape[-1]
    shape = tuple(int(d) for d in inp["shape"])
    if shape == x.shape:
        layout, feed = ("NCHW" if x.ndim == 4 else "as in torch"), x
    elif x.ndim == 3 and shape == (x.shape[0], x.shape[2], x.shape[1]):
        layout, feed = "channels first (onnx2tf reads [1, C, T] as NCW)", np.ascontiguousarray(x.transpose(0, 2, 1))
    elif x.ndim == 4 and shape == (1, size, size, 3):
        layout, feed = "NHWC", np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    else:
        raise GenerationError(f"unexpected input shape {list(shape)}")
    interp.set_tensor(inp["index"], feed)
    interp.invoke()
    got = interp.get_tensor(out["index"])
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    if got.shape != want.shape:
        raise GenerationError(f"output shape {list(got.shape)} differs from torch's "
                              f"{list(want.shape)}")
    if not np.all(np.isfinite(got)):
        raise GenerationError("interpreter output is not finite")
    scale = float(np.max(np.abs(want)))
    err = float(np.max(np.abs(got - want)))
    ops = Counter(op["op_name"] for op in interp._get_ops_details())
    return {
        "input_shape": list(shape),
        "input_layout": layout,
        "output_shape": [int(d) for d in out["shape"]],
        "interpreter_histogram": dict(ops),
        "max_abs_output": scale,
        "max_abs_error_vs_torch": err,
        "relative_error_vs_torch": err / scale if scale else err,
    }


def check_histogram(job: Job, histogram: dict) -> None:
    """Compare with EXPECTED_HISTOGRAMS where the model's structure is known."""
    expected = EXPECTED_HISTOGRAMS.get(job.model, {}).get(job.settings.converter)
    if expected is None or job.settings.input_size is not None:
        return
    if histogram != expected:
        raise GenerationError(f"{job.stem}: op histogram {format_histogram(histogram)} differs "
                              f"from the expected {format_histogram(expected)}")


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "timm", "litert-torch", "onnx", "onnx2tf", "tensorflow-cpu",
                 "ai-edge-litert", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------


def generate(torch, job: Job, out_dir: Path, quiet: bool = True) -> dict:
    """Build, randomize, convert, verify and write one model; return its record."""
    s = job.settings
    shape = sample_shape(job.model, s)
    try:
        with captured_output(quiet):
            model = build_model(torch, job.model, s)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise GenerationError(f"{job.model}: cannot build: {_first_line(exc)}") from exc
    bn = randomize_batch_norms(torch, model, s)
    norms = randomize_norms(torch, model, s)
    sample = torch.from_numpy(
        __import__("numpy").random.default_rng(s.seed).normal(0.0, 1.0, shape).astype("float32"))
    onnx_ops = None
    if s.converter == "litert-torch":
        data = convert_litert_torch(torch, model, sample, quiet)
    else:
        data, onnx_ops = convert_onnx2tf(torch, model, sample, s.seed, quiet)
    info = inspect_flatbuffer(data)
    check = run_interpreter(torch, model, data, shape, s.seed)
    if check["interpreter_histogram"] != info["op_histogram"]:
        raise GenerationError(f"{job.stem}: interpreter sees "
                              f"{format_histogram(check['interpreter_histogram'])}, the file has "
                              f"{format_histogram(info['op_histogram'])}")
    if check["relative_error_vs_torch"] > 1e-4:
        raise GenerationError(f"{job.stem}: TFLite differs from torch by "
                              f"{check['relative_error_vs_torch']:.2e} of the output scale")
    check_histogram(job, info["op_histogram"])

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{job.stem}.tflite"
    path.write_bytes(data)
    record = {
        "file": path.name,
        "model": job.model,
        "generator": "examples/make_torch_models.py",
        "converter": s.converter,
        "settings": dataclasses.asdict(s),
        "versions": versions(),
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "batch_norm": bn,
        **({"norm": norms} if norms["layers"] else {}),
        "input_shape": check["input_shape"],
        "input_layout": check["input_layout"],
        "output_shape": check["output_shape"],
        "num_ops": info["num_ops"],
        "op_histogram": info["op_histogram"],
        "buffers": info["buffers"],
        "metadata": info["metadata"],
        "check": {k: check[k] for k in ("max_abs_output", "max_abs_error_vs_torch",
                                        "relative_error_vs_torch")},
    }
    if onnx_ops is not None:
        record["onnx_op_histogram"] = onnx_ops
    (out_dir / f"{job.stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def resolve_model_name(name: str) -> str:
    """Canonical spelling of a model name (case-insensitive), or raise ValueError."""
    known = {n.lower(): n for n in MODEL_NAMES}
    try:
        return known[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r} (see --list)") from None


def list_models() -> str:
    committed: dict = {}
    for job in FIXTURE_SET:
        committed.setdefault(job.model, []).append(job.stem)
    lines = ["timm models (pretrained=False, 224x224, 1000 classes, not committed):"]
    lines += [f"  {n:18s} {d}" for n, d in TIMM_MODELS.items()]
    lines.append("small models (committed fixtures under examples/models/):")
    for name, desc in SMALL_MODELS.items():
        lines.append(f"  {name:18s} {desc}")
        lines.append(f"  {'':18s} fixtures: {', '.join(committed.get(name, [])) or '-'}")
    lines.append(f"converters: {', '.join(CONVERTERS)}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Build PyTorch models (timm and hand-written) with randomized batch-norm "
                    "statistics, convert them with litert-torch or torch.onnx + onnx2tf, "
                    "verify them with LiteRT and write DIR/<name>.tflite plus a "
                    "DIR/<name>.json sidecar.",
        epilog="File names: <model>[_<input size>]_<litert|onnx2tf>[_mixed] (_mixed: negative "
               "or zero gammas). Requires torch: " + TORCH_HINT,
    )
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="model names (case-insensitive); see --list")
    p.add_argument("--list", action="store_true", help="list the model names and exit")
    p.add_argument("--all-fixtures", action="store_true",
                   help="regenerate exactly the committed PyTorch fixtures (fixed seed, "
                        "converters and settings) into --out-dir, default examples/models/")
    p.add_argument("--converter", choices=CONVERTERS, default="litert-torch",
                   help="litert-torch (torch -> .tflite, default) or onnx2tf "
                        "(torch.onnx.export -> onnx2tf float32)")
    p.add_argument("--out-dir", type=Path, metavar="DIR", help="output directory")
    p.add_argument("--name", metavar="STEM",
                   help="output file stem instead of the derived one (one MODEL only)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for torch weights, batch-norm statistics and test input "
                        "(default 0)")
    p.add_argument("--negative-gamma-fraction", type=fraction, default=0.0, metavar="F",
                   help="fraction of batch-norm channels whose gamma is negated (default 0)")
    p.add_argument("--zero-gamma-fraction", type=fraction, default=0.0, metavar="F",
                   help="fraction of batch-norm channels whose gamma is exactly 0 (default 0)")
    p.add_argument("--input-size", type=positive_int, metavar="N",
                   help="square input 3 x N x N instead of each model's default "
                        "(224 for timm models, 64 for the small ones)")
    p.add_argument("--verbose", action="store_true", help="show the converters' own output")
    return p


def jobs_from_args(p: argparse.ArgumentParser, args) -> tuple[list[Job], Path]:
    """Turn parsed arguments into jobs; usage errors exit via p.error (status 2)."""
    settings = Settings(converter=args.converter, seed=args.seed,
                        negative_gamma_fraction=args.negative_gamma_fraction,
                        zero_gamma_fraction=args.zero_gamma_fraction,
                        input_size=args.input_size)
    return checked_jobs(p, args, settings, settings != Settings(), FIXTURE_SET, DEFAULT_FIXTURE_DIR,
                        resolve_model_name, lambda name: Job(name, settings, args.name or default_stem(name, settings)))


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.list:
        print(list_models())
        return 0
    jobs, out_dir = jobs_from_args(p, args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    total = 0
    for job in jobs:
        try:
            torch = import_torch(quiet=not args.verbose)
            rec = generate(torch, job, out_dir, quiet=not args.verbose)
        except MissingPackage as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
        except GenerationError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 1
        total += rec["size_bytes"]
        if not report_record(PROG, rec, out_dir, f" ({rec['input_layout']}), {rec['converter']}", "torch",
                             FIXTURE_MAX_BYTES if args.all_fixtures else None):
            return 1
    return 0 if report_total(PROG, total, len(jobs), FIXTURE_SET_MAX_BYTES if args.all_fixtures else None) else 1


if __name__ == "__main__":
    sys.exit(main())
