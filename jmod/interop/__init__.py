"""Weights in from PyTorch, safetensors and Keras 3 files; models out to ONNX.

Optional dependencies (`pip install 'jmod[interop]'`) are imported only when
a function needs them: `safetensors` for `.safetensors`, `h5py` for Keras
files, `jax2onnx` and `onnxruntime` for ONNX, and an installed `torch` only to
read `.pt`/`.pth` files. Nothing here executes code from a file.

Example:
    >>> model = jmod.Sequential([jmod.Input(shape=[2]), jmod.layers.Dense(1)])
    >>> sd = {"0.weight": np.array([[2.0, 3.0]]), "0.bias": np.array([1.0])}
    >>> _ = jmod.interop.load_torch_state_dict(model, sd)
    >>> model(jnp.array([[1.0, 1.0]])).tolist()
    [[6.0]]
"""

from jmod.errors import InteropError
from jmod.interop.keras import load_keras_weights, model_from_keras
from jmod.interop.matching import LoadReport
from jmod.interop.onnx import export_onnx
from jmod.interop.safetensors import load_safetensors, save_safetensors
from jmod.interop.torch import load_torch_state_dict

__all__ = [
    "InteropError",
    "export_onnx",
    "LoadReport",
    "load_keras_weights",
    "load_safetensors",
    "load_torch_state_dict",
    "model_from_keras",
    "save_safetensors",
]
