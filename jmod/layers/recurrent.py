"""Recurrent layers: `SimpleRNN`, `GRU`, `LSTM`, their cells, and `RNN` over any cell.

The time loop is one `jax.lax.scan`. Weights have Keras' layout:
`kernel (features, gates * units)`, `recurrent_kernel (units, gates * units)`,
`bias`, the gates in Keras' order (LSTM: input, forget, cell, output; GRU:
update, reset, candidate), so Keras weights load as they are.
"""

import jax
import jax.numpy as jnp

from jmod import random as jrandom
from jmod.errors import SerializationError
from jmod.layers import _common as c
from jmod.layers.dropout import dropout as _dropout
from jmod.layers.layer import InputSpec, Layer


class _Cell(Layer):
    """What the built-in cells share: units, activations, weight options, dropout."""

    gates = 1

    def __init__(
        self,
        units,
        activation="tanh",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = c.check_int(self, "units", units)
        self.activation = c.activation(self, activation)
        self.use_bias = bool(use_bias)
        c.set_weight_options(
            self, "kernel", kernel_initializer, kernel_regularizer, kernel_constraint
        )
        c.set_weight_options(
            self, "recurrent", recurrent_initializer, recurrent_regularizer, recurrent_constraint
        )
        c.set_weight_options(self, "bias", bias_initializer, bias_regularizer, bias_constraint)
        self.dropout = c.check_rate(self, "dropout", dropout)
        self.recurrent_dropout = c.check_rate(self, "recurrent_dropout", recurrent_dropout)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise SerializationError(f"{c.where(self)}: seed must be an int or None, got {seed!r}")
        self.seed = seed
        if seed is not None:
            self.generator = jrandom.Generator(seed)

    @property
    def state_size(self):
        """The size of each state, a list (LSTM: `[units, units]`)."""
        return [self.units]

    @property
    def output_size(self):
        return self.units

    def _bias_shape(self):
        return (self.gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(f"the last dimension of the inputs must be known, got {input_shape}")
        g = self.gates * self.units
        c.add_option_weight(self, "kernel", (features, g))
        self.add_weight(
            "recurrent_kernel",
            (self.units, g),
            self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        if self.use_bias:
            c.add_option_weight(
                self, "bias", self._bias_shape(), initializer_=self._bias_initializer()
            )

    # -- the two halves of a step: the input projection (all steps at once) and the recurrence
    def project(self, inputs):
        """`inputs @ kernel` (+ the input bias), for one step or a whole sequence."""
        out = jnp.matmul(inputs, self._cast(self.kernel))
        if self.use_bias:
            out = out + self._input_bias()
        return out

    def _input_bias(self):
        return self._cast(self.bias)

    def recur(self, projected, states):
        """One step from the projected input and the previous states: `(output, new_states)`."""
        raise NotImplementedError

    def dropout_masks(self, inputs, training):
        """Keras' per-sequence dropout masks `(input_mask, recurrent_mask)` (None when off)."""
        if not training:
            return None, None
        gen = self.__dict__.get("generator")
        batch = inputs.shape[0]
        dp = rdp = None
        if self.dropout > 0:
            ones = jnp.ones((batch, inputs.shape[-1]), inputs.dtype)
            dp = _dropout(ones, self.dropout, jrandom.next_key(gen))
        if self.recurrent_dropout > 0:
            ones = jnp.ones((batch, self.units), inputs.dtype)
            rdp = _dropout(ones, self.recurrent_dropout, jrandom.next_key(gen))
        return dp, rdp

    def call(self, inputs, states, training=None):
        """One step, as Keras cells take it: `(output, new_states)`."""
        dp, rdp = self.dropout_masks(inputs, training)
        if dp is not None:
            inputs = inputs * dp
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        return self.recur(self.project(inputs), states, rdp)

    def get_initial_state(self, batch_size, dtype=jnp.float32):
        """Zero states for `batch_size` sequences."""
        return [jnp.zeros((batch_size, n), dtype) for n in self.state_size]

    def get_config(self):
        return {
            **c.base_config(self),
            "units": self.units,
            "activation": c.serialize_activation(self, self.activation),
            "use_bias": self.use_bias,
            **c.weight_options_config(self, "kernel", "recurrent", "bias"),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }


class SimpleRNNCell(_Cell):
    """One step of a fully-connected RNN: `h = activation(x @ kernel + h @ recurrent_kernel + b)`.

    Example:
        >>> cell = jmod.layers.SimpleRNNCell(4)
        >>> out, states = cell(jnp.ones((2, 3)), [jnp.zeros((2, 4))])
        >>> out.shape, cell.recurrent_kernel.shape
        ((2, 4), (4, 4))

    Args:
        units: the size of the state and of the output.
        activation: applied to the new state (default tanh).
        use_bias: whether to add a bias.
        kernel_initializer, recurrent_initializer, bias_initializer: initializers
            (default glorot_uniform, orthogonal, zeros).
        kernel_regularizer, recurrent_regularizer, bias_regularizer: penalties added to `losses`.
        kernel_constraint, recurrent_constraint, bias_constraint: applied after each update.
        dropout: rate of a per-sequence dropout mask on the inputs (training only).
        recurrent_dropout: the same on the previous state.
        seed: an int for a cell-owned dropout generator, or None for the global one.
    """

    def recur(self, projected, states, recurrent_mask=None):
        h = states[0]
        if recurrent_mask is not None:
            h = h * recurrent_mask
        out = self.activation(projected + jnp.matmul(h, self._cast(self.recurrent_kernel)))
        return out, [out]


class LSTMCell(_Cell):
    """One step of a long short-term memory: states `[h, c]`, gates input, forget, cell, output.

    `z = x @ kernel + h @ recurrent_kernel + bias` split in four;
    `c' = f * c + i * activation(z_c)`, `h' = o * activation(c')` with
    `i, f, o = recurrent_activation(z_i, z_f, z_o)`.

    Example:
        >>> cell = jmod.layers.LSTMCell(4)
        >>> out, (h, c) = cell(jnp.ones((2, 3)), [jnp.zeros((2, 4)), jnp.zeros((2, 4))])
        >>> out.shape, cell.kernel.shape, cell.bias.value[4:8].tolist()   # forget bias 1
        ((2, 4), (3, 16), [1.0, 1.0, 1.0, 1.0])

    Args:
        units: the size of the states and of the output.
        activation: of the candidate and the output (default tanh).
        recurrent_activation: of the gates (default sigmoid).
        unit_forget_bias: initialize the forget gate's bias to 1 (Keras' default).
        use_bias, the initializers, regularizers, constraints, dropout,
        recurrent_dropout, seed: as `SimpleRNNCell`.
    """

    gates = 4

    def __init__(self, units, recurrent_activation="sigmoid", unit_forget_bias=True, **kwargs):
        super().__init__(units, **kwargs)
        self.recurrent_activation = c.activation(self, recurrent_activation)
        self.unit_forget_bias = bool(unit_forget_bias)

    @property
    def state_size(self):
        return [self.units, self.units]

    def _bias_initializer(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        base, u = self.bias_initializer, self.units

        def init(shape, dtype=jnp.float32):
            bias = jnp.asarray(base((u,), dtype), dtype)
            return jnp.concatenate([bias, jnp.ones((u,), dtype), base((2 * u,), dtype)])

        return init

    def recur(self, projected, states, recurrent_mask=None):
        h, c_prev = states
        if recurrent_mask is not None:
            h = h * recurrent_mask
        z = projected + jnp.matmul(h, self._cast(self.recurrent_kernel))
        zi, zf, zc, zo = jnp.split(z, 4, axis=-1)
        act, rec = self.activation, self.recurrent_activation
        c_new = rec(zf) * c_prev + rec(zi) * act(zc)
        h_new = rec(zo) * act(c_new)
        return h_new, [h_new, c_new]

    def get_config(self):
        return {
            **super().get_config(),
            "recurrent_activation": c.serialize_activation(self, self.recurrent_activation),
            "unit_forget_bias": self.unit_forget_bias,
        }


class GRUCell(_Cell):
    """One step of a gated recurrent unit: gates update (z), reset (r), candidate (h).

    `h' = z * h + (1 - z) * activation(x_h + r * (h @ rk_h))` with
    `reset_after=True` (Keras 3's default, cuDNN-compatible; the bias then
    has shape `(2, 3 * units)`: input and recurrent biases), or
    `activation(x_h + (r * h) @ rk_h)` with `reset_after=False`.

    Example:
        >>> cell = jmod.layers.GRUCell(4)
        >>> out, _ = cell(jnp.ones((2, 3)), [jnp.zeros((2, 4))])
        >>> out.shape, cell.bias.shape
        ((2, 4), (2, 12))

    Args:
        units: the size of the state and of the output.
        activation: of the candidate (default tanh).
        recurrent_activation: of the gates (default sigmoid).
        reset_after: apply the reset gate after the recurrent product (default True).
        use_bias, the initializers, regularizers, constraints, dropout,
        recurrent_dropout, seed: as `SimpleRNNCell`.
    """

    gates = 3

    def __init__(self, units, recurrent_activation="sigmoid", reset_after=True, **kwargs):
        super().__init__(units, **kwargs)
        self.recurrent_activation = c.activation(self, recurrent_activation)
        self.reset_after = bool(reset_after)

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _input_bias(self):
        bias = self._cast(self.bias)
        return bias[0] if self.reset_after else bias

    def recur(self, projected, states, recurrent_mask=None):
        h_prev = states[0]
        h = h_prev if recurrent_mask is None else h_prev * recurrent_mask
        rk = self._cast(self.recurrent_kernel)
        u = self.units
        xz, xr, xh = jnp.split(projected, 3, axis=-1)
        rec = self.recurrent_activation
        if self.reset_after:
            inner = jnp.matmul(h, rk)
            if self.use_bias:
                inner = inner + self._cast(self.bias)[1]
            hz, hr, hh = jnp.split(inner, 3, axis=-1)
            z, r = rec(xz + hz), rec(xr + hr)
            candidate = self.activation(xh + r * hh)
        else:
            z = rec(xz + jnp.matmul(h, rk[:, :u]))
            r = rec(xr + jnp.matmul(h, rk[:, u : 2 * u]))
            candidate = self.activation(xh + jnp.matmul(r * h, rk[:, 2 * u :]))
        out = z * h_prev + (1 - z) * candidate
        return out, [out]

    def get_config(self):
        return {
            **super().get_config(),
            "recurrent_activation": c.serialize_activation(self, self.recurrent_activation),
            "reset_after": self.reset_after,
        }


class RNN(Layer):
    """Runs a cell over the steps of `(batch, steps, features)` inputs with `jax.lax.scan`.

    Any Keras-style cell works: a layer with `state_size` (a list of ints)
    and `call(inputs, states) -> (output, new_states)`. A `mask` (booleans
    `(batch, steps)`, from `Embedding(mask_zero=True)` or given) skips
    steps: their states are carried over and their output repeats the last
    one (zeros with `zero_output_for_mask`).

    Example:
        >>> rnn = jmod.layers.RNN(jmod.layers.SimpleRNNCell(4), return_sequences=True)
        >>> rnn(jnp.ones((2, 5, 3))).shape
        (2, 5, 4)

    Args:
        cell: the cell run at each step.
        return_sequences: return every step's output, not only the last.
        return_state: also return the final states: `(output, *states)`.
        go_backwards: run over the steps in reverse (the returned sequence
            is in the order processed, as in Keras).
        stateful: not supported (an error); pass `initial_state` instead.
        unroll: unroll the loop fully (`jax.lax.scan(unroll=True)`).
        zero_output_for_mask: give masked steps a zero output.

    Call arguments:
        inputs: `(batch, steps, features)`.
        mask: booleans `(batch, steps)`, True for real steps.
        training: whether dropout is active.
        initial_state: a list of arrays, one per state; zeros by default.
    """

    def __init__(
        self,
        cell,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        zero_output_for_mask=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(cell, dict):
            from jmod import saving

            cell = saving.deserialize(cell)
        if not isinstance(cell, Layer) or not hasattr(cell, "state_size"):
            raise SerializationError(
                f"{c.where(self)}: cell must be a layer with a state_size, got "
                f"{type(cell).__name__}"
            )
        if stateful:
            raise SerializationError(
                f"{c.where(self)}: stateful=True is not supported; pass initial_state instead"
            )
        self.cell = cell
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.unroll = bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.input_spec = InputSpec(ndim=3)

    supports_masking = True

    def build(self, input_shape):
        if not self.cell.built:
            self.cell._maybe_build(jax.ShapeDtypeStruct((1, input_shape[-1]), jnp.float32))
        self.input_spec = InputSpec(ndim=3, axes={-1: input_shape[-1]})

    @property
    def states_count(self):
        return len(self.cell.state_size)

    def call(self, inputs, mask=None, training=None, initial_state=None):
        cell = self.cell
        x = inputs
        batch = x.shape[0]
        if initial_state is None:
            states = [jnp.zeros((batch, n), x.dtype) for n in cell.state_size]
        else:
            states = (
                list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
            )
            if len(states) != len(cell.state_size):
                raise ValueError(
                    f"initial_state has {len(states)} arrays, the cell has "
                    f"{len(cell.state_size)} states"
                )
            states = [jnp.asarray(s, x.dtype) for s in states]
        fast = isinstance(cell, _Cell)
        if fast:
            dp, rdp = cell.dropout_masks(x, training)
            if dp is not None:
                x = x * dp[:, None, :]
        # The input projection runs inside the loop, step by step: on XLA's CPU backend
        # that is twice as fast as one product over all steps before it (measured on
        # an LSTM(64) train step, 40 steps, batch 128).
        seq = jnp.swapaxes(x, 0, 1)
        steps = seq.shape[0]
        m = None
        if mask is not None:
            m = jnp.swapaxes(jnp.asarray(mask, bool), 0, 1)
        if self.go_backwards:
            seq = seq[::-1]
            m = None if m is None else m[::-1]

        def step(carry, xs):
            prev_states, prev_out = carry
            x_t, m_t = xs
            if fast:
                out, new_states = cell.recur(cell.project(x_t), prev_states, rdp)
            else:
                out, new_states = cell(x_t, prev_states, training=training)
                new_states = (
                    list(new_states) if isinstance(new_states, (list, tuple)) else [new_states]
                )
            if m_t is not None:
                keep = m_t[:, None]
                new_states = [jnp.where(keep, n, p) for n, p in zip(new_states, prev_states)]
                out = jnp.where(keep, out, 0 if self.zero_output_for_mask else prev_out)
                carry_out = jnp.where(keep, out, prev_out)
            else:
                carry_out = out
            return (list(new_states), carry_out), out

        out_size = getattr(cell, "output_size", cell.state_size[0])
        init = (states, jnp.zeros((batch, out_size), x.dtype))
        xs = (seq, m)
        (final_states, last), outputs = jax.lax.scan(
            step, init, xs, unroll=steps if self.unroll else 1
        )
        output = jnp.swapaxes(outputs, 0, 1) if self.return_sequences else last
        if self.return_state:
            return (output, *final_states)
        return output

    def compute_mask(self, inputs, mask=None):
        out = mask if self.return_sequences else None
        if self.return_state:
            return (out,) + (None,) * self.states_count
        return out

    def compute_output_shape(self, input_shape):
        batch, steps = input_shape[0], input_shape[1]
        units = getattr(self.cell, "output_size", None) or self.cell.state_size[0]
        out = (batch, steps, units) if self.return_sequences else (batch, units)
        if self.return_state:
            return (out, *[(batch, n) for n in self.cell.state_size])
        return out

    def _rnn_config(self):
        return {
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": False,
            "unroll": self.unroll,
            "zero_output_for_mask": self.zero_output_for_mask,
        }

    def get_config(self):
        from jmod import saving

        return {**c.base_config(self), "cell": saving.serialize(self.cell), **self._rnn_config()}


class _CellRNN(RNN):
    """An RNN whose constructor takes the cell's arguments (SimpleRNN, GRU, LSTM)."""

    cell_class: type | None = None
    _rnn_args = (
        "return_sequences",
        "return_state",
        "go_backwards",
        "stateful",
        "unroll",
        "zero_output_for_mask",
    )

    def __init__(self, units, **kwargs):
        rnn = {k: kwargs.pop(k) for k in self._rnn_args if k in kwargs}
        layer = {k: kwargs.pop(k) for k in ("name", "trainable", "dtype") if k in kwargs}
        for key in ("activity_regularizer", "input_shape"):
            if key in kwargs:
                layer[key] = kwargs.pop(key)
        if kwargs.get("quantization_config", 0) is None:
            kwargs.pop("quantization_config")
        cell_kwargs = dict(kwargs)
        if "dtype" in layer:
            cell_kwargs["dtype"] = layer["dtype"]
        if "trainable" in layer:
            cell_kwargs["trainable"] = layer["trainable"]
        super().__init__(self.cell_class(units, **cell_kwargs), **rnn, **layer)
        # The cell's variables live under `cell/...` (Keras: `lstm/lstm_cell/...`).

    def get_config(self):
        cell = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            cell.pop(key, None)
        return {**c.base_config(self), **cell, **self._rnn_config()}

    def __getattr__(self, name):
        # Keras exposes the cell's settings on the layer (`lstm.units`).
        cell = self.__dict__.get("cell")
        if cell is not None and not name.startswith("_"):
            try:
                return getattr(cell, name)
            except AttributeError:
                pass
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


_LAYER_ARGS = """
    Args:
        units: the size of the state and of the output.
        return_sequences: return every step's output `(batch, steps, units)`,
            not only the last `(batch, units)`.
        return_state: also return the final states: `(output, *states)`.
        go_backwards: run over the steps in reverse.
        unroll: unroll the scan fully.
        Other arguments are the cell's (activations, initializers,
        regularizers, constraints, dropout, recurrent_dropout, seed).

    Call arguments:
        inputs: `(batch, steps, features)`.
        mask: booleans `(batch, steps)`; masked steps keep the states.
        training: whether dropout is active.
        initial_state: a list of arrays, one per state.
"""


class SimpleRNN(_CellRNN):
    """A fully-connected RNN over a sequence (`SimpleRNNCell` in a `jax.lax.scan`).

    Example:
        >>> layer = jmod.layers.SimpleRNN(4)
        >>> layer(jnp.ones((2, 5, 3))).shape
        (2, 4)
    """

    __doc__ += _LAYER_ARGS
    cell_class = SimpleRNNCell


class GRU(_CellRNN):
    """A gated recurrent unit over a sequence (`GRUCell` in a `jax.lax.scan`).

    Example:
        >>> out, h = jmod.layers.GRU(4, return_state=True)(jnp.ones((2, 5, 3)))
        >>> out.shape, h.shape
        ((2, 4), (2, 4))
    """

    __doc__ += _LAYER_ARGS
    cell_class = GRUCell


class LSTM(_CellRNN):
    """A long short-term memory over a sequence (`LSTMCell` in a `jax.lax.scan`).

    Example:
        >>> out, h, c = jmod.layers.LSTM(4, return_sequences=True, return_state=True)(
        ...     jnp.ones((2, 5, 3)))
        >>> out.shape, h.shape, c.shape
        ((2, 5, 4), (2, 4), (2, 4))
    """

    __doc__ += _LAYER_ARGS
    cell_class = LSTMCell
