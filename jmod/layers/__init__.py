"""Keras-style layers built on `jmod.Module`."""

from jmod.layers.activation import Activation
from jmod.layers.attention import MultiHeadAttention
from jmod.layers.conv import Conv1D, Conv2D, Conv3D
from jmod.layers.conv_transpose import (
    Conv1DTranspose,
    Conv2DTranspose,
    DepthwiseConv2D,
    SeparableConv2D,
)
from jmod.layers.dense import Dense
from jmod.layers.dropout import Dropout
from jmod.layers.embedding import Embedding
from jmod.layers.layer import InputSpec, Layer, reset_names
from jmod.layers.merging import (
    Add,
    Average,
    Concatenate,
    Maximum,
    Minimum,
    Multiply,
    Subtract,
)
from jmod.layers.normalization import BatchNormalization, LayerNormalization
from jmod.layers.policy import DTypePolicy, dtype_policy, set_dtype_policy
from jmod.layers.pooling import (
    AveragePooling1D,
    AveragePooling2D,
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    MaxPooling1D,
    MaxPooling2D,
)
from jmod.layers.recurrent import (
    GRU,
    LSTM,
    RNN,
    GRUCell,
    LSTMCell,
    SimpleRNN,
    SimpleRNNCell,
)
from jmod.layers.repeat import Repeat
from jmod.layers.reshaping import Flatten, Reshape

__all__ = [
    "Activation",
    "Add",
    "Average",
    "AveragePooling1D",
    "AveragePooling2D",
    "BatchNormalization",
    "Concatenate",
    "Conv1D",
    "Conv1DTranspose",
    "Conv2D",
    "Conv2DTranspose",
    "Conv3D",
    "DepthwiseConv2D",
    "DTypePolicy",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "RNN",
    "SimpleRNN",
    "SimpleRNNCell",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "InputSpec",
    "Layer",
    "LayerNormalization",
    "MaxPooling1D",
    "MaxPooling2D",
    "Maximum",
    "Minimum",
    "Multiply",
    "MultiHeadAttention",
    "Repeat",
    "Reshape",
    "SeparableConv2D",
    "Subtract",
    "dtype_policy",
    "reset_names",
    "set_dtype_policy",
]
