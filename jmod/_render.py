"""Rich notebook rendering of modules, variables and checkpoints, through treescope.

Jupyter calls `_repr_html_`; `jmod.Module` and `jmod.Variable` answer with
`to_html(self)`: a foldable treescope tree of the module's submodules and
variables, each line carrying the path that keys `state()` and checkpoints,
the shape, dtype, trainable flag and a summary of the values. The same
objects render inside any treescope output (`treescope.show(...)`, a dict of
modules) through `__treescope_repr__`, which calls `treescope_repr` here.

Plain `repr` stays one short line; only the HTML view is rich. Without
treescope installed, `_repr_html_` returns None and Jupyter shows `repr`.

Example:
    >>> m = jmod.Module()
    >>> m.w = jmod.Variable([[1.0, 2.0]])
    >>> html = to_html(m)
    >>> "float32(1, 2)" in html and "treescope" in html
    True
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from jmod import module as _module
from jmod.variables import Variable

__all__ = [
    "CheckpointListing",
    "html_method",
    "render_checkpoint",
    "to_html",
    "treescope_repr",
    "value_summary",
]


# ---------------------------------------------------------------- pure helpers


def value_summary(value) -> str:
    """A one-line summary of an array's values: mean, spread, range, special counts.

    Floats read `≈mean ±std [≥min, ≤max]` (plus `nan:k inf:k` when present),
    integers `[≥min, ≤max]`, booleans `true:k/n`, a single number `= v`.

    Example:
        >>> value_summary(np.array([1.0, 3.0]))
        '≈2.0 ±1.0 [≥1.0, ≤3.0]'
        >>> value_summary(np.array(7, np.int32))
        '= 7'
    """
    if isinstance(value, jax.core.Tracer):
        return "(traced)"  # a tracer: values exist only when the computation runs
    arr = np.asarray(value)
    if arr.size == 0:
        return "(empty)"
    kind = arr.dtype.kind
    if kind not in "biufc":
        # ml_dtypes (bfloat16, float8 ...) report kind 'V': compute in float32.
        arr, kind = arr.astype(np.float32), "f"
    if arr.size == 1:
        item = arr.reshape(()).item()
        return f"= {item:.4g}" if isinstance(item, float) else f"= {item}"
    if kind == "b":
        return f"true:{int(arr.sum())}/{arr.size}"
    if kind in "iu":
        return f"[≥{arr.min()}, ≤{arr.max()}]"
    if kind == "c":
        return f"≈{complex(arr.mean()):.2} |max|={float(np.abs(arr).max()):.2}"
    arr = arr.astype(np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size and finite.min() == finite.max():
        text = f"all {_num(finite.min())}"
    elif finite.size:
        text = (
            f"≈{_num(finite.mean())} ±{_num(finite.std())} "
            f"[≥{_num(finite.min())}, ≤{_num(finite.max())}]"
        )
    else:
        text = "(no finite values)"
    nans, infs = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
    if nans:
        text += f" nan:{nans}"
    if infs:
        text += f" inf:{infs}"
    return text


def _num(x) -> str:
    return f"{float(x):.2}"


def describe(shape, dtype) -> str:
    """`float32(3, 3)`: a dtype and shape the way treescope writes arrays."""
    return f"{np.dtype(dtype).name}{tuple(shape)}"


def _nbytes(shape, dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _count_text(named) -> str:
    """`2 variables, 12 parameters (48 B)` for a list of (path, Variable)."""
    params = sum(int(np.prod(v.shape, dtype=np.int64)) for _, v in named)
    size = sum(_nbytes(v.shape, v.dtype) for _, v in named)
    plural = "" if len(named) == 1 else "s"
    return f"{len(named)} variable{plural}, {params:,} parameters ({_bytes(size)})"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} B" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TB"  # pragma: no cover


# ---------------------------------------------------------------- treescope parts


def _parts():
    from treescope import rendering_parts

    return rendering_parts


def _expand_state(name):
    return getattr(_parts().ExpandState, name)


def _python_path(container, relpath, base):
    """The Python expression (`base.layers[0]`) for a module-relative `relpath`.

    None where no expression reaches it: the attribute is shadowed (a
    property over the stored dict, as `Model.layers`) or the walk changed.
    """
    if base is None:
        return None
    head, *rest = relpath.split("/")
    obj = vars(container).get(head)
    if getattr(type(container), head, None) is not None:
        return None  # a class attribute or property answers `obj.head`, not this value
    expr = f"{base}.{head}"
    for seg in rest:
        if isinstance(obj, dict):
            key = next((k for k in obj if str(k) == seg), None)
            if key is None:
                return None
            expr, obj = f"{expr}[{key!r}]", obj[key]
        elif isinstance(obj, (list, tuple)) and seg.isdigit() and int(seg) < len(obj):
            expr, obj = f"{expr}[{seg}]", obj[int(seg)]
        else:
            return None
    return expr


def _variable_node(var, path, subtree_renderer, jmod_path=None, label=None, expand="COLLAPSED"):
    """A variable: one line; expanded, its name, flag and the array itself."""
    rp = _parts()
    flag = "trainable" if var.trainable else "non-trainable"
    head = [label] if label is not None else []
    head += [
        rp.text("Variable"),
        rp.text(f" {var.name!r}" if var.name else ""),
        rp.text(" "),
        rp.custom_style(rp.text(describe(var.shape, var.dtype)), "font-weight: bold"),
        rp.text(f" {flag} "),
        rp.abbreviation_color(rp.text(value_summary(var._value))),
    ]
    if jmod_path:
        head.append(rp.comment_color(rp.text(f"  # {jmod_path}")))
    child = None if path is None else f"{path}.value"
    details = rp.indented_children(
        [
            rp.siblings("name=", repr(var.name)),
            rp.siblings("trainable=", repr(var.trainable)),
            rp.siblings_with_annotations("value=", subtree_renderer(var._value, path=child)),
        ]
    )
    return rp.build_custom_foldable_tree_node(
        label=rp.siblings(*head),
        contents=rp.fold_condition(expanded=details),
        path=path,
        expand_state=_expand_state(expand),
    )


def _module_node(module, path, subtree_renderer, prefix, label, seen):
    """A module and, indented, its variables then its submodules (the walk's order)."""
    rp = _parts()
    seen[id(module)] = prefix.rstrip("/") or "(root)"
    children = list(_module._children(module))
    lines = []
    for rel, obj in children:
        if isinstance(obj, Variable):
            lines.append(_child_line(module, rel, obj, path, subtree_renderer, prefix, seen))
    for rel, obj in children:
        if isinstance(obj, _module.Module):
            lines.append(_child_line(module, rel, obj, path, subtree_renderer, prefix, seen))
    named = module.named_variables()
    title = [label] if label is not None else []
    title += [rp.text(type(module).__name__), rp.text(f" {module.name!r}")]
    if getattr(module, "built", True) is False:
        title.append(rp.abbreviation_color(rp.text(" (not built)")))
    comment = _count_text(named) if named else "no variables"
    if prefix:
        comment = f"{prefix.rstrip('/')}: {comment}"
    comment = rp.comment_color(rp.text(f"  # {comment}"))
    if not lines:
        return rp.build_one_line_tree_node(rp.siblings(*title, comment), path=path)
    title += [rp.text(" ("), comment]
    return rp.build_foldable_tree_node_from_children(
        prefix=rp.siblings(*title),
        children=lines,
        suffix=")",
        path=path,
        expand_state=_expand_state("WEAKLY_EXPANDED" if prefix else "EXPANDED"),
    )


def _child_line(parent, rel, obj, path, subtree_renderer, prefix, seen):
    rp = _parts()
    label = rp.text(f"{rel}: ")
    jmod_path = prefix + rel
    child_path = _python_path(parent, rel, path)
    if id(obj) in seen:
        # Reachable twice: listed once, under its first path, as Module.variables does.
        what = "Variable" if isinstance(obj, Variable) else type(obj).__name__
        return rp.build_one_line_tree_node(
            rp.siblings(
                label,
                what,
                rp.comment_color(rp.text(f"  # same object as {seen[id(obj)]}")),
            ),
            path=child_path,
        )
    if isinstance(obj, Variable):
        seen[id(obj)] = jmod_path
        return _variable_node(obj, child_path, subtree_renderer, jmod_path, label)
    return _module_node(obj, child_path, subtree_renderer, jmod_path + "/", label, seen)


def treescope_repr(obj, path, subtree_renderer):
    """The treescope rendering of a `Module` or `Variable` (their `__treescope_repr__`)."""
    if isinstance(obj, Variable):
        # Shown on its own, a variable opens to its array; inside a module it is one line.
        return _variable_node(obj, path, subtree_renderer, expand="EXPANDED")
    return _module_node(obj, path, subtree_renderer, "", None, {})


# ---------------------------------------------------------------- HTML


def _renderer():
    import treescope
    from treescope import handlers

    # treescope would append each object's own `_repr_html_` in a frame; for
    # jmod objects that is this very rendering, called again without end.
    base = treescope.active_renderer.get()
    hooks = [h for h in base.wrapper_hooks if h is not handlers.append_repr_html_when_present]
    return type(base)(
        handlers=list(base.handlers),
        wrapper_hooks=hooks,
        context_builders=list(base.context_builders),
    )


def treescope_html(obj, roundtrip_mode=False, compressed=False) -> str:
    """Treescope's foldable HTML for `obj`, a self-contained fragment (script included)."""
    import treescope

    with treescope.active_renderer.set_scoped(_renderer()):
        return treescope.render_to_html(
            obj, roundtrip_mode=roundtrip_mode, ignore_exceptions=True, compressed=compressed
        )


# Above this size the HTML is sent zlib-compressed (treescope decompresses it
# in the browser): 300 variables of 256x256 made 0.9 MB plain, 57 KB compressed.
_PLAIN_HTML_LIMIT = 256 * 1024


def to_html(obj, compressed=None) -> str | None:
    """The notebook HTML of a module, variable or checkpoint listing; None without treescope.

    Plain HTML while it is small, so saved notebooks keep the paths
    searchable; compressed above ~256 KB (`compressed=None`), or as asked.
    A built model shows its `summary()` table above the tree.
    """
    try:
        import treescope  # noqa: F401
    except ImportError:
        return None
    tree = treescope_html(obj, compressed=bool(compressed))
    if compressed is None and len(tree) > _PLAIN_HTML_LIMIT:
        tree = treescope_html(obj, compressed=True)
    table = _summary_table(obj)
    return tree if table is None else f"{table}\n{tree}"


def html_method(obj):
    """What `obj._repr_html_` hands back: a callable returning `to_html(obj)`.

    A bound callable rather than a method on the class, so that treescope,
    which frames any class-level `_repr_html_` next to its own rendering,
    does not draw the same tree twice; IPython calls it all the same.
    """
    return functools.partial(to_html, obj)


def _summary_table(obj):
    """A built model's `summary()` table as HTML, when jmod.models offers one."""
    parts = getattr(obj, "_summary_parts", None)
    if parts is None or not getattr(obj, "built", False):
        return None
    try:
        from jmod.models import summary as _summary

        rows, totals, connections = parts()
        return _summary.format_html(obj.name, rows, totals, connections)
    except (ImportError, AttributeError, ValueError):
        return None  # no table for this model; the tree alone still shows everything


# ---------------------------------------------------------------- checkpoints


class CheckpointListing:
    """What a checkpoint on disk holds, by key: shape and dtype, read from its index only.

    Renders as a foldable tree in notebooks (keys grouped by their path
    segments) and as a short line in plain text. Built by `render_checkpoint`.

    Example:
        >>> import os, tempfile
        >>> m = jmod.Module()
        >>> m.w = jmod.Variable([[1.0, 2.0]])
        >>> ckpt = jmod.Checkpoint(model=m)
        >>> path = ckpt.write(os.path.join(tempfile.mkdtemp(), "ckpt"))
        >>> listing = render_checkpoint(path)
        >>> listing.entries[0]
        ('model/w', (1, 2), 'float32')
        >>> "model/w" in listing._repr_html_()
        True
    """

    def __init__(self, path, entries):
        self.path = os.fspath(path)
        self.entries = list(entries)

    def __repr__(self):
        return f"<CheckpointListing {self.path!r}: {len(self.entries)} values>"

    def _repr_html_(self):
        return to_html(self)

    def __treescope_repr__(self, path, subtree_renderer):
        rp = _parts()
        tree = {}
        for key, shape, dtype in self.entries:
            node = tree
            *dirs, leaf = key.split("/")
            for d in dirs:
                node = node.setdefault(d + "/", {})
            node[leaf] = (key, shape, dtype)
        size = sum(_nbytes(s, d) for _, s, d in self.entries)
        params = sum(int(np.prod(s, dtype=np.int64)) for _, s, _ in self.entries)
        comment = f"  # {len(self.entries)} values, {params:,} numbers ({_bytes(size)})"
        return rp.build_foldable_tree_node_from_children(
            prefix=rp.siblings(
                "Checkpoint ", repr(self.path), " (", rp.comment_color(rp.text(comment))
            ),
            children=_listing_lines(tree, ""),
            suffix=")",
            path=path,
            expand_state=_expand_state("EXPANDED"),
        )


def _listing_lines(tree, prefix):
    rp = _parts()
    lines = []
    for name in sorted(tree):
        item = tree[name]
        if isinstance(item, dict):
            lines.append(
                rp.build_foldable_tree_node_from_children(
                    prefix=rp.siblings(
                        name, " (", rp.comment_color(rp.text(f"  # {prefix}{name}"))
                    ),
                    children=_listing_lines(item, prefix + name),
                    suffix=")",
                    expand_state=_expand_state("WEAKLY_EXPANDED"),
                )
            )
        else:
            key, shape, dtype = item
            lines.append(
                rp.build_one_line_tree_node(
                    rp.siblings(
                        f"{name}: ",
                        rp.custom_style(rp.text(describe(shape, dtype)), "font-weight: bold"),
                        rp.comment_color(rp.text(f"  # {key}")),
                    )
                )
            )
    return lines


def render_checkpoint(path) -> CheckpointListing:
    """The keys, shapes and dtypes of the checkpoint at `path`, for display in a notebook.

    Reads only the index file (`jmod.checkpoint.list_variables`), never the values.

    Example:
        >>> import os, tempfile
        >>> m = jmod.Module()
        >>> m.b = jmod.Variable([0.0, 0.0, 0.0])
        >>> ckpt = jmod.Checkpoint(model=m)
        >>> path = ckpt.write(os.path.join(tempfile.mkdtemp(), "ckpt"))
        >>> render_checkpoint(path)
        <CheckpointListing '...ckpt': 1 values>
    """
    from jmod import checkpoint
    from jmod.checkpoint import _format

    listed = checkpoint.list_variables(path)
    index = _format.read_index(path).entries
    return CheckpointListing(path, [(k, tuple(s), index[k].dtype) for k, s in listed])
