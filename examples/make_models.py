#!/usr/bin/env python3
"""Build keras models with randomized batch-norm statistics and convert them to TFLite.

This is jaxfuse's fixture generator. Every model is built with random weights
(``weights=None``; nothing is downloaded), every BatchNormalization layer gets
randomized statistics, and the model is converted with the real TFLite converter
(``tf.lite.TFLiteConverter.from_keras_model``). Each written model is then checked:
it must run in ``tf.lite.Interpreter`` and agree with the keras model, and models
whose structure is known must have the expected op histogram.

Randomized batch norm (deterministic given ``--seed``), per channel::

    gamma           ~ U(0.5, 1.5), then a fraction set exactly to 0
                      (--zero-gamma-fraction) and a fraction negated
                      (--negative-gamma-fraction), on disjoint channels
    beta            ~ N(0, 0.5)
    moving_mean     ~ N(0, 0.5)
    moving_variance ~ U(0.5, 2.0)

The number of zeroed / negated channels of a layer is ``floor(f * C + u)`` with
``u ~ U(0, 1)``, so small layers are hit too and the expected fraction is ``f``.
The same random draws are made whatever the fractions are, so two models built with
the same seed differ only in the signs and zeros of gamma.

Randomized statistics matter: with keras' default statistics (gamma 1, beta 0,
mean 0, variance 1) the converter drops the all-zero ADD of each pre-activation batch
norm, and the graph no longer looks like a trained model's.

What the converter does to batch norm (TF 2.21): a BN right after a conv, depthwise
conv, transposed conv or dense layer is folded into its weights, and a BN right before
a dense layer is folded into that. Only BNs after an activation, a concatenation, an
add, the model input or a conv with a second consumer stay as MUL + ADD (the ReLU fused
into the ADD). So the pre-activation nets (ResNetV2, DenseNet) keep theirs, while
mobilenetv2_tiny keeps none.

Reproducibility: the same seed and versions give byte-identical files, except with
--buffer-offsets, where the converter places the out-of-flatbuffer constants in a
different order on each run (same tensors, same bytes, different offsets).

Examples::

    python examples/make_models.py --list
    python examples/make_models.py --all-fixtures            # regenerate examples/models/
    python examples/make_models.py ResNet50V2 --out-dir /tmp/models --logits
    python examples/make_models.py resnet50v2_tiny --out-dir /tmp/m \\
        --negative-gamma-fraction 0.05 --zero-gamma-fraction 0.03 --float16

Requires TensorFlow (the "convert" extra: ``pip install .[convert]``).

PyTorch models (timm resnetv2_50 / resnetv2_18, their small versions, a hand-written
pre-activation net) and --converter litert-torch|onnx2tf are handed to
examples/make_torch_models.py with all arguments, e.g.
``python examples/make_models.py resnetv2_50 --converter onnx2tf --out-dir /tmp/m``;
its --all-fixtures regenerates the committed PyTorch fixtures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

PROG = "make_models.py"
CONVERT_HINT = "install the convert extra: pip install .[convert]"
DEFAULT_FIXTURE_DIR = Path(__file__).resolve().parent / "models"

# --------------------------------------------------------------------------------------
# Model registry (names only; nothing here imports TensorFlow)
# --------------------------------------------------------------------------------------

#: Full keras.applications models (random weights, default input size, include_top).
APPLICATIONS = (
    "ResNet50",
    "ResNet50V2",
    "ResNet101V2",
    "ResNet152V2",
    "DenseNet121",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Small",
    "EfficientNetB0",
    "InceptionV3",
    "Xception",
    "VGG16",
)

#: Input sizes keras.applications uses by default (others: 224). Passed explicitly,
#: because some models (MobileNetV3*) otherwise get a dynamic None x None input.
APPLICATION_INPUT_SIZES = {"InceptionV3": 299, "Xception": 299}

#: Small models built here; short descriptions for --list.
SMALL_MODELS = {
    "resnet50v2_tiny": "ResNet50V2 block structure, filters / 16, 64x64x3 input, 10 classes",
    "densenet_tiny": "DenseNet121 block structure [6,12,24,16], growth 4, 64x64x3, 10 classes",
    "mobilenetv2_tiny": "MobileNetV2-style inverted residuals incl. depth_multiplier=2, 64x64x3",
    "misc_ops_tiny": "tconv(+/-bias)+BN, dense+BN, avg pools, SE block, hard-swish, dilation, ...",
    "vit_tiny": "pre-LN ViT: 16x16x3, patch 4, width 24, 2 heads, 2 blocks, GELU MLP 48, mean-pool head",
    "vit_rms_tiny": "vit_tiny with keras RMSNormalization instead of LayerNormalization (pre-norm)",
    "vit_postln_tiny": "post-LN encoder (x = LN(x + f(x))), otherwise vit_tiny: the negative case",
    "vit_cls_tiny": "pre-LN ViT as vit_tiny with a class token read by the head (x[:, 0]), LayerNorm eps 1e-5, "
                    "3 heads of 8, tanh-GELU MLP, dynamic batch (the converter's Tensordot reshapes)",
}

#: Op histograms the converter must produce (float32, default input size). The tiny
#: models mirror the block structure of the full ones, so they must match exactly.
RESNET50V2_HISTOGRAM = {
    "PAD": 5, "CONV_2D": 53, "MAX_POOL_2D": 4, "MUL": 17, "ADD": 33,
    "MEAN": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1,
}
DENSENET121_HISTOGRAM = {
    "PAD": 2, "CONV_2D": 120, "MAX_POOL_2D": 1, "MUL": 62, "ADD": 62,
    "CONCATENATION": 58, "AVERAGE_POOL_2D": 3, "MEAN": 1, "FULLY_CONNECTED": 1,
    "SOFTMAX": 1,
}
EXPECTED_HISTOGRAMS = {
    "ResNet50V2": RESNET50V2_HISTOGRAM,
    "resnet50v2_tiny": RESNET50V2_HISTOGRAM,
    "DenseNet121": DENSENET121_HISTOGRAM,
    "densenet_tiny": DENSENET121_HISTOGRAM,
}

#: Size limits for committed fixtures (float32 file, and all of them together).
FIXTURE_MAX_BYTES = 1_000_000
FIXTURE_SET_MAX_BYTES = 3_000_000


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that determines a generated model besides its name."""

    seed: int = 0
    negative_gamma_fraction: float = 0.0
    zero_gamma_fraction: float = 0.0
    float16: bool = False
    buffer_offsets: bool = False
    logits: bool = False
    input_size: int | None = None


@dataclasses.dataclass(frozen=True)
class Job:
    """One model to build, convert and write as ``<stem>.tflite`` + ``<stem>.json``."""

    model: str
    settings: Settings
    stem: str


def default_stem(model: str, s: Settings) -> str:
    """File stem for a model: its name plus suffixes for the non-default settings."""
    stem = model
    if s.input_size is not None:
        stem += f"_{s.input_size}"
    if s.negative_gamma_fraction or s.zero_gamma_fraction:
        stem += "_mixed"
    if s.logits:
        stem += "_logits"
    if s.float16:
        stem += "_f16"
    if s.buffer_offsets:
        stem += "_offsets"
    return stem


def _fixture_job(model: str, **kw) -> Job:
    settings = Settings(seed=0, **kw)
    return Job(model, settings, default_stem(model, settings))


#: Exactly the models committed under examples/models/ (regenerated by --all-fixtures).
FIXTURE_SET = (
    _fixture_job("resnet50v2_tiny"),
    _fixture_job("resnet50v2_tiny", negative_gamma_fraction=0.05, zero_gamma_fraction=0.03),
    _fixture_job("resnet50v2_tiny", float16=True),
    _fixture_job("resnet50v2_tiny", buffer_offsets=True),
    _fixture_job("densenet_tiny"),
    _fixture_job("mobilenetv2_tiny"),
    _fixture_job("misc_ops_tiny"),
    _fixture_job("vit_tiny", negative_gamma_fraction=0.1, zero_gamma_fraction=0.05, logits=True),
    _fixture_job("vit_rms_tiny", negative_gamma_fraction=0.1, zero_gamma_fraction=0.05, logits=True),
    _fixture_job("vit_postln_tiny", negative_gamma_fraction=0.1, zero_gamma_fraction=0.05, logits=True),
    _fixture_job("vit_cls_tiny", negative_gamma_fraction=0.1, zero_gamma_fraction=0.05, logits=True),
)


class GenerationError(Exception):
    """A model could not be built, converted or verified (message is one line)."""


# --------------------------------------------------------------------------------------
# Lazy TensorFlow import
# --------------------------------------------------------------------------------------


def import_tensorflow():
    """Import tensorflow and keras quietly, or exit (status 2) with a one-line hint."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with captured_output():  # TensorFlow's C++ start-up chatter
            import tensorflow as tf
            import keras
    except ImportError as exc:
        print(f"{PROG}: error: {exc.name} is not installed; {CONVERT_HINT}", file=sys.stderr)
        raise SystemExit(2) from None
    return tf, keras


@contextlib.contextmanager
def captured_output(enabled: bool = True) -> Iterator[Callable[[], str]]:
    """Redirect file descriptors 1 and 2 (the converter's C++ and keras' chatter).

    Yields a function that returns what was captured so far, so that it can be shown
    when something fails.
    """
    if not enabled:
        yield lambda: ""
        return
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as log:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)

            def read() -> str:
                sys.stdout.flush()
                sys.stderr.flush()
                log.seek(0)
                return log.read().decode("utf-8", "replace")

            yield read
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


# --------------------------------------------------------------------------------------
# Small models (mirroring keras.applications code where a full model exists)
# --------------------------------------------------------------------------------------


def _bn(layers, name: str, epsilon: float = 1.001e-5):
    """BatchNormalization over the channel axis with keras.applications' epsilon."""
    return layers.BatchNormalization(axis=-1, epsilon=epsilon, name=name)


def _resnet_v2_block(layers, x, filters: int, stride: int = 1, conv_shortcut: bool = False,
                     name: str = ""):
    """Pre-activation bottleneck block, as keras.applications.resnet.residual_block_v2."""
    preact = _bn(layers, f"{name}_preact_bn")(x)
    preact = layers.Activation("relu", name=f"{name}_preact_relu")(preact)
    if conv_shortcut:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(preact)
    else:
        shortcut = layers.MaxPooling2D(1, strides=stride)(x) if stride > 1 else x
    x = layers.Conv2D(filters, 1, strides=1, use_bias=False, name=f"{name}_1_conv")(preact)
    x = _bn(layers, f"{name}_1_bn")(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name=f"{name}_2_pad")(x)
    x = layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=f"{name}_2_conv")(x)
    x = _bn(layers, f"{name}_2_bn")(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    return layers.Add(name=f"{name}_out")([shortcut, x])


def _resnet_v2_stack(layers, x, filters: int, blocks: int, stride1: int = 2, name: str = ""):
    """keras.applications.resnet.stack_residual_blocks_v2: the stride is in the LAST block."""
    x = _resnet_v2_block(layers, x, filters, conv_shortcut=True, name=f"{name}_block1")
    for i in range(2, blocks):
        x = _resnet_v2_block(layers, x, filters, name=f"{name}_block{i}")
    return _resnet_v2_block(layers, x, filters, stride=stride1, name=f"{name}_block{blocks}")


def build_resnet50v2_tiny(keras, input_size: int | None, classifier_activation):
    """ResNet50V2 (keras.applications.resnet_v2) with every width divided by 16.

    Stem conv 7x7/2 with bias after ZeroPadding(3), ZeroPadding(1) + MaxPool 3x3/2,
    stacks [3, 4, 6, 3] of pre-activation bottlenecks (conv shortcut in each stack's
    first block, MaxPool(1, stride 2) shortcut in its strided last block), post BN+ReLU,
    global average pooling, Dense. The converted op histogram equals ResNet50V2's.
    """
    layers = keras.layers
    size = input_size or 64
    div = 16
    inputs = layers.Input(shape=(size, size, 3), name="input")
    x = layers.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(inputs)
    x = layers.Conv2D(64 // div, 7, strides=2, use_bias=True, name="conv1_conv")(x)
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    x = _resnet_v2_stack(layers, x, 64 // div, 3, name="conv2")
    x = _resnet_v2_stack(layers, x, 128 // div, 4, name="conv3")
    x = _resnet_v2_stack(layers, x, 256 // div, 6, name="conv4")
    x = _resnet_v2_stack(layers, x, 512 // div, 3, stride1=1, name="conv5")
    x = _bn(layers, "post_bn")(x)
    x = layers.Activation("relu", name="post_relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(10, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inputs, x, name="resnet50v2_tiny")


def _densenet_conv_block(layers, x, growth: int, name: str):
    """keras.applications.densenet.conv_block: BN-ReLU-1x1, BN-ReLU-3x3, concatenate."""
    x1 = _bn(layers, f"{name}_0_bn")(x)
    x1 = layers.Activation("relu", name=f"{name}_0_relu")(x1)
    x1 = layers.Conv2D(4 * growth, 1, use_bias=False, name=f"{name}_1_conv")(x1)
    x1 = _bn(layers, f"{name}_1_bn")(x1)
    x1 = layers.Activation("relu", name=f"{name}_1_relu")(x1)
    x1 = layers.Conv2D(growth, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(x1)
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([x, x1])


def _densenet_transition(layers, x, reduction: float, name: str):
    """keras.applications.densenet.transition_block: BN-ReLU-1x1 conv-AvgPool 2x2/2."""
    x = _bn(layers, f"{name}_bn")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    x = layers.Conv2D(int(x.shape[-1] * reduction), 1, use_bias=False, name=f"{name}_conv")(x)
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


def build_densenet_tiny(keras, input_size: int | None, classifier_activation):
    """DenseNet121 (keras.applications.densenet) with blocks [6, 12, 24, 16], growth 4.

    Stem conv 7x7/2 (16 filters, no bias) + BN + ReLU + ZeroPadding(1) + MaxPool 3x3/2,
    dense blocks separated by transitions with reduction 0.5, final BN+ReLU, global
    average pooling, Dense. The converted op histogram equals DenseNet121's.
    """
    layers = keras.layers
    size = input_size or 64
    growth = 4
    inputs = layers.Input(shape=(size, size, 3), name="input")
    x = layers.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(inputs)
    x = layers.Conv2D(16, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = _bn(layers, "conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    for i, blocks in enumerate((6, 12, 24, 16)):
        stage = f"conv{i + 2}"
        for b in range(blocks):
            x = _densenet_conv_block(layers, x, growth, name=f"{stage}_block{b + 1}")
        if i < 3:
            x = _densenet_transition(layers, x, 0.5, name=f"pool{i + 2}")
    x = _bn(layers, "bn")(x)
    x = layers.Activation("relu", name="relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(10, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inputs, x, name="densenet_tiny")


def _correct_pad(size: int, kernel: int = 3):
    """keras.applications.imagenet_utils.correct_pad for a square input of `size`."""
    adjust = 1 - size % 2
    correct = kernel // 2
    return ((correct - adjust, correct), (correct - adjust, correct))


def _inverted_res_block(layers, x, expansion: int, stride: int, filters: int, block_id: int,
                        depth_multiplier: int = 1):
    """keras.applications.mobilenet_v2._inverted_res_block, plus a depth multiplier."""
    inputs = x
    in_channels = x.shape[-1]
    prefix = f"block_{block_id}_"
    eps = 1e-3
    if expansion != 1:
        x = layers.Conv2D(expansion * in_channels, 1, padding="same", use_bias=False,
                          name=f"{prefix}expand")(x)
        x = _bn(layers, f"{prefix}expand_BN", eps)(x)
        x = layers.ReLU(6.0, name=f"{prefix}expand_relu")(x)
    if stride == 2:
        x = layers.ZeroPadding2D(padding=_correct_pad(x.shape[1]), name=f"{prefix}pad")(x)
    x = layers.DepthwiseConv2D(3, strides=stride, depth_multiplier=depth_multiplier,
                               use_bias=False, padding="same" if stride == 1 else "valid",
                               name=f"{prefix}depthwise")(x)
    x = _bn(layers, f"{prefix}depthwise_BN", eps)(x)
    x = layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(x)
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{prefix}project")(x)
    x = _bn(layers, f"{prefix}project_BN", eps)(x)
    if in_channels == filters and stride == 1:
        return layers.Add(name=f"{prefix}add")([inputs, x])
    return x


def build_mobilenetv2_tiny(keras, input_size: int | None, classifier_activation):
    """A narrow MobileNetV2: inverted residual blocks (expand 1x1 + BN + ReLU6, depthwise
    3x3 + BN + ReLU6 with ZeroPadding for stride 2, project 1x1 + BN, residual add), one
    depthwise conv with depth_multiplier=2, Conv 1x1 + BN + ReLU6 head, GAP, Dense."""
    layers = keras.layers
    size = input_size or 64
    inputs = layers.Input(shape=(size, size, 3), name="input")
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="Conv1")(inputs)
    x = _bn(layers, "bn_Conv1", 1e-3)(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    # (expansion, stride, filters, depth_multiplier)
    blocks = [(1, 1, 8, 1), (6, 2, 8, 1), (6, 1, 8, 1), (6, 2, 16, 1), (6, 1, 16, 1),
              (2, 1, 16, 2), (6, 2, 24, 1), (6, 1, 24, 1)]
    for block_id, (expansion, stride, filters, dm) in enumerate(blocks):
        x = _inverted_res_block(layers, x, expansion, stride, filters, block_id, dm)
    x = layers.Conv2D(64, 1, use_bias=False, name="Conv_1")(x)
    x = _bn(layers, "Conv_1_bn", 1e-3)(x)
    x = layers.ReLU(6.0, name="out_relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(10, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inputs, x, name="mobilenetv2_tiny")


def build_misc_ops_tiny(keras, input_size: int | None, classifier_activation):
    """A small net exercising ops around batch norm besides plain conv->BN.

    Contents: BN on the input, hard-swish x*relu6(x+3)/6, BN after conv+ReLU, dilated
    conv, SE block (GAP -> Dense -> Dense -> sigmoid -> Multiply), a conv whose output
    feeds both a BN and a concatenation, BN after Concatenate, AveragePooling2D SAME and
    VALID, Conv2DTranspose with and without bias each followed by BN, tanh, sigmoid,
    Dense followed by BN, BN after Dense+ReLU, Reshape and a Dense on a rank-3 tensor.

    The converter folds a BN straight after a conv, transposed conv or dense layer
    into its weights; the BNs on the input, after an activation, after a concatenation
    and after a conv with a second consumer stay as MUL + ADD.
    """
    layers = keras.layers
    size = input_size or 32
    # A static batch of 1 keeps Reshape/Flatten free of SHAPE/GATHER/PACK arithmetic.
    inputs = layers.Input(shape=(size, size, 3), batch_size=1, name="input")
    x = _bn(layers, "input_bn")(inputs)
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem_conv")(x)
    x = _bn(layers, "stem_bn")(x)
    # hard-swish as keras.applications.mobilenet_v3 writes it: x * relu6(x + 3) / 6
    x = layers.Multiply(name="stem_hard_swish")(
        [x, layers.ReLU(6.0, name="stem_relu6")(x + 3.0) * (1.0 / 6.0)])
    # BN after an activation: the converter cannot fold it into the conv before it.
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="relu_conv")(x)
    x = _bn(layers, "after_relu_bn")(x)
    x = layers.Conv2D(8, 3, dilation_rate=2, padding="same", name="dilated_conv")(x)
    x = _bn(layers, "dilated_bn")(x)
    x = layers.ReLU(name="dilated_relu")(x)
    # Squeeze-and-excitation.
    s = layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    s = layers.Dense(4, activation="relu", name="se_reduce")(s)
    s = layers.Dense(8, name="se_expand")(s)
    s = layers.Activation("sigmoid", name="se_sigmoid")(s)
    x = layers.Multiply(name="se_mul")([x, s])
    # A conv with two consumers: the BN stays a MUL/ADD after conversion.
    c = layers.Conv2D(8, 1, name="shared_conv")(x)
    b = _bn(layers, "shared_bn")(c)
    b = layers.ReLU(name="shared_relu")(b)
    x = layers.Concatenate(name="shared_concat")([b, c])
    x = _bn(layers, "concat_bn")(x)
    x = layers.ReLU(name="concat_relu")(x)
    a_same = layers.AveragePooling2D(3, strides=1, padding="same", name="avgpool_same")(x)
    a_valid = layers.AveragePooling2D(2, strides=2, padding="valid", name="avgpool_valid")(x)
    t = layers.Conv2DTranspose(8, 3, strides=2, padding="same", use_bias=True,
                               name="tconv_bias")(a_valid)
    t = _bn(layers, "tconv_bias_bn")(t)
    t = layers.ReLU(name="tconv_bias_relu")(t)
    x = layers.Concatenate(name="pool_concat")([a_same, t])
    x = layers.Conv2D(16, 3, strides=2, padding="same", name="down_conv")(x)
    x = _bn(layers, "down_bn")(x)
    x = layers.Activation("tanh", name="down_tanh")(x)
    x = layers.Conv2DTranspose(8, 2, strides=2, padding="valid", use_bias=False,
                               name="tconv_nobias")(x)
    x = _bn(layers, "tconv_nobias_bn")(x)
    x = layers.Activation("sigmoid", name="tconv_nobias_sigmoid")(x)
    x = layers.MaxPooling2D(4, name="head_pool")(x)
    x = layers.Reshape((-1, 8), name="head_reshape")(x)
    x = layers.Dense(8, name="head_dense_rank3")(x)
    x = layers.Flatten(name="head_flatten")(x)
    x = layers.Dense(16, use_bias=False, name="head_dense_nobias")(x)
    x = _bn(layers, "head_dense_nobias_bn")(x)
    x = layers.ReLU(name="head_relu")(x)
    x = layers.Dense(16, activation="relu", name="head_dense_relu")(x)
    x = _bn(layers, "head_after_relu_bn")(x)
    x = layers.Dense(16, name="head_dense")(x)
    x = _bn(layers, "head_dense_bn")(x)
    x = layers.Activation("tanh", name="head_tanh")(x)
    x = layers.Dense(10, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inputs, x, name="misc_ops_tiny")


def _position_embedding(keras, tokens: int, width: int):
    """A learned [1, tokens, width] table added to the tokens (one ADD of a constant)."""

    class PositionEmbedding(keras.layers.Layer):
        def build(self, input_shape):
            self.table = self.add_weight(shape=(1, tokens, width), initializer="random_normal", name="table")

        def call(self, x):
            return x + self.table

    return PositionEmbedding(name="position_embedding")


def _norm(keras, kind: str, name: str):
    if kind == "rms":
        return keras.layers.RMSNormalization(epsilon=1e-6, name=name)
    return keras.layers.LayerNormalization(epsilon=1e-6, name=name)


def _vit_tiny(keras, input_size: int | None, classifier_activation, *, norm: str, pre_norm: bool, name: str):
    """A small ViT as on-device image transformers are written: patch embedding (a 4x4
    stride-4 conv), a learned position table, 2 encoder blocks (keras MultiHeadAttention
    with 2 heads of 12, a GELU MLP of 48), a mean pool over the tokens and a dense head.
    Pre-norm: x + f(norm(x)) and a final norm before the pool; post-norm (the original
    Transformer): x = norm(x + f(x)), no final norm."""
    layers = keras.layers
    size = input_size or 16
    width, patch = 24, 4
    inputs = layers.Input(shape=(size, size, 3), batch_size=1, name="input")
    x = layers.Conv2D(width, patch, strides=patch, name="patch_embed")(inputs)
    tokens = (size // patch) ** 2
    x = layers.Reshape((tokens, width), name="tokens")(x)
    x = _position_embedding(keras, tokens, width)(x)
    for i in range(2):
        h = _norm(keras, norm, f"block{i}_norm1")(x) if pre_norm else x
        h = layers.MultiHeadAttention(num_heads=2, key_dim=width // 2, name=f"block{i}_attention")(h, h)
        x = layers.Add(name=f"block{i}_add1")([x, h])
        if not pre_norm:
            x = _norm(keras, norm, f"block{i}_norm1")(x)
        h = _norm(keras, norm, f"block{i}_norm2")(x) if pre_norm else x
        h = layers.Dense(2 * width, activation="gelu", name=f"block{i}_mlp1")(h)
        h = layers.Dense(width, name=f"block{i}_mlp2")(h)
        x = layers.Add(name=f"block{i}_add2")([x, h])
        if not pre_norm:
            x = _norm(keras, norm, f"block{i}_norm2")(x)
    if pre_norm:
        x = _norm(keras, norm, "final_norm")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    x = layers.Dense(10, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def build_vit_cls_tiny(keras, input_size: int | None, classifier_activation):
    """The other common ViT form: a learned class token before the patches, the head reading
    its row after the final norm (a STRIDED_SLICE), the tanh approximation of GELU, and a
    dynamic batch, for which the converter writes each Dense on tokens as SHAPE -> ... ->
    RESHAPE -> FULLY_CONNECTED -> RESHAPE (tf.tensordot)."""
    layers = keras.layers
    size = input_size or 16
    width, patch = 24, 4

    class ClassToken(layers.Layer):
        def build(self, input_shape):
            self.token = self.add_weight(shape=(1, 1, width), initializer="random_normal", name="token")

        def call(self, x):
            batch = keras.ops.shape(x)[0]
            return keras.ops.concatenate([keras.ops.broadcast_to(self.token, (batch, 1, width)), x], axis=1)

    def gelu_tanh(t):
        return keras.activations.gelu(t, approximate=True)

    inputs = layers.Input(shape=(size, size, 3), name="input")
    x = layers.Conv2D(width, patch, strides=patch, name="patch_embed")(inputs)
    tokens = (size // patch) ** 2
    x = layers.Reshape((tokens, width), name="tokens")(x)
    x = ClassToken(name="class_token")(x)
    x = _position_embedding(keras, tokens + 1, width)(x)
    for i in range(2):
        h = layers.LayerNormalization(epsilon=1e-5, name=f"block{i}_norm1")(x)
        h = layers.MultiHeadAttention(num_heads=3, key_dim=8, name=f"block{i}_attention")(h, h)
        x = layers.Add(name=f"block{i}_add1")([x, h])
        h = layers.LayerNormalization(epsilon=1e-5, name=f"block{i}_norm2")(x)
        h = layers.Dense(2 * width, activation=gelu_tanh, name=f"block{i}_mlp1")(h)
        h = layers.Dense(width, name=f"block{i}_mlp2")(h)
        x = layers.Add(name=f"block{i}_add2")([x, h])
    x = layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    x = x[:, 0]
    x = layers.Dense(10, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inputs, x, name="vit_cls_tiny")


def build_vit_tiny(keras, input_size: int | None, classifier_activation):
    return _vit_tiny(keras, input_size, classifier_activation, norm="layer", pre_norm=True, name="vit_tiny")


def build_vit_rms_tiny(keras, input_size: int | None, classifier_activation):
    return _vit_tiny(keras, input_size, classifier_activation, norm="rms", pre_norm=True, name="vit_rms_tiny")


def build_vit_postln_tiny(keras, input_size: int | None, classifier_activation):
    return _vit_tiny(keras, input_size, classifier_activation, norm="layer", pre_norm=False,
                     name="vit_postln_tiny")


SMALL_BUILDERS = {
    "resnet50v2_tiny": build_resnet50v2_tiny,
    "densenet_tiny": build_densenet_tiny,
    "mobilenetv2_tiny": build_mobilenetv2_tiny,
    "misc_ops_tiny": build_misc_ops_tiny,
    "vit_tiny": build_vit_tiny,
    "vit_rms_tiny": build_vit_rms_tiny,
    "vit_postln_tiny": build_vit_postln_tiny,
    "vit_cls_tiny": build_vit_cls_tiny,
}


def build_model(keras, name: str, s: Settings):
    """Build model `name` with keras' random initialization seeded by ``s.seed``."""
    keras.utils.set_random_seed(s.seed)
    activation = None if s.logits else "softmax"
    if name in SMALL_BUILDERS:
        return SMALL_BUILDERS[name](keras, s.input_size, activation)
    size = s.input_size or APPLICATION_INPUT_SIZES.get(name, 224)
    return getattr(keras.applications, name)(
        weights=None, include_top=True, classifier_activation=activation,
        input_shape=(size, size, 3))


# --------------------------------------------------------------------------------------
# Batch-norm randomization
# --------------------------------------------------------------------------------------


def iter_layers(model) -> Iterator:
    """All layers of `model`, depth-first, descending into nested models, each once."""
    seen: set[int] = set()

    def walk(container):
        for layer in getattr(container, "layers", ()):
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            yield layer
            yield from walk(layer)

    yield from walk(model)


def _count(rng, fraction: float, channels: int) -> int:
    """floor(fraction * channels + u), u ~ U(0, 1): unbiased, small layers included."""
    return min(channels, math.floor(fraction * channels + rng.uniform()))


def draw_batch_norm(rng, n: int, s) -> tuple:
    """(gamma, beta, mean, var, negated count, zeroed count) of one n-channel batch norm, drawn
    in a fixed order (the committed fixtures depend on it); zeroed and negated channels are
    disjoint."""
    gamma = rng.uniform(0.5, 1.5, n)
    beta = rng.normal(0.0, 0.5, n)
    mean = rng.normal(0.0, 0.5, n)
    var = rng.uniform(0.5, 2.0, n)
    order = rng.permutation(n)
    n_zero = _count(rng, s.zero_gamma_fraction, n)
    n_neg = min(n - n_zero, _count(rng, s.negative_gamma_fraction, n))
    gamma[order[:n_zero]] = 0.0
    gamma[order[n_zero:n_zero + n_neg]] *= -1.0
    return gamma, beta, mean, var, n_neg, n_zero


def randomize_batch_norms(keras, model, s: Settings) -> dict:
    """Give every BatchNormalization layer random statistics; return counts.

    See the module docstring for the distributions. Zeroed and negated channels are
    disjoint and chosen per layer with a numpy Generator seeded by ``s.seed``.
    """
    import numpy as np

    rng = np.random.default_rng(s.seed)
    stats = {"layers": 0, "channels": 0, "negative_gamma": 0, "zero_gamma": 0}
    for layer in iter_layers(model):
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        shape = tuple(layer.moving_mean.shape)
        n = int(np.prod(shape))
        gamma, beta, mean, var, n_neg, n_zero = draw_batch_norm(rng, n, s)
        if layer.gamma is not None:
            layer.gamma.assign(gamma.reshape(shape).astype("float32"))
        if layer.beta is not None:
            layer.beta.assign(beta.reshape(shape).astype("float32"))
        layer.moving_mean.assign(mean.reshape(shape).astype("float32"))
        layer.moving_variance.assign(var.reshape(shape).astype("float32"))
        stats["layers"] += 1
        stats["channels"] += n
        if layer.gamma is not None:
            stats["negative_gamma"] += n_neg
            stats["zero_gamma"] += n_zero
    return stats


NORM_LAYERS = ("LayerNormalization", "RMSNormalization")


def randomize_norms(keras, model, s: Settings) -> dict:
    """Give every LayerNormalization gamma and beta, and every RMSNormalization scale, the
    batch-norm draws (gamma ~ U(0.5, 1.5) with the negated and zeroed fractions, beta ~
    N(0, 0.5)), from a Generator seeded by ``s.seed + 1``: with keras' defaults (gamma 1,
    beta 0) the converter drops the affine and the graph looks like no trained model's."""
    import numpy as np

    rng = np.random.default_rng(s.seed + 1)
    stats = {"layers": 0, "channels": 0, "negative_gamma": 0, "zero_gamma": 0}
    for layer in iter_layers(model):
        if type(layer).__name__ not in NORM_LAYERS:
            continue
        gamma_var = layer.gamma if getattr(layer, "gamma", None) is not None else layer.scale
        shape = tuple(gamma_var.shape)
        n = int(np.prod(shape))
        gamma, beta, _, _, n_neg, n_zero = draw_batch_norm(rng, n, s)
        gamma_var.assign(gamma.reshape(shape).astype("float32"))
        if getattr(layer, "beta", None) is not None:
            layer.beta.assign(beta.reshape(shape).astype("float32"))
        stats["layers"] += 1
        stats["channels"] += n
        stats["negative_gamma"] += n_neg
        stats["zero_gamma"] += n_zero
    return stats


# --------------------------------------------------------------------------------------
# Conversion and inspection
# --------------------------------------------------------------------------------------


def convert(tf, model, s: Settings, quiet: bool = True) -> bytes:
    """Convert a keras model with tf.lite.TFLiteConverter.from_keras_model."""
    with captured_output(quiet) as log:
        try:
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
            if s.float16:
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.target_spec.supported_types = [tf.float16]
            if s.buffer_offsets:
                # Experimental: constants go after the flatbuffer (Buffer.offset/size).
                converter._experimental_use_buffer_offset = True
            return bytes(converter.convert())
        except Exception as exc:
            tail = log().strip().splitlines()[-5:]
            detail = f" (converter log tail: {' | '.join(tail)})" if tail else ""
            raise GenerationError(f"conversion failed: {type(exc).__name__}: "
                                  f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                                  f"{detail}") from exc


def read_op_histogram(schema, data: bytes) -> tuple:
    """(the flatbuffer's Model, its op histogram in first-appearance order), read with a
    generated schema module (tensorflow's or LiteRT's)."""
    model = schema.Model.GetRootAs(data, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        codes.append(names.get(code, f"CODE_{code}"))
    histogram: Counter = Counter()
    for g in range(model.SubgraphsLength()):
        sub = model.Subgraphs(g)
        for i in range(sub.OperatorsLength()):
            histogram[codes[sub.Operators(i).OpcodeIndex()]] += 1
    return model, histogram


def inspect_flatbuffer(data: bytes) -> dict:
    """Op histogram (first-appearance order) and buffer facts read from the file itself.

    Uses the schema reader that ships with tensorflow (no extra dependency).
    """
    from tensorflow.lite.python import schema_py_generated as schema

    model, histogram = read_op_histogram(schema, data)
    offset_buffers = 0
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        if buf.Offset() > 1:
            if buf.Offset() + buf.Size() > len(data):
                raise GenerationError(f"buffer {i} points past the end of the file")
            offset_buffers += 1
    metadata = [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]
    return {
        "num_ops": sum(histogram.values()),
        "op_histogram": dict(histogram),
        "subgraphs": model.SubgraphsLength(),
        "buffers": model.BuffersLength(),
        "offset_buffers": offset_buffers,
        "metadata": metadata,
    }


def run_interpreter(tf, keras, model, data: bytes, seed: int) -> dict:
    """Run the .tflite model (reference kernels, no delegate) and compare with keras.

    Returns the op histogram as the interpreter sees it and the error versus keras
    relative to the largest reference output.
    """
    import numpy as np

    resolver = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with captured_output() as _:
        interp = tf.lite.Interpreter(model_content=data, experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    if any(d < 0 for d in inp["shape_signature"][1:]):
        raise GenerationError(f"dynamic input shape {inp['shape_signature'].tolist()}")
    x = np.random.default_rng(seed).normal(0.0, 1.0, inp["shape"]).astype(np.float32)
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    got = interp.get_tensor(out["index"])
    want = np.asarray(model(x, training=False))
    if not np.all(np.isfinite(got)):
        raise GenerationError("interpreter output is not finite")
    scale = float(np.max(np.abs(want)))
    err = float(np.max(np.abs(got - want)))
    ops = Counter(op["op_name"] for op in interp._get_ops_details())
    return {
        "input_shape": [int(d) for d in inp["shape"]],
        "output_shape": [int(d) for d in out["shape"]],
        "interpreter_histogram": dict(ops),
        "max_abs_output": scale,
        "max_abs_error_vs_keras": err,
        "relative_error_vs_keras": err / scale if scale else err,
    }


def check_histogram(job: Job, histogram: dict) -> None:
    """Compare with EXPECTED_HISTOGRAMS where the model's structure is known."""
    expected = EXPECTED_HISTOGRAMS.get(job.model)
    if expected is None or job.settings.input_size is not None:
        return
    got = {k: v for k, v in histogram.items() if not (job.settings.float16 and k == "DEQUANTIZE")}
    if got != expected:
        raise GenerationError(f"{job.stem}: op histogram {format_histogram(got)} differs "
                              f"from the expected {format_histogram(expected)}")


def format_histogram(h: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in h.items())


def report_record(prog: str, rec: dict, out_dir: Path, detail: str, reference: str, max_bytes: int | None) -> bool:
    """Print one model's record; False (after an error line) when it is a fixture over `max_bytes`."""
    bn = rec["batch_norm"]
    print(f"{out_dir / rec['file']}: {rec['size_bytes']:,} bytes, {rec['num_ops']} ops, "
          f"input {rec['input_shape']}{detail}")
    print(f"  ops: {format_histogram(rec['op_histogram'])}")
    print(f"  batch norm: {bn['layers']} layers, {bn['channels']} channels, "
          f"{bn['negative_gamma']} negative and {bn['zero_gamma']} zero gammas; "
          f"vs {reference} {rec['check'][f'relative_error_vs_{reference}']:.1e} of output scale")
    if "norm" in rec:
        norm = rec["norm"]
        print(f"  layer/RMS norm: {norm['layers']} layers, {norm['channels']} channels, "
              f"{norm['negative_gamma']} negative and {norm['zero_gamma']} zero gammas")
    if max_bytes is not None and rec["size_bytes"] > max_bytes:
        print(f"{prog}: error: fixture {rec['file']} exceeds {max_bytes:,} bytes", file=sys.stderr)
        return False
    return True


def report_total(prog: str, total: int, count: int, max_bytes: int | None) -> bool:
    """Print the total; False (after an error line) when a fixture set is over `max_bytes`."""
    print(f"total: {total:,} bytes in {count} model(s)")
    if max_bytes is not None and total > max_bytes:
        print(f"{prog}: error: fixture set exceeds {max_bytes:,} bytes", file=sys.stderr)
        return False
    return True


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------


def generate(tf, keras, job: Job, out_dir: Path, quiet: bool = True) -> dict:
    """Build, randomize, convert, verify and write one model; return its record."""
    import numpy as np

    s = job.settings
    try:
        with captured_output(quiet):
            model = build_model(keras, job.model, s)
    except (ValueError, TypeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GenerationError(f"{job.model}: cannot build: {first_line}") from exc
    bn = randomize_batch_norms(keras, model, s)
    norms = randomize_norms(keras, model, s)
    data = convert(tf, model, s, quiet)
    info = inspect_flatbuffer(data)
    check = run_interpreter(tf, keras, model, data, s.seed)
    if check["interpreter_histogram"] != info["op_histogram"]:
        raise GenerationError(f"{job.stem}: interpreter sees "
                              f"{format_histogram(check['interpreter_histogram'])}, the file has "
                              f"{format_histogram(info['op_histogram'])}")
    tolerance = 1e-2 if s.float16 else 1e-4
    if check["relative_error_vs_keras"] > tolerance:
        raise GenerationError(f"{job.stem}: TFLite differs from keras by "
                              f"{check['relative_error_vs_keras']:.2e} of the output scale")
    if s.buffer_offsets and info["offset_buffers"] == 0:
        raise GenerationError(f"{job.stem}: no buffer uses an offset; the converter ignored "
                              "_experimental_use_buffer_offset")
    check_histogram(job, info["op_histogram"])

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{job.stem}.tflite"
    path.write_bytes(data)
    record = {
        "file": path.name,
        "model": job.model,
        "generator": "examples/make_models.py",
        "settings": dataclasses.asdict(s),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "numpy": np.__version__},
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "batch_norm": bn,
        **({"norm": norms} if norms["layers"] else {}),
        "input_shape": check["input_shape"],
        "output_shape": check["output_shape"],
        "num_ops": info["num_ops"],
        "op_histogram": info["op_histogram"],
        "buffers": info["buffers"],
        "offset_buffers": info["offset_buffers"],
        "metadata": info["metadata"],
        "check": {k: check[k] for k in ("max_abs_output", "max_abs_error_vs_keras",
                                        "relative_error_vs_keras")},
    }
    (out_dir / f"{job.stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def resolve_model_name(name: str) -> str:
    """Canonical spelling of a model name (case-insensitive), or raise ValueError."""
    known = {n.lower(): n for n in (*APPLICATIONS, *SMALL_MODELS)}
    try:
        return known[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r} (see --list)") from None


def list_models() -> str:
    committed = {}
    for job in FIXTURE_SET:
        committed.setdefault(job.model, []).append(job.stem)
    lines = ["keras.applications models (weights=None, default input size, not committed):"]
    lines += [f"  {n}" for n in APPLICATIONS]
    lines.append("small models (committed fixtures under examples/models/):")
    for name, desc in SMALL_MODELS.items():
        lines.append(f"  {name:18s} {desc}")
        lines.append(f"  {'':18s} fixtures: {', '.join(committed.get(name, []))}")
    return "\n".join(lines)


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1]")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Build keras models with randomized batch-norm statistics, convert "
                    "them with the TFLite converter, verify them with tf.lite.Interpreter "
                    "and write DIR/<name>.tflite plus a DIR/<name>.json sidecar.",
        epilog="File names get suffixes for non-default settings: _<input size>, _mixed "
               "(negative or zero gammas), _logits, _f16, _offsets. "
               "Requires tensorflow: " + CONVERT_HINT,
    )
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="model names (case-insensitive); see --list")
    p.add_argument("--list", action="store_true", help="list the model names and exit")
    p.add_argument("--all-fixtures", action="store_true",
                   help="regenerate exactly the committed fixture set (fixed seed and "
                        "settings) into --out-dir, default examples/models/")
    p.add_argument("--out-dir", type=Path, metavar="DIR", help="output directory")
    p.add_argument("--name", metavar="STEM",
                   help="output file stem instead of the derived one (one MODEL only)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for keras weights, batch-norm statistics and test input "
                        "(default 0)")
    p.add_argument("--negative-gamma-fraction", type=fraction, default=0.0, metavar="F",
                   help="fraction of batch-norm channels whose gamma is negated (default 0)")
    p.add_argument("--zero-gamma-fraction", type=fraction, default=0.0, metavar="F",
                   help="fraction of batch-norm channels whose gamma is exactly 0 (default 0)")
    p.add_argument("--float16", action="store_true",
                   help="float16 weights (Optimize.DEFAULT + supported_types=[float16]); "
                        "the model gets DEQUANTIZE ops")
    p.add_argument("--buffer-offsets", action="store_true",
                   help="store constants after the flatbuffer (Buffer.offset/size) via the "
                        "converter's experimental _experimental_use_buffer_offset")
    p.add_argument("--input-size", type=positive_int, metavar="N",
                   help="square input N x N x 3 instead of each model's default")
    p.add_argument("--logits", action="store_true",
                   help="classifier_activation=None (logits) instead of softmax")
    p.add_argument("--verbose", action="store_true",
                   help="show the converter's own output")
    return p


def jobs_from_args(p: argparse.ArgumentParser, args) -> tuple[list[Job], Path]:
    """Turn parsed arguments into jobs; usage errors exit via p.error (status 2)."""
    settings = Settings(seed=args.seed,
                        negative_gamma_fraction=args.negative_gamma_fraction,
                        zero_gamma_fraction=args.zero_gamma_fraction,
                        float16=args.float16, buffer_offsets=args.buffer_offsets,
                        logits=args.logits, input_size=args.input_size)
    return checked_jobs(p, args, settings, settings != Settings(), FIXTURE_SET, DEFAULT_FIXTURE_DIR,
                        resolve_model_name, lambda name: Job(name, settings, args.name or default_stem(name, settings)))


def checked_jobs(p: argparse.ArgumentParser, args, settings, settings_given: bool, fixture_set, fixture_dir: Path,
                 resolve: Callable[[str], str], job_for: Callable[[str], object]) -> tuple[list, Path]:
    """The jobs the arguments ask for (both scripts' rules); usage errors exit via p.error (status 2)."""
    if args.all_fixtures:
        if args.models or args.name or settings_given:
            p.error("--all-fixtures takes no MODEL, --name or model settings; it uses "
                    "the fixed settings of the committed set")
        return list(fixture_set), args.out_dir or fixture_dir
    if not args.models:
        p.error("give at least one MODEL, --all-fixtures or --list")
    if args.out_dir is None:
        p.error("--out-dir is required")
    if args.name and len(args.models) != 1:
        p.error("--name needs exactly one MODEL")
    if settings.negative_gamma_fraction + settings.zero_gamma_fraction > 1.0:
        p.error("--negative-gamma-fraction plus --zero-gamma-fraction exceeds 1")
    try:
        names = [resolve(m) for m in args.models]
    except ValueError as exc:
        p.error(str(exc))
    jobs = [job_for(n) for n in names]
    stems = [j.stem for j in jobs]
    if len(set(stems)) != len(stems):
        p.error("two models would be written to the same file")
    return jobs, args.out_dir


def torch_route(argv: list[str]) -> bool:
    """True when argv names a PyTorch model or a --converter: make_torch_models.py's job.

    Keras and PyTorch model names cannot be mixed in one call (usage error, status 2).
    """
    from make_torch_models import MODEL_NAMES as TORCH_MODELS

    torch_names = {n.lower() for n in TORCH_MODELS}
    names = [a for a in argv if not a.startswith("-")]
    torch_given = [a for a in names if a.lower() in torch_names]
    keras_names = {n.lower() for n in (*APPLICATIONS, *SMALL_MODELS)}
    keras_given = [a for a in names if a.lower() in keras_names]
    if torch_given and keras_given:
        build_parser().error(f"PyTorch models ({', '.join(torch_given)}) and keras models "
                             f"({', '.join(keras_given)}) cannot be made in one call")
    return bool(torch_given) or any(a == "--converter" or a.startswith("--converter=")
                                    for a in argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if torch_route(argv):
        import make_torch_models  # the PyTorch route: timm / hand-written nets, two converters
        return make_torch_models.main(argv)
    p = build_parser()
    args = p.parse_args(argv)
    if args.list:
        print(list_models())
        print("PyTorch models (delegated to examples/make_torch_models.py): "
              "python examples/make_torch_models.py --list")
        return 0
    jobs, out_dir = jobs_from_args(p, args)
    tf, keras = import_tensorflow()

    total = 0
    for job in jobs:
        try:
            rec = generate(tf, keras, job, out_dir, quiet=not args.verbose)
        except GenerationError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 1
        total += rec["size_bytes"]
        if not report_record(PROG, rec, out_dir, f", offset buffers {rec['offset_buffers']}", "keras",
                             FIXTURE_MAX_BYTES if args.all_fixtures else None):
            return 1
    return 0 if report_total(PROG, total, len(jobs), FIXTURE_SET_MAX_BYTES if args.all_fixtures else None) else 1


if __name__ == "__main__":
    sys.exit(main())
