"""Fusion passes: a registry by name (as in ONE's circle2circle) and the manager that
applies them with a jit-compiled equivalence check per rewrite."""
from .base import PASSES, Pass, Refusal, Rewrite, register_pass
from . import (canonicalize_scale_shift, fuse_activation_function, fuse_add_with_conv,  # noqa: F401  (registers)
               fuse_add_with_fullyconnected, fuse_add_with_tconv, fuse_batchnorm_with_conv, fuse_batchnorm_with_dwconv,
               fuse_batchnorm_with_tconv, fuse_mul_with_conv, fuse_mul_with_fullyconnected,
               fuse_preactivation_batchnorm, fold_norm_affine)
from .manager import OptimizationReport, PassReport, optimize

# Chains of per-channel elementwise ops become MUL -> ADD first (the form the batch-norm
# passes match), then LayerNorm / RMSNorm affines go into the linear layers reading them, then the post-activation folds (they remove a batch norm entirely), then
# the pre-activation fold, then activations; the manager repeats the list until nothing changes.
DEFAULT_PIPELINE = [
    "canonicalize_scale_shift", "fold_norm_affine",
    "fuse_batchnorm_with_conv", "fuse_batchnorm_with_dwconv", "fuse_batchnorm_with_tconv",
    "fuse_mul_with_conv", "fuse_add_with_conv", "fuse_add_with_tconv",
    "fuse_mul_with_fullyconnected", "fuse_add_with_fullyconnected",
    "fuse_preactivation_batchnorm", "fuse_activation_function",
]

__all__ = ["DEFAULT_PIPELINE", "OptimizationReport", "PASSES", "Pass", "PassReport", "Refusal", "Rewrite",
           "optimize", "register_pass"]
