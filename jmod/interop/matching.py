"""What every importer shares: the model's layers in order, renaming, the report, assignment.

The pure part: `rename` (a `mapping=` applied to a key) and `LoadReport` (what
matched, what was left over on either side). The part that touches a model:
`layer_units` (its weight-owning layers in module order, with their variable
paths) and `assign_all` (checks every value first, then assigns, so a failed
load leaves the model unchanged).
"""

import re
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from jmod.errors import InteropError
from jmod.module import Module
from jmod.variables import Variable


def shape_str(shape):
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def rename(mapping, key):
    """The name `key` gets under `mapping`: a callable, or `{regex: replacement}`.

    A callable returns the new name, or None to leave the key out. With a
    dict, the first pattern that matches the whole key gives
    `match.expand(replacement)` (None leaves the key out); a key no pattern
    matches keeps its name.

    Example:
        >>> jmod.interop.matching.rename({r"encoder\\.(\\d+)": r"blocks/\\1"}, "encoder.3")
        'blocks/3'
        >>> jmod.interop.matching.rename(lambda k: k.upper(), "fc")
        'FC'
    """
    if mapping is None:
        return key
    if callable(mapping):
        return mapping(key)
    if isinstance(mapping, dict):
        for pattern, replacement in mapping.items():
            m = re.fullmatch(pattern, key)
            if m:
                return None if replacement is None else m.expand(replacement)
        return key
    raise InteropError(
        "mapping= must be a callable or a dict {regex: replacement}, got "
        f"{type(mapping).__name__}"
    )


@dataclass
class LoadReport:
    """What a load matched, and what it left unmatched on either side.

    Example:
        >>> r = jmod.interop.LoadReport("w.safetensors")
        >>> r.matched.append(("fc.weight", "dense/kernel", (3, 2), "transposed"))
        >>> r.unused.append(("fc.extra", (4,)))
        >>> r.consumed
        False
        >>> print(r)
        w.safetensors: 1 matched, 1 unused in the file, 0 model variables not loaded
          fc.weight -> dense/kernel (3, 2) transposed
          unused: fc.extra (4,)

    Attributes:
        source: the file (or `<state_dict>`) the weights came from.
        matched: `(source key, model path, shape, how)` for each variable loaded.
        unused: `(source key, shape)` for each tensor the model did not take.
        missing: `(model path, shape)` for each variable that got no value.
        ignored: source keys deliberately skipped (PyTorch's `num_batches_tracked`).
        notes: settings that differ between the two models (a normalization's epsilon).
    """

    source: str
    matched: list = field(default_factory=list)
    unused: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    ignored: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def consumed(self):
        """True when every tensor of the file and every variable of the model matched."""
        return not self.unused and not self.missing

    def __str__(self):
        lines = [
            f"{self.source}: {len(self.matched)} matched, {len(self.unused)} unused in the "
            f"file, {len(self.missing)} model variables not loaded"
        ]
        for key, path, shape, how in self.matched:
            lines.append(f"  {key} -> {path} {shape_str(shape)}{' ' + how if how else ''}")
        lines += [f"  unused: {k} {shape_str(s)}" for k, s in self.unused]
        lines += [f"  not loaded: {p} {shape_str(s)}" for p, s in self.missing]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def check(self, strict):
        """Raises InteropError listing both sides' leftovers if `strict` and any remain."""
        if strict and not self.consumed:

            def listing(items):
                return ", ".join(f"{k} {shape_str(s)}" for k, s in items) or "none"

            raise InteropError(
                f"{self.source}: the file and the model do not match one to one; "
                f"unused in the file: {listing(self.unused)}; model variables not loaded: "
                f"{listing(self.missing)} (pass strict=False to load what matched)"
            )


def _children(module):
    """(attribute path, object) for the Modules/Variables a module holds, in assignment order."""
    seen = set()
    untracked = getattr(type(module), "_jmod_untracked", frozenset())

    def expand(prefix, value):
        if isinstance(value, (Module, Variable)):
            yield prefix, value
        elif isinstance(value, (list, tuple, dict)) and id(value) not in seen:
            seen.add(id(value))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                yield from expand(f"{prefix}/{key}", item)

    for name, value in vars(module).items():
        if name.startswith("_jmod") or name in untracked:
            continue
        yield from expand(name, value)


@dataclass
class Unit:
    """One weight-owning layer of a model: where it is, and its variables by local name."""

    path: str
    layer: Module
    variables: dict  # local name -> (model path, Variable)

    def describe(self):
        shapes = ", ".join(f"{n} {shape_str(v.shape)}" for n, (_, v) in self.variables.items())
        return f"jmod layer '{self.path}' ({type(self.layer).__name__}: {shapes})"


def layer_units(model, is_leaf):
    """The model's layers for which `is_leaf(layer)`, in module (definition) order.

    PyTorch's `state_dict` and Keras' layer lists follow the order layers were
    assigned, not the sorted order of `named_variables()`; walking `vars()` in
    insertion order gives the same order here. Returns `(units, stray)`:
    `stray` lists `(path, Variable)` held by no leaf layer.
    """
    paths = {id(v): p for p, v in model.named_variables()}
    if not paths:
        raise InteropError(
            f"model {model.name!r} has no variables yet: call it once on an example input "
            "(or build it) before loading weights into it"
        )
    units, covered, seen = [], set(), set()

    def visit(module, prefix):
        if id(module) in seen:
            return
        seen.add(id(module))
        if module is not model and is_leaf(module):
            local = {}
            for name, var in module.named_variables():
                local[name] = (paths[id(var)], var)
                covered.add(id(var))
            if local:
                units.append(Unit(prefix.rstrip("/") or module.name, module, local))
            return
        for path, obj in _children(module):
            if isinstance(obj, Module):
                visit(obj, prefix + path + "/")

    if is_leaf(model):
        local = {name: (paths[id(v)], v) for name, v in model.named_variables()}
        return [Unit(model.name, model, local)], []
    visit(model, "")
    stray = [(p, v) for p, v in model.named_variables() if id(v) not in covered]
    return units, stray


def layer_prefix(unit):
    """The common path of a unit's variables, e.g. `features/0` for `features/0/kernel`."""
    first = next(iter(unit.variables.values()))[0]
    return first.rsplit("/", 1)[0] if "/" in first else ""


def to_value(array, var, path, source):
    """`array` as a value for `var`: same shape, floats cast to the variable's dtype."""
    array = np.asarray(array)
    if tuple(array.shape) != tuple(var.shape):
        raise InteropError(
            f"{source}: {path} has shape {shape_str(array.shape)} in the file, the variable "
            f"is {shape_str(var.shape)}"
        )
    src, dst = np.dtype(array.dtype), np.dtype(var.dtype)
    if src != dst:
        floats = jnp.issubdtype(src, jnp.floating) and jnp.issubdtype(dst, jnp.floating)
        if not floats:
            raise InteropError(
                f"{source}: {path} is {src.name} in the file, the variable is {dst.name}; only "
                "floating-point values are cast"
            )
        array = array.astype(dst)
    return array


def assign_all(pending):
    """Assigns `(Variable, value)` pairs; values were checked by `to_value` beforehand."""
    for var, value in pending:
        var.assign(jnp.asarray(value))
