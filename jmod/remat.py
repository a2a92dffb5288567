"""Rematerialization: run a module call under `jax.checkpoint`.

The backward pass of a rematerialized call recomputes the call's
intermediate values instead of keeping them from the forward pass: less
memory for more compute. `policy` says what may still be saved (the
results of matrix products with `"dots"`, nothing with `"full"`).

The call's variables are bound (through the binding scope, `jmod._scope`)
to the inputs of the checkpointed function, so its gradient flows to them,
and assignments made inside (batch statistics, random keys) come out as its
outputs and are handed back to the enclosing computation.

Example:
    >>> layer = jmod.layers.Dense(4)
    >>> layer(jnp.ones((2, 3))).shape           # first call builds, as usual
    (2, 4)
    >>> fn = jmod.remat(lambda layer, x: (layer(x) ** 2).sum(), policy="dots")
    >>> loss, grads = jmod.value_and_grad(fn)(layer, jnp.ones((2, 3)))
    >>> sorted(grads)
    ['bias', 'kernel']
"""

import functools

import jax

from jmod import _scope
from jmod.errors import ModuleError
from jmod.module import Module
from jmod.variables import Variable

# Names of `jax.checkpoint_policies`: what the forward pass may keep for the backward one.
_POLICIES = {
    "full": None,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}


def policy_names():
    """The policy names `remat` and `Repeat(remat=...)` accept (besides a callable)."""
    return sorted(_POLICIES)


def resolve_policy(remat):
    """`(enabled, policy)` for a `remat=` argument: None/False, True, a name or a callable.

    Example:
        >>> from jmod.remat import resolve_policy
        >>> resolve_policy(None), resolve_policy("full")
        ((False, None), (True, None))
    """
    if remat is None or remat is False:
        return False, None
    if remat is True:
        return True, None
    if isinstance(remat, str):
        if remat not in _POLICIES:
            raise ModuleError(
                f"unknown remat policy {remat!r}; expected one of {policy_names()}, "
                "True, None or a jax.checkpoint_policies callable"
            )
        return True, _POLICIES[remat]
    if callable(remat):
        return True, remat
    raise ModuleError(
        f"remat must be None, True, a policy name {policy_names()} or a callable, "
        f"got {type(remat).__name__}"
    )


def layers_of(modules):
    """Every module among `modules` and their submodules that keeps `add_loss` terms."""
    out, seen = [], set()
    for module in modules:
        for m in (module, *module.submodules):
            if id(m) not in seen and isinstance(m.__dict__.get("_losses"), list):
                seen.add(id(m))
                out.append(m)
    return out


def take_losses(layers):
    """The `add_loss` terms the layers hold, removed from them (list order kept per layer)."""
    taken = []
    for layer in layers:
        losses = layer.__dict__["_losses"]
        taken.append(list(losses))
        list.clear(losses)  # a plain list method: not a structure change
    return taken


def give_losses(layers, taken):
    """Puts back the terms `take_losses` removed (now values of the enclosing computation)."""
    for layer, losses in zip(layers, taken):
        list.extend(layer.__dict__["_losses"], losses)


def unbuilt(modules):
    """Whether any of `modules` or their submodules is a layer that has not been built."""
    return any(
        m.__dict__.get("built") is False for module in modules for m in (module, *module.submodules)
    )


def variables_of(modules):
    """The variables of `modules` (and bare `Variable`s among them), each once, in order."""
    out, seen = [], set()
    for obj in modules:
        for v in (obj,) if isinstance(obj, Variable) else obj.variables:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


def bound_call(thunk, variables, layers, wrap, extra):
    """Runs `thunk()` as a pure function of the variables' values, transformed by `wrap`.

    `variables` (and `extra`: variables found assigned by an earlier run,
    such as the global random key) are bound to the pure function's inputs;
    their assignments come back as outputs and are written to the enclosing
    scope. Returns `(output, unknown)`: `unknown` lists variables the call
    assigned that were not bound (the caller runs again with them in
    `extra`); nothing is written back in that case.
    """
    bound = list(variables) + [v for v in extra if all(v is not w for w in variables)]
    info = {}

    def pure(values):
        with _scope.Scope(zip(bound, values)) as scope:
            out = thunk()
            out = jax.tree_util.tree_map(
                lambda x: x.value if isinstance(x, Variable) else x,
                out,
                is_leaf=lambda x: isinstance(x, Variable),
            )
            losses = take_losses(layers)
        if scope.created:
            raise ModuleError(
                "a rematerialized call created variables "
                f"({[v.name for v in scope.created]}); build its modules first "
                "(call them once outside remat)"
            )
        known = {id(v) for v in bound}
        writes = scope.assignments()
        info["unknown"] = [v for v, _ in writes if id(v) not in known]
        info["assigned"] = [v for v, _ in writes if id(v) in known]
        return out, [x for v, x in writes if id(v) in known], losses

    out, new, losses = wrap(pure)([v.value for v in bound])
    if info["unknown"]:
        return None, info["unknown"]
    for var, value in zip(info["assigned"], new):
        _scope.write(var, value)
    give_losses(layers, losses)
    return out, []


def checkpointed(thunk, modules, policy, prevent_cse=True, cache=None):
    """`thunk()` under `jax.checkpoint(policy=policy)`, the modules' variables bound to inputs.

    `cache` (a dict) remembers variables found assigned outside the modules
    (the global random generator's key), so later calls bind them at once.
    """
    variables = variables_of(modules)
    layers = layers_of([m for m in modules if isinstance(m, Module)])
    cache = {} if cache is None else cache
    extra = cache.setdefault("extra", [])

    def wrap(pure):
        return jax.checkpoint(pure, policy=policy, prevent_cse=prevent_cse)

    for _ in range(8):
        out, unknown = bound_call(thunk, variables, layers, wrap, extra)
        if not unknown:
            return out
        extra.extend(v for v in unknown if all(v is not w for w in extra))
    raise ModuleError("a rematerialized call kept assigning new variables")


def _modules_in(args, kwargs, fn):
    found = [
        x
        for x in jax.tree_util.tree_leaves(
            (args, kwargs), is_leaf=lambda x: isinstance(x, (Module, Variable))
        )
        if isinstance(x, (Module, Variable))
    ]
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, Module):
        found.insert(0, owner)
    return found


class Remat(Module):
    """A module whose calls run under `jax.checkpoint` (made by `jmod.remat(module)`).

    Its variables are the wrapped module's, under the attribute `module`
    (paths `module/...`). The first call of an unbuilt layer runs plainly
    (it creates the variables); later calls are rematerialized.

    Example:
        >>> block = jmod.remat(jmod.layers.Dense(2), policy="full")
        >>> block(jnp.ones((1, 3))).shape, [p for p, _ in block.named_variables()]
        ((1, 2), ['module/bias', 'module/kernel'])
    """

    def __init__(self, module, policy="full", prevent_cse=True, name=None):
        super().__init__(name=name or f"remat_{module.name}")
        if not callable(module):
            raise ModuleError(f"jmod.remat: module {module.name!r} is not callable")
        resolve_policy(policy)
        self.module = module
        self.__dict__["_jmod_remat"] = (policy, prevent_cse, {})

    def __call__(self, *args, **kwargs):
        policy, prevent_cse, cache = self.__dict__["_jmod_remat"]
        if unbuilt([self.module]):
            return self.module(*args, **kwargs)
        _, fn_policy = resolve_policy(policy)
        return checkpointed(
            lambda: self.module(*args, **kwargs),
            [self.module, *_modules_in(args, kwargs, None)],
            fn_policy,
            prevent_cse,
            cache,
        )


def remat(target=None, *, policy="full", prevent_cse=True):
    """Rematerializes a module or a function over modules under `jax.checkpoint`.

    `jmod.remat(module)` returns a `Remat` module calling `module`;
    `jmod.remat(fn)` (also as a decorator, on methods too) returns `fn`
    whose calls are rematerialized, the variables of every module among its
    arguments (and `self`) bound to the checkpointed inputs. A call that
    would build a layer runs plainly.

    Example:
        >>> class Block(jmod.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.w = jmod.Variable(jnp.full((3, 3), 0.5))
        ...     @jmod.remat(policy="dots")
        ...     def __call__(self, x):
        ...         return jnp.tanh(x @ self.w)
        >>> block = Block()
        >>> grads = jmod.grad(lambda m: m(jnp.ones((1, 3))).sum())(block)
        >>> grads["w"].shape
        (3, 3)

    Args:
        target: a module, or a function whose arguments contain modules;
            omitted, `remat(policy=...)` returns a decorator.
        policy: `"full"` (save nothing: recompute everything), `"dots"`
            (keep matrix products), `"dots_with_no_batch_dims"`,
            `"nothing_saveable"`, `"everything_saveable"`, or a
            `jax.checkpoint_policies` callable.
        prevent_cse: passed to `jax.checkpoint` (False is safe inside `lax.scan`).
    """
    enabled, fn_policy = resolve_policy(policy)
    if not enabled:
        raise ModuleError(f"jmod.remat: policy must name a checkpoint policy, got {policy!r}")
    if target is None:
        return functools.partial(remat, policy=policy, prevent_cse=prevent_cse)
    if isinstance(target, Module):
        return Remat(target, policy=policy, prevent_cse=prevent_cse)
    if not callable(target):
        raise ModuleError(f"jmod.remat expects a module or a function, got {type(target).__name__}")
    cache = {}

    @functools.wraps(target)
    def wrapped(*args, **kwargs):
        modules = _modules_in(args, kwargs, target)
        if unbuilt([m for m in modules if isinstance(m, Module)]):
            return target(*args, **kwargs)
        return checkpointed(lambda: target(*args, **kwargs), modules, fn_policy, prevent_cse, cache)

    return wrapped
