"""Keras-style layers built on `jmod.Module`."""

from jmod.layers.layer import InputSpec, Layer, reset_names
from jmod.layers.policy import DTypePolicy, dtype_policy, set_dtype_policy

__all__ = ["DTypePolicy", "InputSpec", "Layer", "dtype_policy", "reset_names", "set_dtype_policy"]
