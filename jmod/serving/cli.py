"""`python -m jmod.saved_model serve`: the command line of `jmod.serving.serve`."""

import sys


def add_arguments(parser):
    """Adds the `serve` options (named as TF Serving's flags) to an argparse parser.

    Example:
        >>> import argparse
        >>> from jmod.serving.cli import add_arguments
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> args = parser.parse_args(["models/m", "--batching", "--max-batch-size", "16"])
        >>> args.port, args.batching, args.max_batch_size, args.batch_timeout_micros
        (8501, True, 16, 0)
    """
    parser.add_argument("model_base_path", help="folder of numbered version folders (1/, 2/, ...)")
    parser.add_argument("--port", type=int, default=8501, help="REST API port (default 8501)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--model-name", help="NAME in /v1/models/NAME (default: the folder's name)")
    parser.add_argument(
        "--batching", action="store_true", help="merge concurrent requests into batched calls"
    )
    parser.add_argument("--max-batch-size", type=int, default=32, help="rows per batch (32)")
    parser.add_argument(
        "--batch-timeout-micros",
        type=int,
        default=0,
        help="how long a batch waits for more requests (default 0: never waits)",
    )
    parser.add_argument(
        "--allowed-batch-sizes",
        help="comma-separated sizes batches are padded to (default: powers of 2, then the max)",
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=1.0,
        help="how often to look for new version folders (default 1; 0: never)",
    )
    parser.add_argument(
        "--no-warmup", action="store_true", help="do not compile signatures before serving"
    )


def run(args):
    """Serves as the parsed `args` say; returns the exit status."""
    from jmod.errors import JmodError

    try:
        from jmod.serving.server import serve
    except ImportError as e:
        print(
            f"error: serving needs the serving extra (pip install 'jmod[serving]'): {e}",
            file=sys.stderr,
        )
        return 1
    sizes = None
    if args.allowed_batch_sizes:
        try:
            sizes = [int(s) for s in args.allowed_batch_sizes.split(",")]
        except ValueError:
            print(
                f"error: --allowed-batch-sizes expects numbers like 1,2,4,8, got "
                f"{args.allowed_batch_sizes!r}",
                file=sys.stderr,
            )
            return 1
    try:
        serve(
            args.model_base_path,
            port=args.port,
            model_name=args.model_name,
            host=args.host,
            batching=args.batching,
            max_batch_size=args.max_batch_size,
            batch_timeout_micros=args.batch_timeout_micros,
            allowed_batch_sizes=sizes,
            poll_seconds=args.poll_seconds,
            warmup=not args.no_warmup,
        )
    except JmodError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0
