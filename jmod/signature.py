"""What `jmod.jit` records of each trace: `Signature`, and why a retrace happened."""

import jax
import jax.numpy as jnp


def is_number_list(x):
    """Whether `x` is a non-empty (nested) list or tuple of Python numbers (bools excluded).

    `jmod.jit` and layers take such a value as one array (`layer([[2.0, 2.0, 2.0]])`).

    Example:
        >>> from jmod.signature import is_number_list
        >>> is_number_list([[1.0, 2.0]]), is_number_list([]), is_number_list([True])
        (True, False, False)
    """
    if isinstance(x, (list, tuple)):
        return len(x) > 0 and all(is_number_list(i) for i in x)
    return isinstance(x, (int, float, complex)) and not isinstance(x, bool)


def is_special(x):
    """Whether `jmod.jit` treats `x` as one argument leaf: a module, a variable or a number list."""
    from jmod.module import Module
    from jmod.variables import Variable

    return isinstance(x, (Module, Variable)) or (isinstance(x, list) and is_number_list(x))


def _spec(x):
    return jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)


def _describe(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return f"{jnp.dtype(x.dtype).name}{list(x.shape)}"
    return repr(x)


class Signature:
    """One traced input signature: argument specs, static values, state specs."""

    def __init__(self, arguments, state, trainable, module_versions):
        self.arguments = arguments
        self.state = state
        self.trainable = trainable
        self.module_versions = module_versions

    def __repr__(self):
        args = ", ".join(f"{k}={_describe(v)}" for k, v in self.arguments.items())
        return f"Signature({args}; state: {len(self.state)} variables)"

    def flat_arguments(self):
        out = {}
        for name, value in self.arguments.items():
            flat, _ = jax.tree_util.tree_flatten_with_path(value)
            if not flat:
                out[name] = value
            for path, leaf in flat:
                out[name + jax.tree_util.keystr(path)] = leaf
        return out

    def explain_change(self, new):
        """Why `new` is a different signature from this one, as readable lines."""
        reasons = []
        old_args, new_args = self.flat_arguments(), new.flat_arguments()
        for name in dict.fromkeys([*old_args, *new_args]):
            a, b = old_args.get(name, "<absent>"), new_args.get(name, "<absent>")
            if _describe(a) != _describe(b):
                reasons.append(f"argument {name}: {_describe(a)} -> {_describe(b)}")
        for path in dict.fromkeys([*self.state, *new.state]):
            a, b = self.state.get(path), new.state.get(path)
            if a is None:
                reasons.append(f"state: variable {path} added ({_describe(b)})")
            elif b is None:
                reasons.append(f"state: variable {path} removed")
            elif _describe(a) != _describe(b):
                reasons.append(f"state: variable {path}: {_describe(a)} -> {_describe(b)}")
            elif self.trainable[path] != new.trainable[path]:
                reasons.append(f"state: variable {path} trainable -> {new.trainable[path]}")
        changed = [
            p
            for p, v in new.module_versions.items()
            if p in self.module_versions and self.module_versions[p] != v
        ]
        if changed and not reasons:
            reasons.append(f"module attributes changed: {', '.join(changed)}")
        return reasons or ["an equal signature was traced before under another plan"]
