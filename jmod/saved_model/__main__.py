"""Command line for saved models, like TensorFlow's `saved_model_cli`.

    python -m jmod.saved_model show DIR
    python -m jmod.saved_model run DIR --input x=x.npy [--function NAME] [--outdir OUT]
    python -m jmod.saved_model serve MODEL_BASE_PATH --port 8501 [--batching]  (jmod.serving)

`show` prints the functions, their input and output specs, the platforms
and the variables; `run` calls one function on `.npy` inputs (read without
pickle) and prints (or writes) its outputs.
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jmod.errors import JmodError
from jmod.saved_model import _format
from jmod.saved_model.errors import SavedModelError
from jmod.saved_model.spec import describe_tree, from_json, short_tree


def _leaves(tree, prefix="output"):
    if isinstance(tree, (list, tuple)):
        return [x for i, t in enumerate(tree) for x in _leaves(t, f"{prefix}[{i}]")]
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in _leaves(tree[k], f"{prefix}[{k!r}]")]
    return [] if tree is None else [(prefix, tree)]


def describe(directory):
    """The text `show` prints for a saved model directory."""
    if not os.path.isdir(directory):
        what = "a file" if os.path.exists(directory) else "nothing there"
        raise SavedModelError(f"{directory}: not a saved model directory ({what})")
    filename = os.path.join(directory, _format.METADATA)
    data = _format.read_file(directory, _format.METADATA, _format.MAX_JSON_BYTES)
    meta = _format.decode_metadata(data, filename)
    functions = meta["functions"]
    files = [s["file"] for f in functions.values() for s in f["signatures"]]
    try:
        _format.verify(
            directory,
            _format.read_file(directory, _format.FINGERPRINT, _format.MAX_JSON_BYTES),
            [_format.METADATA, _format.VARIABLES + ".index", *files],
        )
        fingerprint = "ok"
    except JmodError as e:
        fingerprint = f"FAILED: {e}"
    lines = [
        f"jmod saved model: {directory}",
        f"  format version {meta['format_version']}, saved by jmod {meta['jmod_version']} "
        f"with jax {meta['jax_version']}",
        f"  module: {meta['module']['name']!r} (class {meta['module']['class']}, "
        "not needed to load)",
        f"  platforms: {', '.join(meta['platforms'])}",
        f"  vjp_order: {meta['vjp_order']}",
        f"  fingerprint: {fingerprint}",
    ]
    for name, function in functions.items():
        sigs = function["signatures"]
        params = ", ".join(function["parameters"])
        lines += ["", f"function {name!r} (parameters: {params}), {len(sigs)} signature(s):"]
        for k, record in enumerate(sigs):
            path = os.path.join(directory, record["file"])
            size = os.path.getsize(path) if os.path.exists(path) else 0
            lines.append(f"  signature {k}: {record['file']} ({size:,} bytes)")
            lines.append("    inputs:")
            for arg, tree in record["arguments"].items():
                lines.append(f"      {arg}: {describe_tree(from_json(tree), arg)}")
            lines.append("    outputs:")
            outputs = _leaves(from_json(record["outputs"]))
            lines += [f"      {p}: {short_tree(t)}" for p, t in outputs] or ["      (none)"]
            assigns = ", ".join(record["assigns"]) or "none"
            lines.append(f"    reads {len(record['state'])} variables, assigns {assigns}")
    records = meta["variables"]
    count = sum(int(np.prod(r["shape"])) for r in records)
    nbytes = sum(int(np.prod(r["shape"])) * jnp.dtype(r["dtype"]).itemsize for r in records)
    lines += ["", f"variables: {len(records)} ({count:,} parameters, {nbytes:,} bytes)"]
    width = max((len(r["path"]) for r in records), default=0)
    for r in records:
        spec = f"{r['dtype']}[{', '.join(map(str, r['shape']))}]"
        flag = "trainable" if r["trainable"] else "non-trainable"
        lines.append(f"  {r['path']:<{width}}  {spec:<16} {flag}")
    return "\n".join(lines)


def run(directory, function, inputs, outdir=None, out=sys.stdout):
    """Runs `function` of the saved model on {name: .npy file}; prints or writes the outputs."""
    from jmod.saved_model.load import load

    loaded = load(directory)
    if function not in loaded.functions:
        raise SavedModelError(
            f"{directory}: no function {function!r}; saved: {', '.join(loaded.functions)}"
        )
    args = {}
    for name, filename in inputs.items():
        try:
            args[name] = np.load(filename, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise SavedModelError(f"--input {name}={filename}: {e}") from None
    result = loaded.functions[function](**args)
    flat, _ = jax.tree_util.tree_flatten_with_path(result)
    if outdir:
        os.makedirs(outdir, exist_ok=True)
    for path, value in flat:
        label = "output" + jax.tree_util.keystr(path)
        value = np.asarray(value)
        print(f"{label}: {value.dtype.name}{list(value.shape)}", file=out)
        if outdir:
            safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in label)
            np.save(os.path.join(outdir, safe + ".npy"), value)
        else:
            print(np.array2string(value, threshold=100), file=out)


def _inputs(pairs):
    out = {}
    for pair in pairs or []:
        name, sep, filename = pair.partition("=")
        if not sep or not name or not filename:
            raise SavedModelError(f"--input expects NAME=FILE.npy, got {pair!r}")
        out[name] = filename
    return out


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit status 2 (like every other failure)."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def _one_line(e):
    return f"error: {type(e).__name__}: {' '.join(str(e).split())}"


def main(argv=None):
    """Runs the command line; returns the exit status (2 on any failure, with one line on stderr).

    Example:
        >>> main(["show", "/no/such/dir"])
        2
    """
    parser = _Parser(prog="python -m jmod.saved_model", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="print functions, specs, platforms and variables")
    show.add_argument("dir")
    runner = commands.add_parser("run", help="run one saved function on .npy inputs")
    runner.add_argument("dir")
    runner.add_argument("--function", default="__call__", help="function name (default __call__)")
    runner.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="an argument")
    runner.add_argument("--outdir", help="write each output as OUTDIR/<output>.npy")
    from jmod.serving import cli as serving_cli

    server = commands.add_parser("serve", help="serve version folders with TF Serving's REST API")
    serving_cli.add_arguments(server)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serving_cli.run(args)
    try:
        if args.command == "show":
            print(describe(args.dir))
        else:
            run(args.dir, args.function, _inputs(args.input), args.outdir)
    except Exception as e:  # malformed input of any kind: one line, no traceback
        print(_one_line(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
