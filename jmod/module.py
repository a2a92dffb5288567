"""`Module`: an object whose `Variable`s and sub-`Module`s are collected automatically.

The walk follows `tf.Module`: a module's own variables first (attributes by
sorted name; list/tuple items by index, dict items by sorted key), then each
submodule's, depth first. Whatever is reachable twice is listed once, under
its first path; cycles end the walk.
"""

import functools
import weakref
from collections.abc import Mapping

import jax

from jmod import _scope, _tracing
from jmod._naming import tf_snake_case
from jmod.errors import ModuleError
from jmod.variables import Variable

_MISSING = object()


def _expand(prefix, value, seen):
    """Yields (path, obj) for every Module or Variable in `value`, containers opened."""
    if isinstance(value, (Module, Variable)):
        yield prefix, value
    elif isinstance(value, (list, tuple, dict)):
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, dict):
            items = sorted(value.items(), key=lambda kv: str(kv[0]))
        else:
            items = enumerate(value)
        for key, item in items:
            yield from _expand(f"{prefix}/{key}", item, seen)


def _children(module):
    seen = set()
    attrs = vars(module)
    for name in sorted(attrs):
        if name.startswith("_jmod") or name in type(module)._jmod_untracked:
            continue
        yield from _expand(name, attrs[name], seen)


def _bumping(base, names):
    def wrap(name):
        op = getattr(base, name)

        def method(self, *args, **kwargs):
            result = op(self, *args, **kwargs)
            _tracing.bump()
            owner = self.__dict__.get("_jmod_owner")
            if owner is not None:
                module = owner[0]()
                if module is not None and module.__dict__.get("_jmod_pending"):
                    # A restore is waiting for variables under this attribute.
                    _deliver(module, owner[1], self)
            return result

        method.__name__ = name
        return method

    return {name: wrap(name) for name in names}


# Lists and dicts assigned to module attributes are swapped for these, so an
# in-place change (`self.layers.append(...)`) is seen by jmod.jit's plans and
# by pending checkpoint restores, as Keras tracks its lists.
_TrackedList = type(
    "TrackedList",
    (list,),
    _bumping(
        list,
        "append extend insert pop remove clear sort reverse __setitem__ "
        "__delitem__ __iadd__ __imul__".split(),
    ),
)
_TrackedDict = type(
    "TrackedDict",
    (dict,),
    _bumping(dict, "__setitem__ __delitem__ pop popitem clear update setdefault".split()),
)


class _Walk:
    """The collected structure of one module tree at one version."""

    __slots__ = ("version", "named", "submodules")

    def __init__(self, root):
        self.version = _tracing.version
        named, seen_vars, seen_mods = [], set(), {id(root)}

        def visit(module, prefix):
            children = list(_children(module))
            for path, obj in children:
                if isinstance(obj, Variable) and id(obj) not in seen_vars:
                    seen_vars.add(id(obj))
                    named.append((prefix + path, obj))
            for path, obj in children:
                if isinstance(obj, Module) and id(obj) not in seen_mods:
                    seen_mods.add(id(obj))
                    visit(obj, prefix + path + "/")

        visit(root, "")
        self.named = named

        # Submodules breadth first: children before grandchildren, as tf.Module.
        subs, seen, queue = [], {id(root)}, [("", root)]
        while queue:
            prefix, module = queue.pop(0)
            for path, obj in _children(module):
                if isinstance(obj, Module) and id(obj) not in seen:
                    seen.add(id(obj))
                    subs.append((prefix + path, obj))
                    queue.append((prefix + path + "/", obj))
        self.submodules = subs


def _with_name_scope(fn):
    # While jmod.jit traces, each module call runs in a named scope of its
    # attribute name, so the compiled graph reads `model/dense_1/dot_general`.
    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        scope = _scope.current()
        if scope is None or scope.names is None:
            return fn(self, *args, **kwargs)
        with jax.named_scope(scope.names.get(id(self)) or self.name):
            return fn(self, *args, **kwargs)

    call._jmod_scoped = True
    return call


class Module:
    """Base class of objects that own variables and other modules.

    Any `Variable` or `Module` assigned to an attribute, directly or inside
    lists, tuples and dicts, is collected, recursively. Collections are
    tuples ordered as `tf.Module` orders them; `named_variables()` gives the
    paths that key checkpoints and `state()`.

    Example:
        >>> class Scale(jmod.Module):
        ...     def __init__(self, name=None):
        ...         super().__init__(name=name)
        ...         self.k = jmod.Variable(2.0)
        ...     def __call__(self, x):
        ...         return self.k * x
        >>> m = Scale()
        >>> m.name, [p for p, _ in m.named_variables()], float(m(3.0))
        ('scale', ['k'], 6.0)

    Args:
        name: the module's name; by default the class name in snake_case.
    """

    # Attribute names never walked (references to objects owned elsewhere).
    _jmod_untracked: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        fn = cls.__dict__.get("__call__")
        if (
            callable(fn)
            and not getattr(fn, "_jmod_scoped", False)
            and isinstance(fn, type(_with_name_scope))
        ):
            cls.__call__ = _with_name_scope(fn)

    def __init__(self, name: str | None = None) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise ModuleError(f"module name must be a non-empty str, got {name!r}")
        self._name = name if name is not None else tf_snake_case(type(self).__name__)

    @property
    def name(self) -> str:
        """The module's name (class name in snake_case unless given)."""
        return self.__dict__.get("_name") or tf_snake_case(type(self).__name__)

    # -- structure tracking ---------------------------------------------------
    def __setattr__(self, name, value):
        d = self.__dict__
        if type(value) is list:
            value = _TrackedList(value)
        elif type(value) is dict:
            value = _TrackedDict(value)
        if type(value) in (_TrackedList, _TrackedDict):
            value.__dict__["_jmod_owner"] = (weakref.ref(self), name)
        old = d.get(name, _MISSING)
        object.__setattr__(self, name, value)
        if old is not value and not name.startswith("_jmod"):
            d["_jmod_version"] = _tracing.bump()
            pending = d.get("_jmod_pending")
            if pending:
                _deliver(self, name, value)

    def __delattr__(self, name):
        object.__delattr__(self, name)
        self.__dict__["_jmod_version"] = _tracing.bump()

    def _jmod_walk(self):
        walk = self.__dict__.get("_jmod_walk_cache")
        if walk is None or walk.version != _tracing.version:
            walk = _Walk(self)
            self.__dict__["_jmod_walk_cache"] = walk
        return walk

    # -- collections ----------------------------------------------------------
    def named_variables(self) -> list[tuple[str, Variable]]:
        """Every variable reachable from this module, once each, as (path, Variable)."""
        return list(self._jmod_walk().named)

    @property
    def variables(self) -> tuple[Variable, ...]:
        """All variables of this module and its submodules, as a tuple."""
        return tuple(v for _, v in self._jmod_walk().named)

    @property
    def trainable_variables(self) -> tuple[Variable, ...]:
        """The variables with `trainable=True`, as a tuple."""
        return tuple(v for _, v in self._jmod_walk().named if v.trainable)

    @property
    def non_trainable_variables(self) -> tuple[Variable, ...]:
        """The variables with `trainable=False`, as a tuple."""
        return tuple(v for _, v in self._jmod_walk().named if not v.trainable)

    @property
    def submodules(self) -> tuple["Module", ...]:
        """All nested modules, recursively, children before grandchildren, each once."""
        return tuple(m for _, m in self._jmod_walk().submodules)

    def named_submodules(self) -> list[tuple[str, "Module"]]:
        """Every nested module as (path, Module), children before grandchildren."""
        return list(self._jmod_walk().submodules)

    # -- the bridge to pure functions ----------------------------------------
    def state(self) -> dict[str, jax.Array]:
        """The values of all variables as a flat dict path -> array (a pytree).

        Example:
            >>> m = jmod.Module()
            >>> m.v = jmod.Variable([1.0, 2.0])
            >>> m.state()
            {'v': Array([1., 2.], dtype=float32)}
        """
        return {p: v.value for p, v in self._jmod_walk().named}

    def load_state(self, state: Mapping[str, object], strict: bool = True) -> None:
        """Assigns values from a path -> array dict such as `state()` returns.

        With `strict=True` (the default) a missing or unexpected path is an error.
        """
        named = dict(self._jmod_walk().named)
        if strict:
            missing = sorted(set(named) - set(state))
            unexpected = sorted(set(state) - set(named))
            if missing or unexpected:
                raise ModuleError(
                    f"module {self.name!r}: state does not match its variables; "
                    f"missing {missing or 'none'}, unexpected {unexpected or 'none'}"
                )
        for path, value in state.items():
            if path in named:
                try:
                    named[path].assign(value)
                except ValueError as e:
                    raise ModuleError(f"module {self.name!r}, variable {path}: {e}") from e

    def __repr__(self):
        walk = self._jmod_walk()
        return f"<{type(self).__name__} {self.name!r}: {len(walk.named)} variables>"

    # A property handing back the method: treescope frames the `_repr_html_`
    # it finds on a class next to its own rendering (a second copy of the
    # tree); IPython looks it up on the instance. Bodies live in jmod._render.
    @property
    def _repr_html_(self):
        from jmod import _render

        return _render.html_method(self)

    def __treescope_repr__(self, path, subtree_renderer):
        from jmod import _render

        return _render.treescope_repr(self, path, subtree_renderer)


def _deliver(module, name, value):
    """Hands newly attached variables/modules to callbacks waiting for their paths."""
    pending = module.__dict__["_jmod_pending"]
    for path, obj in list(_expand(name, value, set())):
        if isinstance(obj, Variable):
            callback = pending.pop(path, None)
            if callback is not None:
                callback(obj)
        else:
            prefix = path + "/"
            sub = {k[len(prefix) :]: pending.pop(k) for k in list(pending) if k.startswith(prefix)}
            if sub:
                on_variable_created(obj, sub)


def on_variable_created(module, callbacks):
    """Calls `callbacks[path](variable)` when a variable appears at `path` under `module`.

    Paths are relative to `module`. Variables already there are handed over at
    once; the rest when a later (deferred) build assigns them. Checkpoint
    restore uses this to fill variables that do not exist yet.

    Example:
        >>> m = jmod.Module()
        >>> seen = []
        >>> jmod.module.on_variable_created(m, {"w": seen.append})
        >>> m.w = jmod.Variable(1.0)
        >>> seen[0] is m.w
        True
    """
    callbacks = dict(callbacks)
    for path, var in module.named_variables():
        callback = callbacks.pop(path, None)
        if callback is not None:
            callback(var)
    # Existing submodules get their share so a build inside them is seen too.
    for path, sub in module.named_submodules():
        prefix = path + "/"
        share = {
            k[len(prefix) :]: callbacks.pop(k) for k in list(callbacks) if k.startswith(prefix)
        }
        if share:
            on_variable_created(sub, share)
    if callbacks:
        pending = module.__dict__.setdefault("_jmod_pending", {})
        pending.update(callbacks)


def snapshot(modules):
    """Shallow copies of the modules' attributes (and their lists/dicts), for rollback."""
    snap = []
    for m in modules:
        attrs = dict(m.__dict__)
        containers = {
            k: (v, list(v) if isinstance(v, list) else dict(v))
            for k, v in attrs.items()
            if isinstance(v, (list, dict)) and not k.startswith("_jmod")
        }
        snap.append((m, attrs, containers))
    return snap


def rollback(snap):
    """Puts modules back exactly as `snapshot` saw them."""
    for m, attrs, containers in snap:
        m.__dict__.clear()
        m.__dict__.update(attrs)
        for obj, content in containers.values():
            if isinstance(obj, list):
                obj[:] = content
            else:
                obj.clear()
                obj.update(content)
    _tracing.bump()
