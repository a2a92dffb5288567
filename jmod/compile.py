"""`jmod.jit`: compile functions and methods over stateful modules.

Per call the hot path reads the current variable values in plan order,
calls one cached `jax.jit` function (whose C++ dispatch does the signature
lookup) and writes back only the variables the trace assigned. The plan
(which variables, in what order) is rebuilt only when some module's
structure changed, which `jmod._tracing.version` tells in one comparison.
"""

import functools
import inspect
import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.array import ArrayImpl

from jmod import _tracing
from jmod.errors import TraceError
from jmod.module import Module, rollback, snapshot
from jmod.signature import Signature, _spec
from jmod.variables import Variable, _strong

logger = logging.getLogger("jmod")

# Callables told about every finished trace (jmod.summary's graph recorder).
TRACE_HOOKS = []

# The concrete array type, named without making an array: creating one at
# import would start the XLA backend, after which jax.distributed.initialize
# (jmod.distributed.initialize) refuses to run.
_JAX_ARRAY = ArrayImpl
_ARRAY_TYPES = frozenset({_JAX_ARRAY, np.ndarray})
_MAX_CAPTURES = 64
_RETRACE_WARNING = 5
_DYN = "dyn"


def _is_special(x):
    return isinstance(x, (Module, Variable)) or (isinstance(x, list) and _is_number_list(x))


def _is_number_list(x):
    if isinstance(x, (list, tuple)):
        return len(x) > 0 and all(_is_number_list(i) for i in x)
    return isinstance(x, (int, float, complex)) and not isinstance(x, bool)


def _layout(x):
    """The multi-device layout of a concrete array (jmod.distributed), else None."""
    sharding = getattr(x, "sharding", None)
    if isinstance(sharding, jax.sharding.NamedSharding) and not isinstance(x, jax.core.Tracer):
        return sharding if len(sharding.device_set) > 1 else None
    return None


def _keep_layouts(assigned, originals):
    # jit picks output layouts by propagation, which may move a replicated
    # variable onto a split one: pin each written-back value to the layout
    # the variable had (the plan key holds the layouts, so a resharded
    # variable gets a new trace).
    for i, value in assigned.items():
        layout = _layout(originals[i])
        if layout is not None:
            assigned[i] = jax.lax.with_sharding_constraint(value, layout)
    return assigned


def _root_walk(root):
    if isinstance(root, Variable):
        return [("", root)], [], root.name or "variable"
    walk = root._jmod_walk()
    return walk.named, walk.submodules, root.name


class _Plan:
    """Which variables a call reads, in which order, at one structure version."""

    __slots__ = (
        "version",
        "roots",
        "vars",
        "ids",
        "paths",
        "modules",
        "scope_names",
        "module_versions",
        "key",
        "jitted",
        "leaves",
        "epoch",
    )

    def __init__(self, roots, root_names, captures):
        self.version = _tracing.version
        self.roots = roots
        vars_, paths, modules, scopes, versions = [], [], [], {}, {}
        seen = set()
        for root, prefix in zip(roots, root_names):
            named, subs, name = _root_walk(root)
            if isinstance(root, Module):
                modules.append(root)
                scopes[id(root)] = name
                versions[prefix or name] = root.__dict__.get("_jmod_version", 0)
            for path, module in subs:
                modules.append(module)
                scopes.setdefault(id(module), path.rsplit("/", 1)[-1])
                versions[f"{prefix}{path}"] = module.__dict__.get("_jmod_version", 0)
            for path, var in named:
                if id(var) not in seen:
                    seen.add(id(var))
                    vars_.append(var)
                    paths.append(f"{prefix}{path}" if path else prefix.rstrip("/"))
        for i, var in enumerate(captures):
            if id(var) not in seen:
                seen.add(id(var))
                vars_.append(var)
                paths.append(f"<captured {i}>/{var.name or 'variable'}")
        self.vars = vars_
        self.ids = frozenset(seen)
        self.paths = paths
        self.modules = modules
        self.scope_names = scopes
        self.module_versions = versions
        self.key = (
            tuple(versions.items()),
            tuple(
                (p, v.shape, v.dtype, v.trainable, _layout(v._value)) for p, v in zip(paths, vars_)
            ),
        )
        self.jitted = None
        self.leaves = None
        self.epoch = -1


class TraceRecord:
    """What TRACE_HOOKS receive after a trace: a name, input names, the jaxpr."""

    state_count = 0  # how many of the jaxpr's inputs are state (the rest: arguments)

    def __init__(self, compiled, plan, leaf_specs, dyn_specs, static, input_names):
        self.name = compiled.__qualname__
        self.input_names = input_names
        self._args = (compiled, plan, leaf_specs, dyn_specs, static)

    def jaxpr(self):
        compiled, plan, leaf_specs, dyn_specs, static = self._args
        return compiled._make_jaxpr(plan, leaf_specs, dyn_specs, static)


class Compiled:
    """A function (or a method bound to one instance) compiled by `jmod.jit`."""

    def __init__(self, fn, instance, static_argnames, donate_state):
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._instance = instance
        self._static_argnames = tuple(static_argnames)
        self._donate = donate_state
        self._signature = inspect.signature(fn)
        self._param_names = list(self._signature.parameters)
        self._inst_root = isinstance(instance, (Module, Variable))
        self._self_roots = (instance,) if self._inst_root else ()
        self._self_plan = None
        self._fast = not self._static_argnames
        self._plans = {}
        self._jitted = {}
        self._captures = []
        self._current = None
        self._created = ()
        self._record = None
        self.trace_count = 0
        self.signatures = []
        self.retrace_reasons = []

    # -- the hot path ---------------------------------------------------------
    def __call__(self, *args, **kwargs):
        plan = self._self_plan
        if (
            plan is not None
            and not kwargs
            and plan.version == _tracing.version
            and _tracing.ctx is None
        ):
            for a in args:
                # Weak-typed arrays (jnp.full(..., 2.0)) take the slow path to
                # be made strong, so they share the trace of other arrays.
                if type(a) is not _JAX_ARRAY or a.weak_type:
                    break
            else:
                # The hot path: read leaves, one jax.jit call, write back what
                # the trace assigned. Everything else is in _run.
                self._current = plan
                # The input list is reused while no variable was written since.
                if plan.epoch == _tracing.write_epoch:
                    leaves = plan.leaves
                else:
                    leaves = plan.leaves = [v._v for v in plan.vars]
                    plan.epoch = _tracing.write_epoch
                try:
                    out, assigned, created = plan.jitted(leaves, args, None)
                except _tracing.Capture:
                    return self._run(plan, args, None)
                if assigned:
                    vars_ = plan.vars
                    for i, value in assigned.items():
                        vars_[i]._v = value
                        leaves[i] = value
                    # Other plans holding these variables must re-read them.
                    _tracing.write_epoch += 1
                    plan.epoch = _tracing.write_epoch
                if created or self._record is not None:
                    self._finish(created)
                return out
        if (
            not kwargs
            and self._fast
            and all(type(a) is _JAX_ARRAY and not a.weak_type for a in args)
        ):
            return self._run(self._plan(self._self_roots), args, None)
        roots, dyn, static = self._split(args, kwargs)
        return self._run(self._plan(roots), dyn, static)

    def _run(self, plan, dyn, static):
        for _ in range(_MAX_CAPTURES):
            vars_ = plan.vars
            outer = _tracing.ctx
            if outer is not None:
                # Called inside another trace: that trace must know these too.
                for v in vars_:
                    outer.touch(v)
            leaves = [v._value for v in vars_]
            self._current = plan
            try:
                out, assigned, created = plan.jitted(leaves, dyn, static)
            except _tracing.Capture as capture:
                if (
                    outer is not None
                    and id(capture.variable) not in plan.ids
                    and (id(capture.variable) not in outer.known)
                ):
                    raise
                self._captures.append(capture.variable)
                _tracing.bump()
                plan = self._plan(plan.roots)
                continue
            for i, value in assigned.items():
                vars_[i]._value = value
            self._finish(created)
            return out
        raise TraceError(f"{self.__qualname__}: variables kept appearing while tracing")

    def _finish(self, created):
        """After a call that traced: give created variables values, tell the hooks."""
        if created:
            for v, value in zip(self._created, created):
                v._value = value
            self._created = ()
        if self._record is not None:
            record, self._record = self._record, None
            for hook in list(TRACE_HOOKS):
                hook(record)

    # -- plans and arguments --------------------------------------------------
    def _plan(self, roots):
        key = tuple(map(id, roots))
        plan = self._plans.get(key)
        if plan is not None and plan.version == _tracing.version:
            return plan
        names = self._root_names(roots)
        plan = _Plan(roots, names, self._captures)
        plan.jitted = self._jitted.get(plan.key)
        if plan.jitted is None:
            plan.jitted = self._jitted[plan.key] = self._make_jitted()
        if len(self._plans) > 16:
            self._plans.pop(next(iter(self._plans)))
        self._plans[key] = plan
        if (
            self._fast
            and len(roots) == len(self._self_roots)
            and all(a is b for a, b in zip(roots, self._self_roots))
        ):
            self._self_plan = plan
        return plan

    def _root_names(self, roots):
        # A method's own variables keep bare paths (`dense_1/w`); modules passed
        # as arguments are prefixed by their name (`model/dense_1/w`).
        names = []
        for i, root in enumerate(roots):
            if i == 0 and self._inst_root:
                names.append("")
            elif len(roots) == 1 and not self._inst_root:
                names.append("")
            else:
                base = root.name if isinstance(root, Module) else (root.name or f"arg{i}")
                names.append(base + "/")
        return names

    def _split(self, args, kwargs):
        """Separates modules (state), arrays (traced) and Python values (static)."""
        forced = {}
        if self._static_argnames:
            bound = self._signature.bind(
                *((self._instance,) if self._instance is not None else ()), *args, **kwargs
            )
            bound.apply_defaults()
            for name in self._static_argnames:
                if name in bound.arguments:
                    forced[name] = bound.arguments.pop(name)
            params = list(bound.arguments.items())
            if self._instance is not None:
                params = params[1:]
            args, kwargs = (), dict(params)
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs), is_leaf=_is_special)
        roots = list(self._self_roots)
        dyn, spec = [], []
        for leaf in leaves:
            if isinstance(leaf, (Module, Variable)):
                index = next((i for i, r in enumerate(roots) if r is leaf), None)
                if index is None:
                    index = len(roots)
                    roots.append(leaf)
                spec.append(("m", index))
            elif type(leaf) in _ARRAY_TYPES or isinstance(leaf, (jax.Array, np.generic)):
                dyn.append(_strong(leaf))
                spec.append(_DYN)
            elif _is_number_list(leaf):
                dyn.append(_strong(jnp.asarray(leaf)))
                spec.append(_DYN)
            else:
                try:
                    hash(leaf)
                except TypeError as e:
                    raise TraceError(
                        f"{self.__qualname__}: argument of type {type(leaf).__name__} is "
                        f"neither an array nor hashable, so it cannot be a static value: {e}"
                    ) from None
                spec.append(("s", leaf))
        if (
            not forced
            and not kwargs
            and all(s is _DYN for s in spec)
            and (treedef == jax.tree_util.tree_structure((tuple(spec), {})))
        ):
            # Plain positional arrays: the same cache entry as the fast path.
            return tuple(roots), tuple(dyn), None
        static = (treedef, tuple(spec), tuple(sorted(forced.items())))
        return tuple(roots), tuple(dyn), static

    def _rebuild(self, plan, dyn, static):
        if static is None:
            args = (self._instance, *dyn) if self._instance is not None else tuple(dyn)
            return args, {}
        treedef, spec, forced = static
        it = iter(dyn)
        leaves = []
        for s in spec:
            if s is _DYN or s == _DYN:
                leaves.append(next(it))
            elif s[0] == "m":
                leaves.append(plan.roots[s[1]])
            else:
                leaves.append(s[1])
        args, kwargs = jax.tree_util.tree_unflatten(treedef, leaves)
        kwargs = {**kwargs, **dict(forced)}
        if self._instance is not None:
            args = (self._instance, *args)
        return args, kwargs

    # -- tracing --------------------------------------------------------------
    def _make_jitted(self, lowering=False):
        def pure(leaves, dyn, static):
            return self._trace(leaves, dyn, static, lowering)

        pure.__name__ = getattr(self._fn, "__name__", "fn")
        return jax.jit(pure, static_argnums=(2,), donate_argnums=(0,) if self._donate else ())

    def _trace(self, leaves, dyn, static, lowering):
        plan = self._current
        args, kwargs = self._rebuild(plan, dyn, static)
        vars_ = plan.vars
        originals = [v._value for v in vars_]
        snap = snapshot(plan.modules)
        ctx = _tracing.TraceContext(set(plan.ids), plan.scope_names)
        for v, x in zip(vars_, leaves):
            v._value = x
        _tracing.enter(ctx)
        committed = False
        try:
            scope = plan.scope_names.get(id(self._instance)) or self._fn.__name__
            with jax.named_scope(scope):
                out = self._fn(*args, **kwargs)
            # A returned variable is returned as its value (read before the
            # originals are put back below).
            out = jax.tree_util.tree_map(
                lambda x: x._value if isinstance(x, Variable) else x,
                out,
                is_leaf=lambda x: isinstance(x, Variable),
            )
            if self._donate:
                assigned = {i: v._value for i, v in enumerate(vars_)}
            else:
                assigned = {
                    i: v._value for i, (v, x) in enumerate(zip(vars_, leaves)) if v._value is not x
                }
            assigned = _keep_layouts(assigned, originals)
            created = list(ctx.created)
            created_values = [v._value for v in created]
            committed = not lowering
        finally:
            _tracing.leave(ctx)
            for v, value in zip(vars_, originals):
                v._value = value
            if not committed:
                rollback(snap)
        if lowering:
            return out, assigned, created_values
        self._created = created
        if created:
            # The structure changed: later calls need a plan with these inputs.
            self._jitted.pop(plan.key, None)
            _tracing.bump()
        self._note_trace(plan, leaves, dyn, static, args, kwargs)
        return out, assigned, created_values

    def _note_trace(self, plan, leaves, dyn, static, args, kwargs):
        self.trace_count += 1
        sig = self._make_signature(plan, leaves, args, kwargs)
        if self.signatures:
            reasons = self.signatures[-1].explain_change(sig)
            self.retrace_reasons.append(reasons)
            log = logger.warning if self.trace_count > _RETRACE_WARNING else logger.info
            log(
                "jmod.jit: %s traced again (trace %d): %s",
                self.__qualname__,
                self.trace_count,
                "; ".join(reasons),
            )
        self.signatures.append(sig)
        if TRACE_HOOKS:
            # Only jmod.summary registers hooks; it names the graph's inputs.
            from jmod.summary._graph import input_names

            call_args = args[1:] if self._instance is not None else args
            self._record = TraceRecord(
                self,
                plan,
                [_spec(x) for x in leaves],
                [_spec(x) for x in dyn],
                static,
                input_names(self, plan, call_args, kwargs),
            )
            self._record.state_count = len(plan.paths)

    def _make_signature(self, plan, leaves, args, kwargs):
        def describe(x):
            if isinstance(x, (Module, Variable)):
                return f"<{type(x).__name__} {x.name!r}>"
            if isinstance(x, (jax.Array, np.ndarray, np.generic)) or hasattr(x, "aval"):
                return _spec(x)
            return x

        try:
            bound = self._signature.bind(*args, **kwargs).arguments
        except TypeError:
            bound = {f"arg{i}": a for i, a in enumerate(args)} | kwargs
        if self._instance is not None:
            bound = dict(list(bound.items())[1:])
        arguments = {
            k: jax.tree_util.tree_map(describe, v, is_leaf=_is_special) for k, v in bound.items()
        }
        state = {p: _spec(x) for p, x in zip(plan.paths, leaves)}
        trainable = {p: v.trainable for p, v in zip(plan.paths, plan.vars)}
        return Signature(arguments, state, trainable, dict(plan.module_versions))

    # -- inspection -----------------------------------------------------------
    def _prepare(self, args, kwargs):
        roots, dyn, static = self._split(args, kwargs)
        plan = self._plan(roots)
        return plan, dyn, static

    def _lowering_call(self, plan, dyn, static, run):
        for _ in range(_MAX_CAPTURES):
            self._current = plan
            leaves = [v._value for v in plan.vars]
            try:
                return run(plan, leaves)
            except _tracing.Capture as capture:
                self._captures.append(capture.variable)
                _tracing.bump()
                plan = self._plan(plan.roots)
        raise TraceError(f"{self.__qualname__}: variables kept appearing while tracing")

    def lower(self, *args, **kwargs):
        """The `jax.stages.Lowered` computation for these arguments (no trace counted)."""
        plan, dyn, static = self._prepare(args, kwargs)
        lowering = self._make_jitted(lowering=True)
        return self._lowering_call(
            plan, dyn, static, lambda p, leaves: lowering.lower(leaves, dyn, static)
        )

    def jaxpr(self, *args, **kwargs):
        """The traced computation as a `ClosedJaxpr`; inputs: state leaves, then arrays."""
        plan, dyn, static = self._prepare(args, kwargs)
        specs = [_spec(x) for x in dyn]
        return self._lowering_call(
            plan,
            dyn,
            static,
            lambda p, leaves: self._make_jaxpr(p, [_spec(x) for x in leaves], specs, static),
        )

    def _make_jaxpr(self, plan, leaf_specs, dyn_specs, static):
        self._current = plan

        def flat(leaves, dyn):
            return self._trace(leaves, dyn, static, lowering=True)

        return jax.make_jaxpr(flat)(list(leaf_specs), tuple(dyn_specs))

    def state_paths(self, *args, **kwargs):
        """The variable paths of the state inputs, in the order the jaxpr takes them."""
        plan, _, _ = self._prepare(args, kwargs)
        return list(plan.paths)

    def graph(self, *args, **kwargs):
        """The traced computation as a TensorBoard GraphDef (see `jmod.summary`)."""
        from jmod.summary import _graph

        return _graph.graph_of(self, *args, **kwargs)

    def __repr__(self):
        return f"<jmod.jit {self.__qualname__}: {self.trace_count} traces>"

    # -- export ---------------------------------------------------------------
    def pure_function(self, *args, **kwargs):
        """The pure computation behind one call, for `jax.export` (`jmod.saved_model`).

        Returns `(fn, variables, paths)`. `fn(leaves, arrays)` is a `jax.jit`
        function of the state leaves (the values of `variables`, whose paths
        are `paths`) and the array arguments in the order the call flattens
        them; it returns `(output, {path: new value})` for the variables the
        call assigns. Python values among the arguments stay fixed as given.
        Variables the call reads outside its modules are found first (one
        abstract trace), so `variables` is complete. Nothing is mutated and
        no trace is counted.
        """
        plan, dyn, static = self._prepare(args, kwargs)

        def pure(leaves, arrays):
            self._current = plan
            out, assigned, created = self._trace(leaves, arrays, static, lowering=True)
            if created:
                raise TraceError(
                    f"{self.__qualname__}: the call creates variables; call it once "
                    "(to build its modules) before exporting it"
                )
            return out, {plan.paths[i]: value for i, value in assigned.items()}

        def probe(found, leaves):
            nonlocal plan
            plan = found
            jax.eval_shape(pure, [_spec(x) for x in leaves], [_spec(x) for x in dyn])

        self._lowering_call(plan, dyn, static, probe)
        pure.__name__ = getattr(self._fn, "__name__", "fn")
        return jax.jit(pure), list(plan.vars), list(plan.paths)


class JitFunction:
    """What `@jmod.jit` returns: a compiled free function, or a method descriptor."""

    def __init__(self, fn, static_argnames=(), donate_state=False):
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._options = (tuple(static_argnames), donate_state)
        self._attr = f"_jmod_jit_{getattr(fn, '__name__', 'fn')}"
        self._free = None

    def __set_name__(self, owner, name):
        self._attr = f"_jmod_jit_{name}"

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        compiled = instance.__dict__.get(self._attr)
        if compiled is None:
            compiled = Compiled(self._fn, instance, *self._options)
            instance.__dict__[self._attr] = compiled
        return compiled

    def _compiled(self):
        if self._free is None:
            self._free = Compiled(self._fn, None, *self._options)
        return self._free

    def __call__(self, *args, **kwargs):
        return self._compiled()(*args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._compiled(), name)


def jit(fn=None, *, static_argnames=(), donate_state=False):
    """Compiles a function or method whose arguments (or `self`) hold modules.

    The variables of every module reachable from the arguments become the
    inputs of one cached `jax.jit` computation; variables assigned inside
    are written back. Each input signature (array shapes/dtypes, Python
    values, state structure) is traced exactly once. Python numbers and
    nested lists of numbers become arrays; other Python values (bools,
    strings, None) are static. `fn.retrace_reasons` says why each retrace
    happened.

    Example:
        >>> class Counter(jmod.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.n = jmod.Variable(0.0)
        ...     @jmod.jit
        ...     def __call__(self, x):
        ...         self.n.assign(self.n + x)
        ...         return self.n * 2
        >>> c = Counter()
        >>> float(c(1.0)), float(c(2.0)), c.__call__.trace_count
        (2.0, 6.0, 1)

    Args:
        fn: the function or method.
        static_argnames: arguments always treated as static Python values
            (ints used as loop counts, say).
        donate_state: donate the state buffers to the computation (saves
            memory and copies in train steps; arrays read from variables
            before the call become invalid after it).
    """
    if fn is None:
        return functools.partial(jit, static_argnames=static_argnames, donate_state=donate_state)
    if isinstance(static_argnames, str):
        static_argnames = (static_argnames,)
    return JitFunction(fn, static_argnames, donate_state)
