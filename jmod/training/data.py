"""Batches for `fit`, `evaluate` and `predict`: from arrays, dicts/tuples of arrays, or iterables.

Every batch reaches the compiled step with the same shape: a short last
batch is padded (with copies of its own rows) and comes with a mask that is
0.0 on the padding, so the step is traced once however the data divides.
A batch is `(leaves, mask)`: the flattened `(x, y, sample_weight)` arrays,
each `(B, ...)` (or `(k, B, ...)` for `steps_per_execution=k`), and the
float32 mask `(B,)` (or `(k, B)`).

On an accelerator, array data that fits is copied to the device once and
each step gathers its rows there, so only the step number crosses from the
host. On the CPU backend the rows are sliced with NumPy instead: the slicing
then overlaps the previous step's computation, where a gather would queue
behind it (measured: 0.86x of a raw loop's speed with the gather, see
bench/fit.py).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jmod.training._errors import TrainingError

# Array data up to this size lives on an accelerator for the whole fit.
DEVICE_DATA_LIMIT = 2 << 30


def _gather_on_device(nbytes):
    return nbytes <= DEVICE_DATA_LIMIT and jax.default_backend() != "cpu"


def unpack(data):
    """`(x, y, sample_weight)` from a batch given as `x`, `(x,)`, `(x, y)` or `(x, y, w)`.

    Example:
        >>> unpack((1, 2))
        (1, 2, None)
    """
    if isinstance(data, tuple) and 1 <= len(data) <= 3:
        return tuple(data) + (None,) * (3 - len(data))
    if isinstance(data, list) and len(data) in (2, 3) and not _is_array(data[0]):
        return tuple(data) + (None,) * (3 - len(data))
    return data, None, None


def _is_array(x):
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _is_leaf(x):
    return _is_array(x)


def flatten(x, y=None, sample_weight=None):
    """The array leaves of `(x, y, sample_weight)` and the structure to rebuild it.

    Example:
        >>> leaves, treedef = flatten({"a": np.zeros(2)}, np.ones(2))
        >>> len(leaves)
        2
    """
    leaves, treedef = jax.tree_util.tree_flatten((x, y, sample_weight))
    out = []
    for leaf in leaves:
        if not _is_array(leaf):
            if isinstance(leaf, (int, float, bool, np.number)):
                raise TrainingError(
                    f"training data must be arrays with a batch axis, got a scalar {leaf!r}"
                )
            try:
                leaf = np.asarray(leaf)
            except Exception as e:
                raise TrainingError(
                    f"training data must be arrays, got {type(leaf).__name__}: {e}"
                ) from None
        out.append(leaf)
    return out, treedef


def standard_dtype(dtype):
    """The dtype data is fed in: 64-bit types become 32-bit unless x64 is on.

    Example:
        >>> standard_dtype(np.float64)
        dtype('float32')
    """
    dtype = np.dtype(dtype)
    if jax.config.jax_enable_x64:
        return dtype
    return {
        np.dtype(np.float64): np.dtype(np.float32),
        np.dtype(np.int64): np.dtype(np.int32),
        np.dtype(np.uint64): np.dtype(np.uint32),
        np.dtype(np.complex128): np.dtype(np.complex64),
    }.get(dtype, dtype)


def _to_standard(leaf):
    dtype = standard_dtype(leaf.dtype)
    if dtype == leaf.dtype:
        return leaf
    if isinstance(leaf, np.ndarray):
        return leaf.astype(dtype)
    return jnp.asarray(leaf, dtype)


def count_samples(leaves, what="data"):
    """The common size of the leaves' first axis; an error naming the mismatch otherwise."""
    sizes = [int(np.shape(leaf)[0]) if np.ndim(leaf) else None for leaf in leaves]
    if None in sizes:
        raise TrainingError(f"{what}: every array needs a batch (first) axis; got a scalar array")
    if len(set(sizes)) > 1:
        raise TrainingError(
            f"{what}: arrays have different numbers of samples {sorted(set(sizes))}; "
            "x, y and sample_weight must have the same first dimension"
        )
    return sizes[0] if sizes else 0


def split_validation(x, y, sample_weight, fraction):
    """`((x, y, w) for training, (x, y, w) for validation)`: the last `fraction` validates.

    As in Keras, the split happens before shuffling.

    Example:
        >>> (tx, ty, _), (vx, vy, _) = split_validation(np.arange(10), np.arange(10), None, 0.2)
        >>> vx.tolist()
        [8, 9]
    """
    if not 0.0 < fraction < 1.0:
        raise TrainingError(f"validation_split must be in (0, 1), got {fraction!r}")
    leaves, treedef = flatten(x, y, sample_weight)
    n = count_samples(leaves, "validation_split")
    split = int(n * (1.0 - fraction))
    if split == 0 or split == n:
        raise TrainingError(
            f"validation_split={fraction} of {n} samples leaves an empty training or validation set"
        )
    train = jax.tree_util.tree_unflatten(treedef, [leaf[:split] for leaf in leaves])
    val = jax.tree_util.tree_unflatten(treedef, [leaf[split:] for leaf in leaves])
    return train, val


def class_weights_for(y, class_weight):
    """Per-sample weights `class_weight[label]` for integer or one-hot labels `y`.

    Example:
        >>> class_weights_for(np.array([0, 1, 1]), {0: 1.0, 1: 3.0}).tolist()
        [1.0, 3.0, 3.0]
    """
    y = np.asarray(y)
    if y.ndim >= 2 and y.shape[-1] > 1:
        labels = np.argmax(y, axis=-1)
    else:
        labels = y.reshape(y.shape[0], -1)[:, 0] if y.ndim >= 2 else y
        labels = np.rint(labels).astype(np.int64)
    table = np.ones(max(max(class_weight) + 1, int(labels.max(initial=0)) + 1), np.float32)
    for cls, weight in class_weight.items():
        table[int(cls)] = weight
    return table[labels.reshape(labels.shape[0], -1)[:, 0] if labels.ndim > 1 else labels]


def _apply_class_weight(x, y, sample_weight, class_weight):
    if not class_weight:
        return sample_weight
    if y is None or not _is_array(y):
        raise TrainingError("class_weight needs a single array of labels y")
    weights = class_weights_for(np.asarray(y), class_weight)
    if sample_weight is not None:
        weights = weights * np.asarray(sample_weight, np.float32).reshape(weights.shape[0])
    return weights


def padded_order(n, batch_size, steps, k, rng):
    """(Sample indices for one epoch, `ceil(steps / k) * k * batch_size` long; real count).

    Positions past `n` are padding: they repeat the last batch's rows (so
    they are real samples for layers such as BatchNormalization) and the
    mask makes them count for nothing.

    Example:
        >>> order, used = padded_order(5, 2, 3, 1, None)
        >>> order.tolist(), used
        ([0, 1, 2, 3, 4, 4], 5)
    """
    order = np.arange(n, dtype=np.int32) if rng is None else rng.permutation(n).astype(np.int32)
    order = order[: steps * batch_size]
    used = len(order)
    total = math.ceil(steps / k) * k * batch_size
    if total > used:
        tail = order[(steps - 1) * batch_size :] if used else np.zeros(1, np.int32)
        fill = tail[np.arange(total - used) % len(tail)]
        order = np.concatenate([order, fill])
    return order, used


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _gather(leaves, order, start, batch_size, k, used):
    size = batch_size * k
    idx = jax.lax.dynamic_slice(order, (start,), (size,))
    out = [jnp.take(leaf, idx, axis=0) for leaf in leaves]
    mask = ((start + jnp.arange(size)) < used).astype(jnp.float32)
    if k > 1:
        out = [leaf.reshape((k, batch_size) + leaf.shape[1:]) for leaf in out]
        mask = mask.reshape(k, batch_size)
    return out, mask


class ArrayData:
    """Batches over in-memory arrays (NumPy or JAX), shuffled each epoch if asked.

    Example:
        >>> data = ArrayData(np.zeros((5, 2)), np.zeros(5), batch_size=2)
        >>> data.steps, [float(m.sum()) for _, m in data.epoch(None)]
        (3, [2.0, 2.0, 1.0])

    Args:
        x, y, sample_weight: arrays, or dicts/tuples/lists of arrays.
        batch_size: rows per step (default 32).
        shuffle: draw a new order each epoch.
        steps: limit each epoch to this many steps.
        class_weight: `{class: weight}`, multiplied into the sample weights.
    """

    def __init__(
        self,
        x,
        y=None,
        sample_weight=None,
        batch_size=None,
        shuffle=False,
        steps=None,
        class_weight=None,
    ):
        sample_weight = _apply_class_weight(x, y, sample_weight, class_weight)
        leaves, self.treedef = flatten(x, y, sample_weight)
        if not leaves:
            raise TrainingError("no input data: x is None or empty")
        self.n = count_samples(leaves)
        if self.n == 0:
            raise TrainingError("the data has 0 samples")
        self.batch_size = min(int(batch_size or 32), self.n)
        self.shuffle = shuffle
        self.steps = math.ceil(self.n / self.batch_size)
        if steps is not None:
            self.steps = min(self.steps, int(steps))
        self.has_y = y is not None
        nbytes = sum(standard_dtype(leaf.dtype).itemsize * np.size(leaf) for leaf in leaves)
        self.on_device = _gather_on_device(nbytes)
        if self.on_device:
            self.leaves = [jnp.asarray(_to_standard(leaf)) for leaf in leaves]
        else:
            # Converted once here, so a step only slices.
            self.leaves = [_to_standard(np.asarray(leaf)) for leaf in leaves]

    def __len__(self):
        return self.steps

    def first(self):
        """One batch's `(x, y, sample_weight)`, unpadded (to build the model from)."""
        rows = [leaf[: self.batch_size] for leaf in self.leaves]
        return jax.tree_util.tree_unflatten(self.treedef, rows)

    def epoch(self, rng, k=1):
        """Yields `(leaves, mask)` for `ceil(steps / k)` compiled calls."""
        if self.steps == 1 and self.batch_size == self.n and k == 1 and rng is None:
            # One whole batch in order (train_on_batch, small evaluations): no gather.
            yield list(self.leaves), np.ones(self.n, np.float32)
            return
        order, used = padded_order(self.n, self.batch_size, self.steps, k, rng)
        b = self.batch_size
        if self.on_device:
            order_dev = jnp.asarray(order)
            for start in range(0, len(order), b * k):
                yield _gather(self.leaves, order_dev, np.int32(start), b, k, used)
            return
        full = np.ones(b * k, np.float32)
        for start in range(0, len(order), b * k):
            idx = order[start : start + b * k]
            out = [leaf[idx] for leaf in self.leaves]
            mask = full if start + b * k <= used else (start + np.arange(b * k) < used)
            mask = mask.astype(np.float32, copy=False)
            if k > 1:
                out = [leaf.reshape((k, b) + leaf.shape[1:]) for leaf in out]
                mask = mask.reshape(k, b)
            yield out, mask


def _take_rows(leaf, idx):
    if isinstance(leaf, np.ndarray):
        return leaf[idx]
    return jnp.take(leaf, jnp.asarray(idx), axis=0)


class IterableData:
    """Batches from a Python iterable or generator of `x`, `(x, y)` or `(x, y, w)` batches.

    The first batch's size is the step's batch size; smaller batches are
    padded and masked. A re-iterable object (a list, a dataset class) is
    iterated afresh each epoch; a one-shot iterator continues where the last
    epoch stopped (give `steps` to cut epochs).

    Example:
        >>> batches = [(np.zeros((4, 2)), np.zeros(4)), (np.zeros((1, 2)), np.zeros(1))]
        >>> [float(m.sum()) for _, m in IterableData(batches).epoch(None)]
        [4.0, 1.0]
    """

    def __init__(self, source, steps=None, class_weight=None):
        self.source = source
        self.one_shot = iter(source) is source
        self._iterator = iter(source)
        self.steps = int(steps) if steps is not None else None
        if self.steps is None and hasattr(source, "__len__"):
            self.steps = len(source)
        self.class_weight = class_weight
        self.exhausted = False
        # Called with each batch's labels y before it is used (`fit` sets it
        # to check sparse labels' range, on the host).
        self.batch_check = None
        self._first = None
        self.batch_size = None
        self.treedef = None
        self.has_y = None

    def __len__(self):
        return self.steps or 0

    def _next(self):
        if self._first is not None:
            batch, self._first = self._first, None
            return batch
        return next(self._iterator)

    def first(self):
        """The first batch's `(x, y, sample_weight)` (kept for the first step)."""
        if self._first is None:
            try:
                self._first = self._next()
            except StopIteration:
                raise TrainingError("the data iterable yielded no batches") from None
        x, y, w = unpack(self._first)
        self.has_y = y is not None
        if self.treedef is None:
            self._prepare(self._first)  # sets the batch size and structure
        return x, y, w

    def _prepare(self, batch):
        x, y, w = unpack(batch)
        if self.batch_check is not None and y is not None:
            self.batch_check(y)
        w = _apply_class_weight(x, y, w, self.class_weight)
        leaves, treedef = flatten(x, y, w)
        n = count_samples(leaves, "a batch from the data iterable")
        if self.batch_size is None:
            self.batch_size, self.treedef = n, treedef
        elif treedef != self.treedef:
            raise TrainingError(
                f"the data iterable changed structure between batches: {self.treedef} then "
                f"{treedef}"
            )
        b = self.batch_size
        leaves = [_to_standard(leaf) for leaf in leaves]
        if n > b:
            raise TrainingError(
                f"a batch from the data iterable has {n} samples, more than the first "
                f"batch's {b}; the first batch sets the batch size"
            )
        if n < b:
            idx = np.arange(b) % n
            leaves = [_take_rows(leaf, idx) for leaf in leaves]
        mask = (np.arange(b) < n).astype(np.float32)
        return leaves, mask

    def epoch(self, rng, k=1):
        """Yields `(leaves, mask)` per compiled call; `rng` is unused (no shuffling)."""
        del rng
        if not self.one_shot and self._first is None:
            self._iterator = iter(self.source)
        group = []
        count = 0
        while self.steps is None or count < self.steps:
            try:
                batch = self._next()
            except StopIteration:
                if self.one_shot:
                    self.exhausted = True
                break
            count += 1
            prepared = self._prepare(batch)
            if k == 1:
                yield prepared
                continue
            group.append(prepared)
            if len(group) == k:
                yield _stack(group)
                group = []
        if group:
            leaves, mask = group[-1]
            group += [(leaves, np.zeros_like(mask))] * (k - len(group))
            yield _stack(group)
        if count and self.steps is None:
            self.steps = count


def _stack(group):
    leaves = [
        np.stack(parts) if all(isinstance(p, np.ndarray) for p in parts) else jnp.stack(parts)
        for parts in zip(*(g[0] for g in group))
    ]
    return leaves, np.stack([g[1] for g in group])


def adapt(
    x, y=None, sample_weight=None, batch_size=None, shuffle=False, steps=None, class_weight=None
):
    """`ArrayData` for arrays (and dicts/tuples of them), `IterableData` for iterables.

    Example:
        >>> batches = [(np.zeros((3, 1)), np.zeros(3))]
        >>> type(adapt(np.zeros((3, 1)))).__name__, type(adapt(batches)).__name__
        ('ArrayData', 'IterableData')
    """
    batches = is_batches(x)
    leaves = [] if batches else jax.tree_util.tree_leaves(x)
    if leaves and all(_is_array(leaf) for leaf in leaves):
        return ArrayData(x, y, sample_weight, batch_size, shuffle, steps, class_weight)
    if y is not None or sample_weight is not None:
        raise TrainingError(
            "when x is an iterable of batches, y and sample_weight come from its batches; "
            "do not pass them separately"
        )
    if x is None or not hasattr(x, "__iter__"):
        raise TrainingError(
            f"x must be arrays, dicts/tuples of arrays, or an iterable of batches; "
            f"got {type(x).__name__}"
        )
    return IterableData(x, steps, class_weight)


def is_batches(x):
    """Whether `x` is an iterable of batches rather than (a structure of) arrays.

    A list of arrays is a multi-input x; a list of tuples, a generator or a
    custom iterable is batches.

    Example:
        >>> is_batches([np.zeros(2)]), is_batches([(np.zeros(2), np.zeros(2))])
        (False, True)
    """
    if isinstance(x, list):
        return len(x) > 0 and all(isinstance(item, tuple) for item in x)
    return not isinstance(x, (dict, tuple)) and not _is_array(x)
