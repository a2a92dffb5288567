"""`jmod.jit`: compile functions and methods over stateful modules.

Per call the hot path reads the current variable values in plan order,
calls one cached `jax.jit` function (whose C++ dispatch does the signature
lookup) and writes back only the variables the trace assigned. The plan
(which variables, in what order) is rebuilt only when some module's
structure changed, which `jmod._tracing.version` tells in one comparison.

A trace runs the function inside a strict binding scope (`jmod._scope`) that
maps each planned variable to its tracer; the assignments and creations it
records come back as outputs and are committed after the call. A `Compiled`
keeps only caches (plans, jitted functions, signatures); what one call needs
while it traces travels in a context variable, so threads may share it.
"""

import contextvars
import functools
import inspect
import logging
import threading

import jax
import jax.numpy as jnp
import numpy as np

from jmod import _scope, _tracing
from jmod.errors import TraceError
from jmod.module import Module, rollback, snapshot
from jmod.signature import Signature, _spec, is_number_list, is_special
from jmod.variables import Variable, _strong

logger = logging.getLogger("jmod")

# Callables told about every finished trace (jmod.summary's graph recorder).
TRACE_HOOKS: list = []

# The concrete array type, learned from the first array a call receives:
# making one at import would start the XLA backend, after which
# jax.distributed.initialize (jmod.distributed.initialize) refuses to run.
_JAX_ARRAY = None
_MAX_CAPTURES = 64
_RETRACE_WARNING = 5
_DYN = "dyn"

# First calls (which may build modules) run one at a time, so concurrent
# first calls from threads build a model exactly once.
_BUILD = threading.RLock()

# The call being traced, for the traced function: (Compiled, plan, ...).
_calling = contextvars.ContextVar("jmod_jit_call", default=None)


class _Retry(Exception):
    """A trace started on the hot path, which carries no call record: take the slow path."""


class _Call:
    """What one call's trace needs and leaves behind: never stored on the `Compiled`."""

    __slots__ = ("compiled", "plan", "lowering", "created", "record")

    def __init__(self, compiled, plan, lowering=False):
        self.compiled = compiled
        self.plan = plan
        self.lowering = lowering
        self.created = ()
        self.record = None


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
        "cache",
        "called",
        "own_root",
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
        # (write epoch, input values): the values read at that epoch, one
        # tuple so that a thread never pairs one epoch with another's list.
        self.cache = (-1, None)
        self.called = False  # a call through this plan completed
        self.own_root = bool(root_names) and root_names[0] == ""


def _graph_names(plan):
    # The bound module's own variables get its name in front (`the_model/dense_1/w`),
    # as the paths of modules passed as arguments already have.
    state = list(plan.paths)
    roots = plan.roots
    if roots and isinstance(roots[0], Module) and plan.own_root:
        scope = plan.scope_names.get(id(roots[0]))
        if scope:
            own = {id(v) for _, v in _root_walk(roots[0])[0]}
            state = [
                f"{scope}/{path}" if id(var) in own else path
                for path, var in zip(state, plan.vars, strict=True)
            ]
    return state


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
    """A function (or a method bound to one instance) compiled by `jmod.jit`.

    It holds caches only (plans, jitted functions, signatures); one
    `Compiled` may be called from many threads, with different modules.
    """

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
        self._captures = ()
        self._notes = threading.Lock()
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
            and _scope._current.get() is None
        ):
            for a in args:
                # Weak-typed arrays (jnp.full(..., 2.0)) take the slow path to
                # be made strong, so they share the trace of other arrays.
                if type(a) is not _JAX_ARRAY or a.weak_type:
                    break
            else:
                # The hot path: read leaves, one jax.jit call, write back what
                # the trace assigned. Everything else is in _run.
                if self._donate:
                    try:
                        return self._donating_call(plan, args)
                    except (_Retry, _scope.Capture):
                        return self._run(plan, args, None)
                epoch, leaves = plan.cache
                ticket = None
                if epoch != _scope.epoch or _scope._donors:
                    # No cached inputs from the current epoch (or donation may
                    # delete what is read): read them under the lock, so no
                    # write-back is seen half done.
                    with _scope.lock:
                        epoch = _scope.epoch
                        if plan.cache[0] == epoch:
                            leaves = plan.cache[1]
                        else:
                            leaves = [v._v for v in plan.vars]
                            plan.cache = (epoch, leaves)
                        if _scope._donors:
                            ticket = _scope.pin(leaves)
                try:
                    out, assigned, _ = plan.jitted(leaves, args, None)
                except (_Retry, _scope.Capture):
                    return self._run(plan, args, None)
                finally:
                    if ticket is not None:
                        _scope.unpin(ticket)
                if assigned:
                    self._write_back(plan, leaves, epoch, assigned)
                return out
        if (
            not kwargs
            and self._fast
            and all(type(a) is _JAX_ARRAY and not a.weak_type for a in args)
        ):
            return self._run(self._plan(self._self_roots), args, None)
        roots, dyn, static = self._split(args, kwargs)
        return self._run(self._plan(roots), dyn, static)

    def _write_back(self, plan, leaves, epoch, assigned):
        """Commits a call's assignments, atomically for readers under the lock."""
        vars_ = plan.vars
        with _scope.lock:
            for i, value in assigned.items():
                vars_[i]._v = value
            if _scope.epoch == epoch:
                # Nothing else was written since these leaves were read: the
                # cache stays valid with the new values in (a new list: another
                # thread may be handing the old one to its call right now).
                leaves = list(leaves)
                for i, value in assigned.items():
                    leaves[i] = value
                plan.cache = (epoch + 1, leaves)
            _scope.epoch += 1

    def _donating_call(self, plan, dyn, static=None):
        # Read, dispatch and write back under the lock: the old buffers are
        # gone once dispatched, so nobody may read them in between, and any a
        # reader or snapshot holds are copied first (`_scope.unpinned`).
        with _scope.lock:
            _scope._donors = True
            leaves = _scope.unpinned([v._v for v in plan.vars])
            out, assigned, created = plan.jitted(leaves, dyn, static)
            vars_ = plan.vars
            for i, value in assigned.items():
                vars_[i]._v = value
            _scope.epoch += 1
        return out

    # -- the slow path -----------------------------------------------------------
    def _run(self, plan, dyn, static):
        outer = _scope.current()
        if outer is None and not plan.called:
            # A first call may build modules: one thread at a time, and the
            # plan read again once this thread holds the lock (another may have
            # built the structure meanwhile).
            with _BUILD:
                return self._run_planned(self._plan(plan.roots), dyn, static, outer)
        return self._run_planned(plan, dyn, static, outer)

    def _run_planned(self, plan, dyn, static, outer):
        for _ in range(_MAX_CAPTURES):
            # Inside another computation its values are this call's inputs. Read
            # outside the `try`: a variable the enclosing trace does not know is
            # that trace's capture (it retraces), not this call's.
            leaves = None if outer is None else [outer.read(v) for v in plan.vars]
            call = _Call(self, plan)
            token = _calling.set(call)
            try:
                if self._donate and outer is None:
                    # Donated buffers are gone once dispatched: nobody may read
                    # the variables until the new values are in.
                    with _scope.lock:
                        out, assigned, created = self._dispatch(plan, dyn, static, leaves)
                        self._finish(call, plan, assigned, created, outer)
                    return out
                out, assigned, created = self._dispatch(plan, dyn, static, leaves)
            except _scope.Capture as capture:
                # A variable outside the plan (the global generator): make it an input.
                self._add_capture(capture.variable)
                plan = self._plan(plan.roots)
                continue
            finally:
                _calling.reset(token)
            self._finish(call, plan, assigned, created, outer)
            return out
        raise TraceError(f"{self.__qualname__}: variables kept appearing while tracing")

    def _dispatch(self, plan, dyn, static, leaves):
        if leaves is not None:
            return plan.jitted(leaves, dyn, static)
        if self._donate:
            with _scope.lock:
                _scope._donors = True
                leaves = _scope.unpinned([v._v for v in plan.vars])
                return plan.jitted(leaves, dyn, static)
        with _scope.lock:
            leaves = [v._v for v in plan.vars]
            ticket = _scope.pin(leaves) if _scope._donors else None
        try:
            return plan.jitted(leaves, dyn, static)
        finally:
            if ticket is not None:
                _scope.unpin(ticket)

    def _finish(self, call, plan, assigned, created, outer):
        """After a call: hand back assignments and created variables, tell the hooks."""
        vars_ = plan.vars
        writes = [(vars_[i], value) for i, value in assigned.items()]
        born = list(zip(call.created, created))
        if outer is not None:
            for var, value in writes:
                outer.write(var, value)
            for var, value in born:
                outer.create(var, value)
        else:
            _scope.commit(writes + born)
            plan.called = True
            if (
                self._fast
                and len(plan.roots) == len(self._self_roots)
                and all(a is b for a, b in zip(plan.roots, self._self_roots))
            ):
                self._self_plan = plan
        if call.record is not None:
            for hook in list(TRACE_HOOKS):
                hook(call.record)

    def _add_capture(self, variable):
        if all(v is not variable for v in self._captures):
            self._captures = (*self._captures, variable)
        _tracing.bump()

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
            self._plans.pop(next(iter(self._plans), None), None)
        self._plans[key] = plan
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
        global _JAX_ARRAY
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs), is_leaf=is_special)
        roots = list(self._self_roots)
        dyn, spec = [], []
        for leaf in leaves:
            if isinstance(leaf, (Module, Variable)):
                index = next((i for i, r in enumerate(roots) if r is leaf), None)
                if index is None:
                    index = len(roots)
                    roots.append(leaf)
                spec.append(("m", index))
            elif isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
                if _JAX_ARRAY is None and not isinstance(leaf, (jax.core.Tracer, np.ndarray)):
                    _JAX_ARRAY = type(leaf)
                dyn.append(_strong(leaf))
                spec.append(_DYN)
            elif is_number_list(leaf):
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
    def _make_jitted(self):
        def pure(leaves, dyn, static):
            call = _calling.get()
            if call is None or call.compiled is not self:
                raise _Retry
            return self._trace(call, leaves, dyn, static)

        pure.__name__ = getattr(self._fn, "__name__", "fn")
        return jax.jit(pure, static_argnums=(2,), donate_argnums=(0,) if self._donate else ())

    def _trace(self, call, leaves, dyn, static):
        plan = call.plan
        args, kwargs = self._rebuild(plan, dyn, static)
        vars_ = plan.vars
        snap = snapshot(plan.modules)
        scope = _scope.Scope(zip(vars_, leaves), strict=True, names=plan.scope_names)
        committed = False
        try:
            with scope:
                name = plan.scope_names.get(id(self._instance)) or self._fn.__name__
                with jax.named_scope(name):
                    out = self._fn(*args, **kwargs)
                # A returned variable is returned as its value.
                out = jax.tree_util.tree_map(
                    lambda x: x.value if isinstance(x, Variable) else x,
                    out,
                    is_leaf=lambda x: isinstance(x, Variable),
                )
            values = scope.values
            if self._donate:
                assigned = {i: values[id(v)] for i, v in enumerate(vars_)}
            else:
                assigned = {
                    i: values[id(v)] for i, v in enumerate(vars_) if id(v) in scope.assigned
                }
            assigned = _keep_layouts(assigned, [v._v for v in vars_])
            created = list(scope.created)
            created_values = [values[id(v)] for v in created]
            committed = not call.lowering
        finally:
            if not committed:
                rollback(snap)
        if call.lowering:
            return out, assigned, created_values
        call.created = created
        if created:
            # The structure changed: later calls need a plan with these inputs.
            self._jitted.pop(plan.key, None)
            _tracing.bump()
        self._note_trace(call, leaves, dyn, static, args, kwargs)
        return out, assigned, created_values

    def _note_trace(self, call, leaves, dyn, static, args, kwargs):
        plan = call.plan
        sig = self._make_signature(plan, leaves, args, kwargs)
        with self._notes:
            self.trace_count += 1
            count = self.trace_count
            reasons = self.signatures[-1].explain_change(sig) if self.signatures else None
            if reasons is not None:
                self.retrace_reasons.append(reasons)
            self.signatures.append(sig)
        if reasons is not None:
            log = logger.warning if count > _RETRACE_WARNING else logger.info
            log(
                "jmod.jit: %s traced again (trace %d): %s",
                self.__qualname__,
                count,
                "; ".join(reasons),
            )
        if TRACE_HOOKS:
            # Only jmod.summary registers hooks; it names the graph's arguments.
            from jmod.summary._graph import argument_names

            call_args = args[1:] if self._instance is not None else args
            call.record = TraceRecord(
                self,
                plan,
                [_spec(x) for x in leaves],
                [_spec(x) for x in dyn],
                static,
                _graph_names(plan) + argument_names(self, call_args, kwargs),
            )
            call.record.state_count = len(plan.paths)

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
            k: jax.tree_util.tree_map(describe, v, is_leaf=is_special) for k, v in bound.items()
        }
        state = {p: _spec(x) for p, x in zip(plan.paths, leaves)}
        trainable = {p: v.trainable for p, v in zip(plan.paths, plan.vars)}
        return Signature(arguments, state, trainable, dict(plan.module_versions))

    # -- inspection -----------------------------------------------------------
    def _prepare(self, args, kwargs):
        roots, dyn, static = self._split(args, kwargs)
        plan = self._plan(roots)
        return plan, dyn, static

    def _traced_fn(self, plan, static):
        """The call as a pure function of (leaves, arrays) for this plan; records nothing."""

        def flat(leaves, dyn):
            return self._trace(_Call(self, plan, lowering=True), leaves, dyn, static)

        flat.__name__ = getattr(self._fn, "__name__", "fn")
        return flat

    def _lowering_call(self, plan, run):
        # Variables outside the plan found while tracing become inputs, as in a call.
        for _ in range(_MAX_CAPTURES):
            leaves = [v._v for v in plan.vars]
            try:
                return run(plan, leaves)
            except _scope.Capture as capture:
                self._add_capture(capture.variable)
                plan = self._plan(plan.roots)
        raise TraceError(f"{self.__qualname__}: variables kept appearing while tracing")

    def lower(self, *args, **kwargs):
        """The `jax.stages.Lowered` computation for these arguments (no trace counted)."""
        plan, dyn, static = self._prepare(args, kwargs)
        return self._lowering_call(
            plan, lambda p, leaves: jax.jit(self._traced_fn(p, static)).lower(leaves, dyn)
        )

    def jaxpr(self, *args, **kwargs):
        """The traced computation as a `ClosedJaxpr`; inputs: state leaves, then arrays."""
        plan, dyn, static = self._prepare(args, kwargs)
        specs = [_spec(x) for x in dyn]
        return self._lowering_call(
            plan, lambda p, leaves: self._make_jaxpr(p, [_spec(x) for x in leaves], specs, static)
        )

    def _make_jaxpr(self, plan, leaf_specs, dyn_specs, static):
        return jax.make_jaxpr(self._traced_fn(plan, static))(list(leaf_specs), tuple(dyn_specs))

    def graph_names(self, *args, **kwargs):
        """Names of the jaxpr's inputs for these arguments: variable paths, then arguments."""
        from jmod.summary._graph import argument_names

        plan, _, _ = self._prepare(args, kwargs)
        return _graph_names(plan) + argument_names(self, args, kwargs)

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
        specs = [_spec(x) for x in dyn]

        def probe(found, leaves):
            traced = self._traced_fn(found, static)
            _, _, created = jax.eval_shape(traced, [_spec(x) for x in leaves], specs)
            if created:
                raise TraceError(
                    f"{self.__qualname__}: the call creates variables; call it once "
                    "(to build its modules) before exporting it"
                )
            return found

        plan = self._lowering_call(plan, probe)
        traced = self._traced_fn(plan, static)

        def pure(leaves, arrays):
            out, assigned, _ = traced(leaves, arrays)
            return out, {plan.paths[i]: value for i, value in assigned.items()}

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
