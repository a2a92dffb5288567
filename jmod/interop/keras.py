"""Keras 3 files into jmod: `.weights.h5` / `.keras` weights, and `.keras` archives as models.

A Keras 3 weights file mirrors the model's object tree: a model's layers sit
under `layers/<name>`, where `<name>` is the layer's class name in
snake_case with a per-container counter (`dense`, `dense_1`, `conv2d`, ...),
and each layer's variables under `vars/0`, `vars/1`, ... in creation order
(Dense: kernel, bias; BatchNormalization: gamma, beta, moving_mean,
moving_variance). jmod layers keep Keras' classes, weight shapes and creation
order, so the same walk pairs them. A `.keras` archive is a zip of
`config.json` and `model.weights.h5`; `model_from_keras` rebuilds the model
from the config (plain JSON, read as data: no class or function named in it
is imported or run) and then loads the weights.
"""

import io
import json
import os
import re
import zipfile

from jmod.errors import InteropError
from jmod.interop import matching
from jmod.layers.attention import MultiHeadAttention
from jmod.module import Module
from jmod.variables import Variable


def _h5py():
    try:
        import h5py
    except ImportError:
        raise InteropError(
            "reading Keras weight files needs h5py (pip install 'jmod[interop]')"
        ) from None
    return h5py


def keras_key(cls_name):
    """Keras' name for a layer's group in a weights file: its class name in snake_case.

    Example:
        >>> key = jmod.interop.keras.keras_key
        >>> key("Conv2D"), key("MultiHeadAttention"), key("InputLayer")
        ('conv2d', 'multi_head_attention', 'input_layer')
    """
    name = re.sub(r"\W+", "", cls_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


def _read_archive(path):
    """`(config dict or None, weights bytes)` of a `.keras` zip."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "model.weights.h5" not in names:
                raise InteropError(
                    f"{path}: a .keras archive holds model.weights.h5, this zip has {sorted(names)}"
                )
            config = json.loads(z.read("config.json")) if "config.json" in names else None
            return config, z.read("model.weights.h5")
    except zipfile.BadZipFile:
        raise InteropError(f"{path}: not a .keras archive (not a zip file)") from None
    except json.JSONDecodeError as e:
        raise InteropError(f"{path}: config.json is not valid JSON ({e})") from None


def _open_weights(path):
    """`(h5py.File, config or None)` for a `.keras` archive or a `.weights.h5` file."""
    h5py = _h5py()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InteropError(f"{path}: no such file")
    config = None
    if path.endswith(".keras"):
        config, data = _read_archive(path)
        source = io.BytesIO(data)
    else:
        source = path
    try:
        return h5py.File(source, "r"), config
    except OSError as e:
        raise InteropError(f"{path}: not a Keras weights file (not HDF5: {e})") from None


def _vars(group):
    """The datasets under `group/vars`, in index order."""
    if "vars" not in group:
        return []
    v = group["vars"]
    return [v[k] for k in sorted(v.keys(), key=int)]


class _Walk:
    """Pairs a jmod object tree with a Keras weights file; collects values and the report."""

    def __init__(self, source, model):
        self.source = source
        self.paths = {id(v): p for p, v in model.named_variables()}
        self.report = matching.LoadReport(source)
        self.pending = []

    def take(self, dataset, path, var):
        path = self.paths.get(id(var), path)
        self.pending.append((var, matching.to_value(dataset[()], var, path, self.source)))
        self.report.matched.append((dataset.name.lstrip("/"), path, tuple(var.shape), ""))

    def unused(self, group):
        def visit(name, obj):
            if hasattr(obj, "shape"):
                self.report.unused.append((obj.name.lstrip("/"), tuple(obj.shape)))

        group.visititems(visit)

    def model(self, model, group, prefix):
        """A jmod model's layers into the `layers/` group of a Keras model."""
        layers = group.get("layers")
        seen, counts = set(), {}
        for layer in model.layers:
            key = keras_key(type(layer).__name__)
            n = counts.get(key, 0)
            counts[key] = n + 1
            key = key if n == 0 else f"{key}_{n}"
            sub = layers.get(key) if layers is not None else None
            path = f"{prefix}{layer.name}"
            if sub is None:
                self.missing(layer, path, f"{group.name.rstrip('/')}/layers/{key}")
                continue
            seen.add(key)
            self.layer(layer, sub, path)
        if layers is not None:
            for key in layers:
                if key not in seen:
                    self.unused(layers[key])

    def missing(self, module, path, where):
        for p, v in module.named_variables():
            self.report.missing.append((self.paths.get(id(v), f"{path}/{p}"), tuple(v.shape)))

    def layer(self, layer, group, path):
        if hasattr(layer, "layers") and "layers" in group:
            self.model(layer, group, path + "/")
            return
        if isinstance(layer, MultiHeadAttention):
            self.attention(layer, group, path)
            return
        own, subs = [], []
        untracked = getattr(type(layer), "_jmod_untracked", frozenset())
        for attr, value in vars(layer).items():
            if attr.startswith("_jmod") or attr in untracked:
                continue
            if isinstance(value, Variable):
                own.append((attr, value))
            elif isinstance(value, Module):
                subs.append((attr, value))
        stored = _vars(group)
        if len(stored) != len(own):
            raise InteropError(
                f"{self.source}: Keras layer {group.name} has {len(stored)} variables "
                f"({', '.join(matching.shape_str(d.shape) for d in stored) or 'none'}), jmod "
                f"layer '{path}' ({type(layer).__name__}) has {len(own)} "
                f"({', '.join(f'{a} {matching.shape_str(v.shape)}' for a, v in own) or 'none'})"
            )
        for dataset, (attr, var) in zip(stored, own):
            self.take(dataset, f"{path}/{attr}", var)
        for attr, sub in subs:
            if attr in group:
                self.layer(sub, group[attr], f"{path}/{attr}")
            else:
                self.missing(sub, f"{path}/{attr}", f"{group.name}/{attr}")

    def attention(self, layer, group, path):
        # Keras keeps the four projections as EinsumDense sublayers with the same shapes.
        for name in ("query", "key", "value", "output"):
            sub = group.get(f"{name}_dense")
            names = [f"{name}_kernel"] + ([f"{name}_bias"] if layer.use_bias else [])
            stored = _vars(sub) if sub is not None else []
            if len(stored) != len(names):
                raise InteropError(
                    f"{self.source}: Keras layer {group.name}/{name}_dense has {len(stored)} "
                    f"variables, jmod layer '{path}' (MultiHeadAttention) expects {names}"
                )
            for dataset, attr in zip(stored, names):
                self.take(dataset, f"{path}/{attr}", getattr(layer, attr))


def load_keras_weights(model, path, strict=True):
    """Loads a Keras 3 `.keras` archive's or `.weights.h5` file's weights into a jmod model.

    The jmod model has the Keras model's structure (a `Sequential` or
    functional model of the same layers, or a subclassed model with its
    layers in the same attributes) and is built. Layers pair by class and
    position, as Keras itself pairs them; every shape is checked before
    anything is assigned.

    Example:
        >>> import os, tempfile
        >>> os.environ.setdefault("KERAS_BACKEND", "jax")
        'jax'
        >>> import keras
        >>> k = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> p = os.path.join(tempfile.mkdtemp(), "k.weights.h5")
        >>> k.save_weights(p)
        >>> j = jmod.Sequential([jmod.Input(shape=[3]), jmod.layers.Dense(2)])
        >>> _ = jmod.interop.load_keras_weights(j, p)
        >>> bool(np.allclose(j(np.ones((1, 3))), k(np.ones((1, 3)))))
        True

    Args:
        model: a built jmod model.
        path: a `.keras` archive or a `.weights.h5` file written by Keras 3.
        strict: raise if any weight in the file or variable of the model is
            left unmatched (otherwise the returned report lists them).

    Returns:
        A `LoadReport`.
    """
    if not model.named_variables():
        raise InteropError(
            f"model {model.name!r} has no variables yet: call it once on an example input "
            "before loading weights into it"
        )
    f, _ = _open_weights(path)
    with f:
        walk = _Walk(os.path.basename(os.fspath(path)), model)
        if hasattr(model, "layers"):
            walk.model(model, f, "")
        else:
            walk.layer(model, f, model.name)
        walk.report.check(strict)
        matching.assign_all(walk.pending)
    return walk.report


# -- rebuilding a model from a .keras config -------------------------------------------


def _layer_classes():
    import jmod.layers as L

    names = [
        "Activation", "Add", "Average", "AveragePooling1D", "AveragePooling2D",
        "BatchNormalization", "Concatenate", "Conv1D", "Conv2D", "Dense", "Dropout",
        "Embedding", "Flatten", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
        "GlobalMaxPooling1D", "GlobalMaxPooling2D", "LayerNormalization", "MaxPooling1D",
        "MaxPooling2D", "Maximum", "Minimum", "Multiply", "MultiHeadAttention", "Reshape",
        "Subtract", "LSTM", "GRU", "SimpleRNN",
    ]  # fmt: skip
    return {n: getattr(L, n) for n in names if hasattr(L, n)}


# Keras settings jmod has no argument for, with the values that mean "off":
# dropped when they hold them, an error naming the layer otherwise.
_NEUTRAL = {
    "activity_regularizer": (None,),
    "kernel_constraint": (None,),
    "bias_constraint": (None,),
    "beta_constraint": (None,),
    "gamma_constraint": (None,),
    "embeddings_constraint": (None,),
    "quantization_config": (None,),
    "lora_rank": (None,),
    "lora_alpha": (None,),
    "synchronized": (False,),
    "renorm": (False,),
    "rms_scaling": (False,),
    "use_gate": (False,),
    "sliding_window": (None,),
    "sparse": (False,),
    "input_length": (None,),
    "flash_attention": (None,),
}


# Settings that only matter when another one is on (BatchNormalization's renorm).
_DEPENDENT = {"renorm_momentum": "renorm", "renorm_clipping": "renorm"}


def _unknown(what, name, cls_name, detail=""):
    return InteropError(
        f"model_from_keras: {what} {name!r} is a Keras {cls_name!r}{detail}, which jmod cannot "
        f"build; known layers: {sorted(_layer_classes())}"
    )


def _layer_from_config(spec, source):
    import inspect

    from jmod import initializers

    cls_name, config = spec.get("class_name"), dict(spec.get("config") or {})
    name = config.get("name", cls_name)
    classes = _layer_classes()
    if spec.get("registered_name") not in (None, cls_name) or cls_name not in classes:
        module = spec.get("module")
        raise _unknown("layer", name, cls_name, f" (module {module!r})" if module else "")
    cls = classes[cls_name]
    params = set(inspect.signature(cls.__init__).parameters) | {"name", "trainable"}
    kwargs = {}
    for key, value in config.items():
        if key == "dtype":
            if isinstance(value, dict):
                value = (value.get("config") or {}).get("name")
            if value is not None:
                kwargs["dtype"] = value
        elif key.endswith("_initializer") and key in params:
            try:
                kwargs[key] = initializers.get(_plain(value))
            except Exception:
                pass  # the weights are loaded over it; the initializer never runs
        elif key.endswith("_regularizer") and key in params:
            kwargs[key] = _plain(value)
        elif key == "attention_axes" and cls_name == "MultiHeadAttention":
            if value not in (None, [1], (1,)):
                raise InteropError(
                    f"{source}: layer {name!r} (MultiHeadAttention) attends over axes {value}; "
                    "jmod attends over all step axes together (attention_axes=None)"
                )
        elif key in params:
            kwargs[key] = value
        elif value is None or (key in _NEUTRAL and value in _NEUTRAL[key]):
            continue
        elif key in _DEPENDENT and not config.get(_DEPENDENT[key]):
            continue
        else:
            raise InteropError(
                f"{source}: layer {name!r} ({cls_name}) has {key}={value!r}, which jmod's "
                f"{cls_name} does not support"
            )
    try:
        return cls(**kwargs)
    except Exception as e:
        raise InteropError(f"{source}: layer {name!r} ({cls_name}): {e}") from None


def _plain(value):
    # Keras' serialized objects carry module/registered_name keys jmod's get() does not need.
    if isinstance(value, dict) and "class_name" in value:
        return {"class_name": value["class_name"], "config": value.get("config") or {}}
    return value


def _model_from_config(spec, source):
    import jmod

    cls_name, config = spec.get("class_name"), spec.get("config") or {}
    if cls_name == "Sequential":
        layers = []
        for entry in config.get("layers", []):
            if entry.get("class_name") == "InputLayer":
                c = entry["config"]
                layers.append(jmod.Input(batch_shape=c.get("batch_shape"), name=c.get("name")))
            else:
                layers.append(_build(entry, source))
        return jmod.Sequential(layers, name=config.get("name"))
    if cls_name in ("Functional", "Model"):
        return _functional(config, source)
    return _layer_from_config(spec, source)


def _build(entry, source):
    if entry.get("class_name") in ("Sequential", "Functional", "Model"):
        return _model_from_config(entry, source)
    return _layer_from_config(entry, source)


def _functional(config, source):
    import jmod

    tensors = {}

    def resolve(arg):
        if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
            layer_name, node, index = arg["config"]["keras_history"]
            if (layer_name, node, index) not in tensors:
                raise InteropError(
                    f"{source}: the graph refers to output {node}/{index} of {layer_name!r}, "
                    "which no earlier layer made"
                )
            return tensors[(layer_name, node, index)]
        if isinstance(arg, (list, tuple)):
            return type(arg)(resolve(a) for a in arg)
        if isinstance(arg, dict):
            return {k: resolve(v) for k, v in arg.items()}
        return arg

    for entry in config.get("layers", []):
        name = entry.get("name") or entry.get("config", {}).get("name")
        if entry.get("class_name") == "InputLayer":
            c = entry["config"]
            tensors[(name, 0, 0)] = jmod.Input(batch_shape=c.get("batch_shape"), name=name)
            continue
        layer = _build(entry, source)
        for n, node in enumerate(entry.get("inbound_nodes", [])):
            args, kwargs = resolve(node.get("args", [])), resolve(node.get("kwargs", {}))
            # Keras records defaults such as mask=None; jmod passes those itself.
            kwargs = {k: v for k, v in kwargs.items() if v is not None}
            out = layer(*args, **kwargs)
            outs = out if isinstance(out, (list, tuple)) else [out]
            for i, t in enumerate(outs):
                tensors[(name, n, i)] = t

    def ends(spec):
        if spec and isinstance(spec[0], str):
            return tensors[tuple(spec)]
        return [ends(s) for s in spec]

    return jmod.Model(
        inputs=ends(config["input_layers"]),
        outputs=ends(config["output_layers"]),
        name=config.get("name"),
    )


def model_from_keras(path):
    """Rebuilds a Keras 3 `.keras` archive as a jmod model, weights included.

    The archive's `config.json` is read as data: each Keras layer becomes the
    jmod layer of the same class with the same settings, in a `Sequential`
    or functional `Model`; a layer jmod has no class for (custom layers,
    `Lambda`) is an error naming it. Nothing named in the file is imported
    or executed.

    Example:
        >>> import os, tempfile
        >>> os.environ.setdefault("KERAS_BACKEND", "jax")
        'jax'
        >>> import keras
        >>> k = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="relu")])
        >>> p = os.path.join(tempfile.mkdtemp(), "k.keras")
        >>> k.save(p)
        >>> j = jmod.interop.model_from_keras(p)
        >>> [type(layer).__name__ for layer in j.layers]
        ['Dense']
        >>> bool(np.allclose(j(np.ones((1, 3))), k(np.ones((1, 3)))))
        True

    Args:
        path: a `.keras` archive written by Keras 3.

    Returns:
        The jmod model, built, with the archive's weights.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InteropError(f"{path}: no such file")
    config, _ = _read_archive(path)
    if not isinstance(config, dict) or "class_name" not in config:
        raise InteropError(f"{path}: config.json is not a Keras model config")
    source = os.path.basename(path)
    model = _model_from_config(config, source)
    if not model.named_variables():
        build = (config.get("build_config") or {}).get("input_shape")
        if build is None:
            raise InteropError(f"{source}: the config gives no input shape to build the model")
        model.build(tuple(build))
    load_keras_weights(model, path)
    return model
