"""`Repeat`: n identical blocks applied one after another, traced once under `lax.scan`.

A deep stack of identical blocks traced block by block makes a program that
grows with the depth, and so does its compile time. `Repeat(scan=True)`
traces one block and runs it n times in a `jax.lax.scan` over the blocks'
weights: the program, and its compile time, stay the size of one block.

The variables stay per block (`blocks/0/...`, `blocks/1/...`): to the user,
in `summary()`, and in checkpoints, so a checkpoint written with
`scan=True` restores into `scan=False` and back. Each call stacks the
blocks' values (block i's k-th variable at position i) for the scan, and
writes the blocks' assignments (batch statistics, random keys) back to each
block afterwards. The stacking copies the weights once per call: a cost
of the per-block layout (the scan's gradient comes back stacked too).

Random numbers: blocks drawing from the global generator (Dropout without
a seed) get the generator's key carried through the scan, so block i draws
exactly what it would draw unscanned; blocks with their own seeded
generator draw from their own keys.
"""

import jax
import jax.numpy as jnp

from jmod import _scope
from jmod.errors import LayerCallError, SerializationError
from jmod.layers import _common as c
from jmod.layers.layer import Layer
from jmod.module import Module
from jmod.remat import checkpointed, layers_of, resolve_policy, take_losses, unbuilt


def _relative(block):
    return block.named_variables()


class Repeat(Layer):
    """`n` fresh blocks from `make_block()`, applied in sequence (scanned by default).

    Example:
        >>> stack = jmod.layers.Repeat(lambda: jmod.layers.Dense(4, activation="tanh"), 3)
        >>> stack(jnp.ones((2, 4))).shape
        (2, 4)
        >>> [p for p, _ in stack.named_variables()][:2]
        ['blocks/0/bias', 'blocks/0/kernel']
        >>> fn = jmod.jit(lambda m, x: m(x))
        >>> [e.primitive.name for e in fn.jaxpr(stack, jnp.ones((2, 4))).eqns].count("scan")
        1

    Args:
        make_block: a zero-argument callable returning a fresh layer or
            module (called n times); every block must have the same
            variables (paths, shapes, dtypes), and with `scan=True` its
            output the same shape and dtype as its input.
        n: the number of blocks, >= 1.
        scan: trace one block and run it in `jax.lax.scan` (True), or trace
            every block (False). Both compute the same function on the same
            variables.
        remat: None (keep activations for the backward pass), or rematerialize
            each block: `"full"` / True (recompute everything), `"dots"`
            (keep matrix products), `"dots_with_no_batch_dims"`, or a
            `jax.checkpoint_policies` callable.
        unroll: blocks per scan iteration (`jax.lax.scan`'s `unroll`).
    """

    def __init__(self, make_block, n, scan=True, remat=None, unroll=1, **kwargs):
        super().__init__(**kwargs)
        n = c.check_int(self, "n", n)
        block_config = None
        if isinstance(make_block, dict):  # from get_config
            from jmod import saving

            block_config = make_block
            config = dict(make_block)
            config["config"] = {k: v for k, v in make_block["config"].items() if k != "name"}

            def make_block():
                return saving.deserialize(config)

        if not callable(make_block):
            raise SerializationError(
                f"{c.where(self)}: make_block must be a zero-argument callable returning a "
                f"layer or module, got {type(make_block).__name__}"
            )
        resolve_policy(remat)  # an unknown policy is an error here, not at call
        blocks = []
        for i in range(n):
            block = make_block()
            if not isinstance(block, Module) or not callable(block):
                raise SerializationError(
                    f"{c.where(self)}: make_block() must return a callable layer or module, "
                    f"got {type(block).__name__} (block {i})"
                )
            if any(block is b for b in blocks):
                raise SerializationError(
                    f"{c.where(self)}: make_block() returned the same object twice; it must "
                    "make a fresh block on each call"
                )
            blocks.append(block)
        self.blocks = blocks
        self.n = n
        self.scan = bool(scan)
        self.remat = remat
        self.unroll = c.check_int(self, "unroll", unroll)
        self.__dict__["_jmod_block_config"] = block_config
        # Variables found assigned inside the scanned body outside the blocks
        # (the global generator's key): carried through the scan from then on.
        self.__dict__["_jmod_carry"] = {"extra": []}

    # -- calling ---------------------------------------------------------------------
    def call(self, inputs, *args, **kwargs):
        if not self.scan or unbuilt(self.blocks):
            return self._sequential(inputs, args, kwargs)
        return self._scanned(inputs, args, kwargs)

    def _sequential(self, x, args, kwargs):
        # Also the first call of unbuilt blocks: each builds from what it receives.
        enabled, policy = resolve_policy(self.remat)
        build = unbuilt(self.blocks)
        cache = self.__dict__["_jmod_carry"]
        for block in self.blocks:
            if enabled and not build:
                x = checkpointed(
                    lambda block=block, x=x: block(x, *args, **kwargs),
                    [block],
                    policy,
                    cache=cache,
                )
            else:
                x = block(x, *args, **kwargs)
        return x

    def _layout(self):
        """Per block, its variables in one order; checks every block has the same ones."""
        per_block = [_relative(b) for b in self.blocks]
        first = per_block[0]
        for i, named in enumerate(per_block[1:], 1):
            same = len(named) == len(first) and all(
                p == q and tuple(v.shape) == tuple(w.shape) and v.dtype == w.dtype
                for (p, v), (q, w) in zip(first, named)
            )
            if not same:
                raise LayerCallError(
                    f"{c.where(self)}: scan=True needs blocks with identical variables; "
                    f"block 0 has {_describe(first)}, block {i} has {_describe(named)}"
                )
        return [[v for _, v in named] for named in per_block]

    def _scanned(self, x, args, kwargs):
        layout = self._layout()
        stacked = [
            jnp.stack([layout[i][k].value for i in range(self.n)]) for k in range(len(layout[0]))
        ]
        layers = layers_of([self.blocks[0]])
        # Only block 0 runs (as the template): no block keeps terms of an earlier call.
        take_losses(layers_of(self.blocks))
        enabled, policy = resolve_policy(self.remat)
        cache = self.__dict__["_jmod_carry"]
        extra = cache["extra"]
        for _ in range(8):
            unknown = self._scan_once(
                x, args, kwargs, layout, stacked, layers, extra, enabled, policy
            )
            if not isinstance(unknown, list):
                return unknown[0]
            extra.extend(v for v in unknown if all(v is not w for w in extra))
        raise LayerCallError(f"{c.where(self)}: the scanned blocks kept assigning new variables")

    def _scan_once(self, x, args, kwargs, layout, stacked, layers, extra, enabled, policy):
        template, tvars = self.blocks[0], layout[0]
        ids = {id(v) for v in tvars}
        extra = [v for v in extra if id(v) not in ids]
        info = {}

        def step(carry, slices):
            h, extra_values = carry
            bound = list(zip(tvars, slices)) + list(zip(extra, extra_values))
            with _scope.Scope(bound) as scope:
                out = template(h, *args, **kwargs)
                losses = take_losses(layers)
                new_extra = [scope.read(v) for v in extra]
            if scope.created:
                raise LayerCallError(
                    f"{c.where(self)}: a block created variables inside the scan "
                    f"({[v.name for v in scope.created]}); blocks must be built by the first "
                    "call"
                )
            known = ids | {id(v) for v in extra}
            writes = scope.assignments()
            info["unknown"] = [v for v, _ in writes if id(v) not in known]
            assigned = [k for k, v in enumerate(tvars) if id(v) in scope.assigned]
            info["assigned"] = assigned
            new_slices = [scope.values[id(tvars[k])] for k in assigned]
            info["losses"] = any(losses)
            total = sum((jnp.sum(jnp.asarray(t)) for ls in losses for t in ls), jnp.float32(0))
            return (out, new_extra), (new_slices, total)

        if enabled:
            step = jax.checkpoint(step, policy=policy, prevent_cse=False)
        initial = (x, [v.value for v in extra])
        try:
            (out, final_extra), (new_slices, losses) = jax.lax.scan(
                step, initial, stacked, length=self.n, unroll=self.unroll
            )
        except TypeError as e:
            if "carry" not in str(e):
                raise
            raise LayerCallError(
                f"{c.where(self)}: with scan=True a block's output must have its input's "
                f"structure, shape and dtype (the scan carries it): {e}"
            ) from e
        if info["unknown"]:
            return info["unknown"]
        for k, values in zip(info["assigned"], new_slices):
            for i in range(self.n):
                _scope.write(layout[i][k], values[i])
        for var, value in zip(extra, final_extra):
            _scope.write(var, value)
        if info["losses"]:
            self.add_loss(jnp.sum(losses))
        return (out,)

    # -- shapes and config ---------------------------------------------------------
    def compute_output_shape(self, input_shape):
        return input_shape if self.scan else super().compute_output_shape(input_shape)

    def get_config(self):
        from jmod import saving

        block_config = self.__dict__["_jmod_block_config"]
        if block_config is None:
            block_config = saving.serialize(self.blocks[0])
        if not (self.remat is None or isinstance(self.remat, (bool, str))):
            raise SerializationError(
                f"{c.where(self)}: a callable remat policy cannot be saved in a config; "
                "use a policy name"
            )
        return {
            **c.base_config(self),
            "make_block": block_config,
            "n": self.n,
            "scan": self.scan,
            "remat": self.remat,
            "unroll": self.unroll,
        }


def _describe(named):
    return [(p, tuple(v.shape), str(v.dtype)) for p, v in named]
