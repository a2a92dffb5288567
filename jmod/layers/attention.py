"""`MultiHeadAttention`: scaled dot-product attention with several heads."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from jmod import random as jrandom
from jmod.errors import SerializationError
from jmod.layers import _common as c
from jmod.layers.dropout import dropout as _dropout
from jmod.layers.layer import InputSpec, Layer


def _as_array(x):
    return x if hasattr(x, "dtype") else jnp.asarray(x)


class MultiHeadAttention(Layer):
    """Multi-head attention (Vaswani et al.), with Keras' arguments and weight shapes.

    `query`, `value` (and `key`, by default `value`) are projected to
    `num_heads` heads; each head computes `softmax(q k^T / sqrt(key_dim)) v`;
    the heads are projected back to `output_shape` (by default the query's
    feature size). Inputs are `(batch, *steps, features)`; attention runs
    over all the `steps` axes together (Keras' `attention_axes=None`).

    `attention_mask` (boolean, shape `(batch, *query_steps, *value_steps)` or
    broadcastable to it) says which value steps each query step may attend
    to; a query step that may attend to none gets all-zero attention. The
    softmax is computed in float32 under mixed precision. Dropout on the
    attention probabilities is active only with `training=True`.

    Example:
        >>> mha = jmod.layers.MultiHeadAttention(num_heads=2, key_dim=4)
        >>> q, v = jnp.ones((1, 3, 8)), jnp.ones((1, 5, 16))
        >>> out, scores = mha(q, v, return_attention_scores=True)
        >>> out.shape, scores.shape
        ((1, 3, 8), (1, 2, 3, 5))

    Args:
        num_heads: the number of attention heads.
        key_dim: the size of each head's query and key projection.
        value_dim: the size of each head's value projection; by default `key_dim`.
        dropout: dropout rate on the attention probabilities, in [0, 1).
        use_bias: whether the four projections have biases.
        output_shape: the output's feature size (an int or a tuple); by default
            the query's last dimension.
        kernel_initializer, bias_initializer: initializers of the projections.
        kernel_regularizer, bias_regularizer: penalties added to `losses`.
        seed: an int for a layer-owned dropout generator, or None for the global one.
        kernel_constraint, bias_constraint: applied after each optimizer update.
        attention_axes: the axes attention runs over; only all the step axes
            (Keras' default, `[1]` for sequences) are supported yet.
        use_gate, sliding_window: Keras config keys; only False and None are supported.

    Call arguments:
        query: `(batch, *query_steps, query_features)`.
        value: `(batch, *value_steps, value_features)`.
        key: `(batch, *value_steps, key_features)`; by default `value`.
        attention_mask: booleans, True where attention is allowed.
        return_attention_scores: also return the `(batch, heads, *query_steps,
            *value_steps)` attention probabilities (before dropout).
        training: whether dropout is active.
        use_causal_mask: forbid query step `i` to attend to value steps after `i`.
        query_mask, value_mask, key_mask: padding masks `(batch, steps)` (as
            `Embedding(mask_zero=True)` makes), combined into the attention mask
            as Keras does: masked query rows attend to nothing, masked value/key
            steps are never attended to.
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_shape=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        seed=None,
        kernel_constraint=None,
        bias_constraint=None,
        attention_axes=None,
        use_gate=False,
        sliding_window=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kernel_constraint = c.constraint(self, "kernel_constraint", kernel_constraint)
        self.bias_constraint = c.constraint(self, "bias_constraint", bias_constraint)
        if use_gate or sliding_window is not None:
            raise SerializationError(
                f"{c.where(self)}: use_gate and sliding_window are not supported yet (got "
                f"{use_gate!r}, {sliding_window!r})"
            )
        self.attention_axes = (
            None if attention_axes is None else c.check_axis(self, attention_axes, "attention_axes")
        )
        self.num_heads = c.check_int(self, "num_heads", num_heads)
        self.key_dim = c.check_int(self, "key_dim", key_dim)
        self.value_dim = (
            self.key_dim if value_dim is None else c.check_int(self, "value_dim", value_dim)
        )
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float))
            or not 0 <= dropout < 1
        ):
            raise SerializationError(
                f"{c.where(self)}: dropout must be a number in [0, 1), got {dropout!r}"
            )
        self.dropout = float(dropout)
        self.use_bias = bool(use_bias)
        if output_shape is None:
            self._output_shape = None
        elif isinstance(output_shape, int) and not isinstance(output_shape, bool):
            self._output_shape = (c.check_int(self, "output_shape", output_shape),)
        else:
            dims = _sequence(self, output_shape)
            self._output_shape = tuple(c.check_int(self, "output_shape", d) for d in dims)
        self.kernel_initializer = c.initializer(self, "kernel_initializer", kernel_initializer)
        self.bias_initializer = c.initializer(self, "bias_initializer", bias_initializer)
        self.kernel_regularizer = c.regularizer(self, "kernel_regularizer", kernel_regularizer)
        self.bias_regularizer = c.regularizer(self, "bias_regularizer", bias_regularizer)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise SerializationError(f"{c.where(self)}: seed must be an int or None, got {seed!r}")
        self.seed = seed
        if seed is not None:
            self.generator = jrandom.Generator(seed)
        self.input_spec = InputSpec(min_ndim=3)

    def build(self, input_shape):
        # The key and value projections need the value's shape too, which
        # `build` does not get: all projections are made on the first call
        # (as Keras 2 did), see `_build_from_signature`.
        pass

    def _build_from_signature(self, query_shape, value_shape, key_shape):
        rank = len(query_shape)
        if self.attention_axes is not None:
            axes = sorted(a % rank for a in self.attention_axes)
            if axes != list(range(1, rank - 1)):
                raise ValueError(
                    f"attention_axes={list(self.attention_axes)} for inputs of rank {rank}: only "
                    f"attention over all step axes {list(range(1, rank - 1))} is supported yet"
                )
        h = self.num_heads
        out_shape = self._output_shape or (query_shape[-1],)
        projections = (
            ("query", query_shape[-1], (h, self.key_dim)),
            ("key", key_shape[-1], (h, self.key_dim)),
            ("value", value_shape[-1], (h, self.value_dim)),
        )
        for name, features, per_head in projections:
            self._add_projection(name, (features, *per_head), per_head)
        self._add_projection("output", (h, self.value_dim, *out_shape), out_shape)
        self.input_spec = InputSpec(min_ndim=3, axes={-1: query_shape[-1]})

    def _add_projection(self, name, kernel_shape, bias_shape):
        self.add_weight(
            f"{name}_kernel",
            kernel_shape,
            self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.add_weight(
                f"{name}_bias",
                bias_shape,
                self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def _project(self, name, x):
        # (batch, steps, features) @ (features, heads, dim) -> (batch, steps, heads, dim)
        out = jnp.einsum("bsf,fnh->bsnh", x, self._cast(getattr(self, f"{name}_kernel")))
        if self.use_bias:
            out = out + self._cast(getattr(self, f"{name}_bias"))
        return out

    def call(
        self,
        query,
        value,
        key=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
        query_mask=None,
        value_mask=None,
        key_mask=None,
    ):
        value = self._cast(_as_array(value))
        key = value if key is None else self._cast(_as_array(key))
        if "query_kernel" not in self.__dict__:
            self._build_from_signature(query.shape, value.shape, key.shape)
        self._check_shapes(query.shape, value.shape, key.shape)
        batch, q_steps, v_steps = query.shape[0], query.shape[1:-1], value.shape[1:-1]
        t, s = math.prod(q_steps), math.prod(v_steps)
        # All step axes attend together: flatten them to one axis each.
        q = self._project("query", jnp.reshape(query, (batch, t, query.shape[-1])))
        k = self._project("key", jnp.reshape(key, (batch, s, key.shape[-1])))
        v = self._project("value", jnp.reshape(value, (batch, s, value.shape[-1])))
        q = q * jnp.asarray(1.0 / math.sqrt(self.key_dim), q.dtype)
        logits = jnp.einsum("btnh,bsnh->bnts", q, k).astype(jnp.float32)

        attention_mask = _padding_mask(attention_mask, query_mask, value_mask, key_mask)
        mask = self._mask(attention_mask, use_causal_mask, batch, q_steps, v_steps)
        if mask is not None:
            logits = jnp.where(mask, logits, jnp.float32(-1e9))
        probs = jax.nn.softmax(logits, axis=-1)
        if mask is not None:
            # Fully masked rows attend to nothing (not uniformly to everything).
            probs = jnp.where(mask, probs, 0.0)
        probs = probs.astype(q.dtype)

        attended = probs
        if training and self.dropout > 0:
            key_ = jrandom.next_key(self.__dict__.get("generator"))
            attended = _dropout(probs, self.dropout, key_)
        heads = jnp.einsum("bnts,bsnh->btnh", attended, v)
        kernel = self._cast(self.output_kernel)
        out_shape = kernel.shape[2:]
        out = jnp.einsum("btnh,nho->bto", heads, jnp.reshape(kernel, (*kernel.shape[:2], -1)))
        out = jnp.reshape(out, (batch, *q_steps, *out_shape))
        if self.use_bias:
            out = out + self._cast(self.output_bias)
        if return_attention_scores:
            return out, jnp.reshape(probs, (batch, self.num_heads, *q_steps, *v_steps))
        return out

    def _check_shapes(self, query_shape, value_shape, key_shape):
        expected = {
            "value": (value_shape, self.value_kernel.shape[0]),
            "key": (key_shape, self.key_kernel.shape[0]),
        }
        for label, (shape, features) in expected.items():
            if len(shape) < 3 or shape[-1] != features:
                raise ValueError(
                    f"expected {label} of shape (batch, *steps, {features}), got {tuple(shape)}"
                )
        if key_shape[:-1] != value_shape[:-1] or value_shape[0] != query_shape[0]:
            raise ValueError(
                f"query, value and key must share the batch size, and key and value their "
                f"steps; got query {tuple(query_shape)}, value {tuple(value_shape)}, "
                f"key {tuple(key_shape)}"
            )

    def _mask(self, attention_mask, use_causal_mask, batch, q_steps, v_steps):
        """The (batch, 1, T, S) boolean mask, or None."""
        t, s = math.prod(q_steps), math.prod(v_steps)
        mask = None
        if attention_mask is not None:
            m = _as_array(attention_mask)
            full = (batch, *q_steps, *v_steps)
            try:
                m = jnp.broadcast_to(m.astype(bool), full)
            except ValueError:
                raise ValueError(
                    f"attention_mask of shape {tuple(m.shape)} does not broadcast to "
                    f"(batch, *query_steps, *value_steps) = {full}"
                ) from None
            mask = jnp.reshape(m, (batch, 1, t, s))
        if use_causal_mask:
            causal = jnp.asarray(np.tril(np.ones((t, s), bool)))[None, None]
            mask = causal if mask is None else mask & causal
        return mask

    def compute_mask(self, inputs, mask=None):
        """The query's padding mask (the output has the query's steps), as Keras."""
        if isinstance(mask, (list, tuple)):
            return mask[0] if mask else None
        return mask

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        return (*input_shape[:-1], *(self._output_shape or (input_shape[-1],)))

    def get_config(self):
        return {
            **c.base_config(self),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "output_shape": list(self._output_shape) if self._output_shape else None,
            "kernel_initializer": c.serialize_initializer(
                self, "kernel_initializer", self.kernel_initializer
            ),
            "bias_initializer": c.serialize_initializer(
                self, "bias_initializer", self.bias_initializer
            ),
            "kernel_regularizer": c.serialize_regularizer(
                self, "kernel_regularizer", self.kernel_regularizer
            ),
            "bias_regularizer": c.serialize_regularizer(
                self, "bias_regularizer", self.bias_regularizer
            ),
            "seed": self.seed,
            "attention_axes": list(self.attention_axes) if self.attention_axes else None,
            "kernel_constraint": c.serialize_constraint(
                self, "kernel_constraint", self.kernel_constraint
            ),
            "bias_constraint": c.serialize_constraint(
                self, "bias_constraint", self.bias_constraint
            ),
        }


def _padding_mask(attention_mask, query_mask, value_mask, key_mask):
    """Keras' combination: query steps (batch, T) x value/key steps (batch, S), and-ed in."""
    auto = None
    if query_mask is not None:
        auto = _as_array(query_mask).astype(bool)[:, :, None]
    for m in (value_mask, key_mask):
        if m is not None:
            m = _as_array(m).astype(bool)[:, None, :]
            auto = m if auto is None else auto & m
    if auto is None:
        return attention_mask
    return auto if attention_mask is None else _as_array(attention_mask).astype(bool) & auto


def _sequence(layer, value):
    try:
        dims = tuple(value)
    except TypeError:
        dims = ()
    if not dims:
        raise SerializationError(
            f"{c.where(layer)}: output_shape must be an int or a sequence of ints, got {value!r}"
        )
    return dims
