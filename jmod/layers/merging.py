"""Layers that merge a list of inputs: `Concatenate`, `Add` and the other elementwise ones."""

import functools

import jax.numpy as jnp

from jmod.errors import SerializationError
from jmod.layers import _common as c
from jmod.layers.layer import Layer


def _shapes(input_shape):
    """The list of input shapes, or a ValueError if the layer did not get a list."""
    if not isinstance(input_shape, (list, tuple)) or not all(
        isinstance(s, (list, tuple)) for s in input_shape
    ):
        raise ValueError(f"expected a list of inputs, got one input of shape {input_shape}")
    return [tuple(s) for s in input_shape]


def _broadcast_shape(shapes):
    """The shape elementwise ops give (None = unknown); ValueError if incompatible."""
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        sizes = {s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0} - {1}
        known = sizes - {None}
        if len(known) > 1:
            raise ValueError(f"inputs of shapes {shapes} cannot be combined elementwise")
        out.append(known.pop() if known else (None if None in sizes else 1))
    return tuple(out)


class _Merge(Layer):
    """An elementwise merge of two or more inputs (broadcasting like NumPy)."""

    # Subtract takes exactly two inputs.
    _exactly_two = False

    def build(self, input_shape):
        self.compute_output_shape(input_shape)

    def call(self, inputs):
        self.compute_output_shape([x.shape for x in inputs])
        return self._merge(list(inputs))

    def _check_count(self, n):
        if self._exactly_two and n != 2:
            raise ValueError(f"expected exactly 2 inputs, got {n}")
        if n < 2:
            raise ValueError(f"expected a list of at least 2 inputs, got {n}")

    def compute_output_shape(self, input_shape):
        shapes = _shapes(input_shape)
        self._check_count(len(shapes))
        return _broadcast_shape(shapes)

    def get_config(self):
        return c.base_config(self)


class Add(_Merge):
    """The elementwise sum of a list of inputs.

    Example:
        >>> jmod.layers.Add()([jnp.ones((2, 3)), 2 * jnp.ones((2, 3))]).tolist()
        [[3.0, 3.0, 3.0], [3.0, 3.0, 3.0]]
    """

    def _merge(self, xs):
        return functools.reduce(jnp.add, xs)


class Subtract(_Merge):
    """`inputs[0] - inputs[1]`, for exactly two inputs.

    Example:
        >>> jmod.layers.Subtract()([jnp.ones((1, 2)), jnp.ones((1, 2))]).tolist()
        [[0.0, 0.0]]
    """

    _exactly_two = True

    def _merge(self, xs):
        return xs[0] - xs[1]


class Multiply(_Merge):
    """The elementwise product of a list of inputs.

    Example:
        >>> jmod.layers.Multiply()([jnp.full((1, 2), 2.0), jnp.full((1, 2), 3.0)]).tolist()
        [[6.0, 6.0]]
    """

    def _merge(self, xs):
        return functools.reduce(jnp.multiply, xs)


class Average(_Merge):
    """The elementwise mean of a list of inputs.

    Example:
        >>> jmod.layers.Average()([jnp.zeros((1, 2)), jnp.full((1, 2), 4.0)]).tolist()
        [[2.0, 2.0]]
    """

    def _merge(self, xs):
        return functools.reduce(jnp.add, xs) / len(xs)


class Maximum(_Merge):
    """The elementwise maximum of a list of inputs.

    Example:
        >>> jmod.layers.Maximum()([jnp.array([[1.0, 5.0]]), jnp.array([[3.0, 2.0]])]).tolist()
        [[3.0, 5.0]]
    """

    def _merge(self, xs):
        return functools.reduce(jnp.maximum, xs)


class Minimum(_Merge):
    """The elementwise minimum of a list of inputs.

    Example:
        >>> jmod.layers.Minimum()([jnp.array([[1.0, 5.0]]), jnp.array([[3.0, 2.0]])]).tolist()
        [[1.0, 2.0]]
    """

    def _merge(self, xs):
        return functools.reduce(jnp.minimum, xs)


class Concatenate(Layer):
    """Joins a list of inputs along `axis`; the other axes must match.

    Example:
        >>> layer = jmod.layers.Concatenate()
        >>> layer([jnp.ones((2, 3)), jnp.zeros((2, 1))]).shape
        (2, 4)

    Args:
        axis: the axis to join along, by default the last.
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise SerializationError(f"{c.where(self)}: axis must be an int, got {axis!r}")
        self.axis = axis

    def build(self, input_shape):
        self.compute_output_shape(input_shape)

    def call(self, inputs):
        self.compute_output_shape([x.shape for x in inputs])
        return jnp.concatenate(list(inputs), axis=self.axis)

    def compute_output_shape(self, input_shape):
        shapes = _shapes(input_shape)
        if len(shapes) < 2:
            raise ValueError(f"expected at least 2 inputs, got {len(shapes)}")
        rank = len(shapes[0])
        if any(len(s) != rank for s in shapes) or not -rank <= self.axis < rank:
            raise ValueError(
                f"inputs of shapes {shapes} cannot be concatenated along axis {self.axis}: "
                "they need one rank that has that axis"
            )
        axis = self.axis % rank
        out = []
        for i in range(rank):
            sizes = [s[i] for s in shapes]
            if i == axis:
                out.append(None if None in sizes else sum(sizes))
                continue
            known = {d for d in sizes if d is not None}
            if len(known) > 1:
                raise ValueError(
                    f"inputs of shapes {shapes} cannot be concatenated along axis {self.axis}: "
                    f"axis {i} differs"
                )
            out.append(known.pop() if known else None)
        return tuple(out)

    def get_config(self):
        return {**c.base_config(self), "axis": self.axis}
