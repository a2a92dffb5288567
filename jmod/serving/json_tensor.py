"""TF Serving's JSON tensors: predict requests into arrays, outputs into response JSON.

Follows TensorFlow Serving's `json_tensor.cc`: a request holds either
`"instances"` (the row format: one entry per batch row, objects when there
are several named inputs) or `"inputs"` (the columnar format: one value, or an
object of named values); the answer is `"predictions"` (rows) or `"outputs"`
(columns) in the same shape. Floats are written as TF Serving writes them:
six significant digits when that reads back to the same float, otherwise
full precision, whole numbers with a trailing `.0`, and `NaN`, `Infinity`,
`-Infinity` for non-finite values. Pure functions: no model, no HTTP.
"""

import array
import json
import math

import jax.numpy as jnp
import numpy as np

from jmod.serving.errors import ServingError

ROW, COLUMNAR = "row", "columnar"

# TensorFlow's DataType enum names and DataTypeString() names, by NumPy dtype name.
_TF_DTYPES = {
    "float32": ("DT_FLOAT", "float"),
    "float64": ("DT_DOUBLE", "double"),
    "float16": ("DT_HALF", "half"),
    "bfloat16": ("DT_BFLOAT16", "bfloat16"),
    "int8": ("DT_INT8", "int8"),
    "int16": ("DT_INT16", "int16"),
    "int32": ("DT_INT32", "int32"),
    "int64": ("DT_INT64", "int64"),
    "uint8": ("DT_UINT8", "uint8"),
    "uint16": ("DT_UINT16", "uint16"),
    "uint32": ("DT_UINT32", "uint32"),
    "uint64": ("DT_UINT64", "uint64"),
    "bool": ("DT_BOOL", "bool"),
    "complex64": ("DT_COMPLEX64", "complex64"),
    "complex128": ("DT_COMPLEX128", "complex128"),
}


def tf_dtype(dtype):
    """TensorFlow's enum name for a dtype (`DT_FLOAT` for float32), as in signature metadata.

    Example:
        >>> from jmod.serving.json_tensor import tf_dtype
        >>> tf_dtype("float32"), tf_dtype(np.int64)
        ('DT_FLOAT', 'DT_INT64')
    """
    name = jnp.dtype(dtype).name
    return _TF_DTYPES.get(name, ("DT_INVALID", name))[0]


def tf_dtype_string(dtype):
    """TensorFlow's short name for a dtype (`float` for float32), as in its error messages.

    Example:
        >>> from jmod.serving.json_tensor import tf_dtype_string
        >>> tf_dtype_string("float32"), tf_dtype_string("bool")
        ('float', 'bool')
    """
    name = jnp.dtype(dtype).name
    return _TF_DTYPES.get(name, ("DT_INVALID", name))[1]


def parse_body(body):
    """The JSON object of a request body (NaN and Infinity allowed, as in TF Serving).

    Example:
        >>> from jmod.serving.json_tensor import parse_body
        >>> parse_body(b'{"instances": [NaN, 1]}')
        {'instances': [nan, 1]}
    """
    if not body or not body.strip():
        raise ServingError("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ServingError(f"JSON Parse error: {e}") from None
    if not isinstance(doc, dict):
        raise ServingError(f"JSON Value: {_short(doc)} Is not object")
    return doc


def _short(value, limit=80):
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- requests -------------------------------------------------------------------
def request_tensors(doc, inputs):
    """The arrays of a predict request and its format (`ROW` or `COLUMNAR`).

    `inputs` maps input names to their dtypes (in the order listed in
    metadata). Shapes are checked later, against the saved signatures.

    Example:
        >>> from jmod.serving.json_tensor import request_tensors
        >>> fmt, arrays = request_tensors({"instances": [{"a": [1, 2], "b": 3}]},
        ...                               {"a": "float32", "b": "int32"})
        >>> fmt, arrays["a"], arrays["b"]
        ('row', array([[1., 2.]], dtype=float32), array([3], dtype=int32))
    """
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise ServingError(
            "Not formatted correctly: expecting only one of 'inputs' or 'instances' keys to exist"
        )
    names = list(inputs)
    if not names:
        raise ServingError("the signature takes no tensor inputs")
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise ServingError("Expecting 'instances' to be an list/array")
        if not instances:
            raise ServingError("No values in 'instances' array")
        if isinstance(instances[0], dict):
            for i, item in enumerate(instances):
                if not isinstance(item, dict):
                    raise ServingError(f"Expecting object but got list at item {i} of input list")
                if set(item) != set(names):
                    raise ServingError(
                        f"Failed to process element: {i} of 'instances' list. JSON object: "
                        f"{_short(item)} keys must be equal to: {','.join(sorted(names))}"
                    )
            arrays = {
                n: to_array([item[n] for item in instances], inputs[n], f"instances[*][{n!r}]")
                for n in names
            }
        else:
            if len(names) > 1:
                raise ServingError(
                    "instances is a plain list, but expecting list of objects as multiple "
                    f"input tensors required as per tensorinfo_map ({', '.join(names)})"
                )
            for i, item in enumerate(instances):
                if isinstance(item, dict):
                    raise ServingError(
                        f"Expecting value/list but got object at item {i} of input list"
                    )
            arrays = {names[0]: to_array(instances, inputs[names[0]], "instances")}
        return ROW, arrays
    if has_inputs:
        value = doc["inputs"]
        if not isinstance(value, dict):
            if len(names) > 1:
                raise ServingError(
                    "inputs is a plain value/list, but expecting an object as multiple input "
                    f"tensors required as per tensorinfo_map ({', '.join(names)})"
                )
            return COLUMNAR, {names[0]: to_array(value, inputs[names[0]], "inputs")}
        for n in names:
            if n not in value:
                raise ServingError(f"Missing named input: {n} in 'inputs' object.")
        extra = sorted(set(value) - set(names))
        if extra:
            raise ServingError(
                f"Unknown named input: {extra[0]} in 'inputs' object; the signature takes "
                f"{', '.join(names)}"
            )
        return COLUMNAR, {n: to_array(value[n], inputs[n], f"inputs[{n!r}]") for n in names}
    raise ServingError("Missing 'inputs' or 'instances' key")


def to_array(value, dtype, where="input"):
    """A JSON value (number, bool, nested lists) as an array of `dtype`, checked as TF Serving does.

    Integers are accepted for float inputs; floats are not accepted for
    integer inputs, nor numbers for bool inputs; nested lists must be dense.

    Example:
        >>> from jmod.serving.json_tensor import to_array
        >>> to_array([[1, 2]], "float32")
        array([[1., 2.]], dtype=float32)
        >>> to_array([1.5], "int32")
        Traceback (most recent call last):
        ...
        jmod.serving.errors.ServingError: input: JSON Value: [1.5] ... not of expected type: int32
    """
    dtype = jnp.dtype(dtype)
    try:
        arr = np.asarray(value)
    except ValueError:
        raise ServingError(
            f"{where}: nested lists of different lengths; a tensor needs every list at one "
            "level to have the same length"
        ) from None
    kind = arr.dtype.kind
    want = tf_dtype_string(dtype)
    if dtype == np.bool_:
        ok = kind == "b"
    elif np.issubdtype(dtype, np.integer):
        ok = kind in "iu"
    elif jnp.issubdtype(dtype, jnp.complexfloating):
        ok = kind in "iufc"
    elif jnp.issubdtype(dtype, jnp.floating):
        ok = kind in "iuf"
    else:
        raise ServingError(f"{where}: inputs of type {want} cannot be given in JSON")
    if not ok:
        raise ServingError(
            f"{where}: JSON Value: {_short(value)} Type: {_json_type(arr)} is not of expected "
            f"type: {want}"
        )
    if kind in "iu" and np.issubdtype(dtype, np.integer) and arr.size:
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise ServingError(f"{where}: values out of the range of {want}")
    with np.errstate(over="ignore"):
        out = arr.astype(dtype, copy=False)
    if kind in "iuf" and jnp.issubdtype(dtype, jnp.floating) and out.size:
        lost = ~np.isfinite(out) & np.isfinite(arr)
        if lost.any():
            bad = arr[lost].flat[0]
            raise ServingError(
                f"{where}: Cannot convert JSON value: {bad} to {want} without loss of precision."
            )
    return out


def _json_type(arr):
    kind = arr.dtype.kind
    if kind == "b":
        return "True/False"
    if kind in "iufc":
        return "Number"
    if kind in "US":
        return "String"
    return "mixed values"


# -- responses ------------------------------------------------------------------
def predict_response(outputs, fmt):
    """The response body for {output name: array}: `{"predictions": ...}` or `{"outputs": ...}`.

    One output is written bare; several as objects keyed by name (one per
    row in the row format, whose outputs must share their batch size).

    Example:
        >>> from jmod.serving.json_tensor import predict_response
        >>> outputs = {"y": np.array([[0.5], [1.5]], np.float32), "k": np.array([1, 2])}
        >>> predict_response(outputs, "row")
        b'{"predictions":[{"k":1,"y":[0.5]},{"k":2,"y":[1.5]}]}'
        >>> predict_response({"y": outputs["y"]}, "columnar")
        b'{"outputs":[[0.5],[1.5]]}'
    """
    if not outputs:
        raise ServingError.internal("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if fmt == COLUMNAR:
        if len(names) == 1:
            body = tensor_json(outputs[names[0]])
        else:
            body = "{" + ",".join(f"{json.dumps(n)}:{tensor_json(outputs[n])}" for n in names) + "}"
        return ('{"outputs":' + body + "}").encode()
    batch = None
    for n in names:
        shape = np.shape(outputs[n])
        if not shape:
            raise ServingError(
                f"Tensor name: {n} has no shape information (a scalar output has no rows; "
                "ask with the columnar 'inputs' format)"
            )
        if batch is not None and shape[0] != batch:
            raise ServingError(
                f"Tensor name: {n} has inconsistent batch size: {shape[0]} expecting: {batch}"
            )
        batch = shape[0]
    if len(names) == 1:
        body = tensor_json(outputs[names[0]])
    else:
        rows = {n: _rows(outputs[n]) for n in names}
        keys = [json.dumps(n) for n in names]
        body = (
            "["
            + ",".join(
                "{" + ",".join(f"{k}:{rows[n][i]}" for k, n in zip(keys, names)) + "}"
                for i in range(batch)
            )
            + "]"
        )
    return ('{"predictions":' + body + "}").encode()


def error_body(message):
    """TF Serving's error body: `{"error": message}`.

    Example:
        >>> from jmod.serving.json_tensor import error_body
        >>> error_body("Servable not found for request: Latest(half)")
        b'{"error": "Servable not found for request: Latest(half)"}'
    """
    return json.dumps({"error": str(message)}).encode()


def tensor_json(arr):
    """An array as JSON text: nested lists of numbers (or bools), floats as TF Serving writes them.

    Example:
        >>> from jmod.serving.json_tensor import tensor_json
        >>> tensor_json(np.array([[0.1, 2.0], [np.nan, 1e-5]], np.float32))
        '[[0.1,2.0],[NaN,1e-05]]'
    """
    arr = np.asarray(arr)
    return _nest(leaf_strings(arr), arr.shape)


def _rows(arr):
    arr = np.asarray(arr)
    strings, inner = leaf_strings(arr), arr.shape[1:]
    step = math.prod(inner)
    return [_nest(strings[i * step : (i + 1) * step], inner) for i in range(arr.shape[0])]


def _nest(strings, shape):
    """Nested JSON lists of `shape` around a flat list of element texts."""
    if not shape:
        return strings[0]
    if len(shape) == 1:
        return "[" + ",".join(strings) + "]"
    step = math.prod(shape[1:])
    inner = shape[1:]
    return (
        "["
        + ",".join(_nest(strings[i * step : (i + 1) * step], inner) for i in range(shape[0]))
        + "]"
    )


def leaf_strings(arr):
    """The JSON text of each element of an array, flattened (C order).

    Example:
        >>> from jmod.serving.json_tensor import leaf_strings
        >>> leaf_strings(np.array([[1.0, 0.1], [np.inf, 3e-8]], np.float32))
        ['1.0', '0.1', 'Infinity', '3e-08']
    """
    kind = arr.dtype.kind
    flat = arr.ravel()
    if kind == "b":
        return ["true" if b else "false" for b in flat.tolist()]
    if kind in "iu":
        return list(map(str, flat.tolist()))
    if kind == "c":
        raise ServingError.internal("complex outputs have no JSON form in TF Serving")
    if arr.dtype == np.float64:
        return _float_strings(flat, np.float64, "%.17g")
    # float16 and bfloat16 are written as the float32 they widen to, as TF Serving does.
    return _float_strings(flat.astype(np.float32), np.float32, "%.9g")


def _float_strings(flat, dtype, full):
    values = flat.tolist()  # Python floats, exactly the array's values
    # absl::StrCat (six significant digits), read back (as float32 through array('f')).
    short = list(map("%.6g".__mod__, values))
    back = list(map(float, short))
    if dtype == np.float32:
        back = array.array("f", back).tolist()
    out = []
    for text, b, v in zip(short, back, values):
        if b != v or text[-1] == "f":  # does not read back; or nan, inf
            if v != v:
                text = "NaN"
            elif v in (math.inf, -math.inf):
                text = "Infinity" if v > 0 else "-Infinity"
            else:
                text = full % v
        elif "." not in text and "e" not in text:
            text += ".0"  # whole numbers stay floats when read back
        out.append(text)
    return out
