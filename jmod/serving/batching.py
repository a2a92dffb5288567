"""`Batcher`: concurrent predict requests merged into one call, padded to a few batch sizes.

As TF Serving's `--enable_batching`: requests for the same signature (and
the same shapes past the batch axis) queue up; one worker takes up to
`max_batch_size` rows, waiting at most `batch_timeout_micros` after the
first for more (0: whatever has queued, so a lone request never waits),
concatenates them along axis 0, pads with zero rows to the next allowed
batch size, runs the function once in the compute thread, and hands each
request its rows. While one batch runs, the next one queues. Padding keeps
the shape-polymorphic function to one compilation per allowed size.

Like TF Serving's batching, this assumes rows are independent (the output
row i depends only on input row i), true of inference models.
"""

import asyncio
import collections

import numpy as np

from jmod.serving.errors import ServingError


def default_batch_sizes(max_batch_size):
    """Powers of two below `max_batch_size`, then `max_batch_size`: the sizes batches pad to.

    Example:
        >>> from jmod.serving.batching import default_batch_sizes
        >>> default_batch_sizes(32), default_batch_sizes(12)
        ([1, 2, 4, 8, 16, 32], [1, 2, 4, 8, 12])
    """
    sizes, n = [], 1
    while n < max_batch_size:
        sizes.append(n)
        n *= 2
    return sizes + [max_batch_size]


class _Task:
    __slots__ = ("candidate", "arrays", "rows", "key", "future")

    def __init__(self, candidate, arrays, rows, future):
        self.candidate = candidate
        self.arrays = arrays
        self.rows = rows
        # Requests share a call when they run the same saved signature on arrays
        # that differ only in their batch axis.
        self.key = (
            id(candidate),
            tuple((n, a.shape[1:], a.dtype.str) for n, a in sorted(arrays.items())),
        )
        self.future = future


class Batcher:
    """Merges concurrent requests into batched calls run by `execute(fn, *args)` (awaitable)."""

    def __init__(
        self, execute, max_batch_size=32, batch_timeout_micros=0, allowed_batch_sizes=None
    ):
        if int(max_batch_size) < 1:
            raise ServingError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if float(batch_timeout_micros) < 0:
            raise ServingError(f"batch_timeout_micros must be >= 0, got {batch_timeout_micros}")
        self.max_batch_size = int(max_batch_size)
        self.timeout = float(batch_timeout_micros) / 1e6
        sizes = allowed_batch_sizes or default_batch_sizes(self.max_batch_size)
        sizes = sorted(int(s) for s in sizes)
        if sizes[0] < 1 or sizes[-1] != self.max_batch_size:
            raise ServingError(
                f"allowed_batch_sizes {sizes} must be positive and end with max_batch_size "
                f"{self.max_batch_size}, as in TF Serving"
            )
        self.sizes = sizes
        self._execute = execute
        self._queue = None
        self._held = collections.deque()
        self._worker = None
        self.batches = 0  # calls made, for tests and logs

    def padded_size(self, rows):
        """The allowed batch size `rows` rows are padded to."""
        for s in self.sizes:
            if s >= rows:
                return s
        return rows

    def start(self):
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self):
        """Stops the worker; requests still queued get a 503."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._held or (self._queue is not None and not self._queue.empty()):
            task = self._held.popleft() if self._held else self._queue.get_nowait()
            if not task.future.done():
                task.future.set_exception(ServingError.unavailable("the server is shutting down"))

    async def submit(self, candidate, arrays, rows):
        """The outputs for one request's arrays ({name: array with `rows` rows})."""
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Task(candidate, arrays, rows, future))
        return await future

    def _take(self, key, room):
        """A held or queued task for `key` of at most `room` rows, or None."""
        for task in self._held:
            if task.key == key and task.rows <= room:
                self._held.remove(task)
                return task
        while not self._queue.empty():
            task = self._queue.get_nowait()
            if task.key == key and task.rows <= room:
                return task
            self._held.append(task)
        return None

    async def _work(self):
        loop = asyncio.get_running_loop()
        while True:
            first = self._held.popleft() if self._held else await self._queue.get()
            batch, rows = [first], first.rows
            deadline = loop.time() + self.timeout
            while rows < self.max_batch_size:
                task = self._take(first.key, self.max_batch_size - rows)
                if task is None:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        task = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                    if task.key != first.key or task.rows > self.max_batch_size - rows:
                        self._held.append(task)
                        continue
                batch.append(task)
                rows += task.rows
            await self._run(batch, rows)

    async def _run(self, batch, rows):
        batch = [t for t in batch if not t.future.done()]  # cancelled: client went away
        if not batch:
            return
        size = self.padded_size(rows)
        arrays = {}
        for name in batch[0].arrays:
            parts = [t.arrays[name] for t in batch]
            if size > rows:
                a = parts[0]
                parts.append(np.zeros((size - rows, *a.shape[1:]), a.dtype))
            arrays[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self.batches += 1
        try:
            outputs = await self._execute(batch[0].candidate.run, arrays)
            for name, value in outputs.items():
                if np.ndim(value) == 0 or np.shape(value)[0] != size:
                    raise ServingError.internal(
                        f"output {name} has shape {list(np.shape(value))} for a batch of {size}: "
                        "batching needs outputs with the batch axis first (run without "
                        "--batching)"
                    )
        except Exception as e:
            for t in batch:
                if not t.future.done():
                    t.future.set_exception(e)
            return
        start = 0
        for t in batch:
            if not t.future.done():
                t.future.set_result({n: v[start : start + t.rows] for n, v in outputs.items()})
            start += t.rows
