"""Which block of a global array each device holds, as pure (start, shape) boxes.

Sharded checkpoints store each distinct block once, by the process chosen to
write it, and restore any box of the global array from the blocks that
overlap it. Boxes are `(start, shape)` tuples of ints, one per dimension.

Example:
    >>> from jmod.distributed._slices import intersect
    >>> intersect(((0, 0), (4, 8)), ((2, 4), (4, 4)))
    ((2, 4), (2, 4))
    >>> intersect(((0,), (2,)), ((2,), (2,))) is None
    True
"""

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Block:
    """One distinct block of a sharded array: its box and the processes holding a copy."""

    start: tuple[int, ...]
    shape: tuple[int, ...]
    holders: tuple[int, ...]

    @property
    def box(self):
        return self.start, self.shape

    @property
    def size(self):
        return math.prod(self.shape)


def box_of(index, shape):
    """The `(start, shape)` box of a tuple of slices (from `devices_indices_map`) into `shape`."""
    starts, sizes = [], []
    for dim, size in enumerate(shape):
        s = index[dim] if dim < len(index) else slice(None)
        begin, end, step = s.indices(size)
        if step != 1:
            raise ValueError(f"a shard slice with step {step} is not a block")
        starts.append(begin)
        sizes.append(max(end - begin, 0))
    return tuple(starts), tuple(sizes)


def blocks(sharding, shape):
    """The distinct blocks of an array of `shape` laid out by `sharding`, in a fixed order.

    Every process computes the same list (it depends on the sharding alone,
    not on which devices are local), so the processes agree on who writes
    what without talking.
    """
    shape = tuple(shape)
    holders = {}
    for device, index in sharding.devices_indices_map(shape).items():
        box = box_of(index, shape)
        holders.setdefault(box, set()).add(device.process_index)
    return [Block(start, size, tuple(sorted(h))) for (start, size), h in sorted(holders.items())]


def local_boxes(sharding, shape):
    """The distinct boxes this process's devices hold (what a restore must fill here)."""
    shape = tuple(shape)
    found = []
    for index in sharding.addressable_devices_indices_map(shape).values():
        box = box_of(index, shape)
        if box not in found:
            found.append(box)
    return found


def intersect(a, b):
    """The box where boxes `a` and `b` overlap, or None if they do not."""
    (sa, za), (sb, zb) = a, b
    start = tuple(max(x, y) for x, y in zip(sa, sb))
    stop = tuple(min(x + m, y + n) for x, m, y, n in zip(sa, za, sb, zb))
    if any(e <= s for s, e in zip(start, stop)):
        return None
    return start, tuple(e - s for s, e in zip(start, stop))


def relative(box, to):
    """`box` (inside `to`) as slices into an array holding exactly `to`."""
    (start, shape), (origin, _) = box, to
    return tuple(slice(s - o, s - o + n) for s, o, n in zip(start, origin, shape))


def assign_writers(block_list, num_processes, sizes=None):
    """The process that writes each block: one of its holders, balancing bytes.

    Blocks are taken largest first, each by the holder with the fewest bytes
    so far (ties: the lowest process index), so replicated values spread
    over the processes instead of all landing on process 0.
    """
    sizes = [b.size for b in block_list] if sizes is None else list(sizes)
    load = [0] * num_processes
    writer = [None] * len(block_list)
    for i in sorted(range(len(block_list)), key=lambda i: (-sizes[i], i)):
        holder = min(block_list[i].holders, key=lambda p: (load[p], p))
        writer[i] = holder
        load[holder] += sizes[i]
    return writer
