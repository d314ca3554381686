"""Arrays whose bytes sit flush against an inaccessible (PROT_NONE) page, so
that any read or write past their last byte, or before their first byte,
segfaults instead of passing silently.

    a = guarded_empty((3, 70), np.float32, Layout(flush="end"))
    a[...] = values            # or guarded_array(values, layout)

Each array lives in its own anonymous mapping:

    [PROT_NONE page][ ... data pages ... ][PROT_NONE page]

With ``flush="end"`` the highest byte any element occupies is the last byte
before the trailing guard page; with ``flush="start"`` the lowest byte is
the first byte after the leading guard page.  ``misalign`` (bytes, less than
the item size) shifts the data off its natural alignment while keeping the
guard within one element: the data then starts ``misalign`` bytes after the
leading guard, or ends fewer than ``itemsize`` bytes before the trailing one.

A `Layout` describes any non-overlapping strided view: the memory order of
the axes (``perm``, innermost last, as in ``np.transpose``), negative strides
(``flip``), gaps between consecutive elements of an axis (``pad`` in bytes,
not necessarily a multiple of the item size: unaligned views of a byte
buffer).  Bytes of the mapping that belong to no element are filled with
0xFF, a NaN in every float dtype, so reading them shows up in the results;
`GuardedArray.outside_intact` checks that no kernel wrote to them.
"""

import ctypes
import ctypes.util
import mmap
from dataclasses import dataclass
from typing import Optional

import numpy as np

PAGE = mmap.PAGESIZE
FILL = 0xFF
PROT_NONE = 0

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.mprotect.restype = ctypes.c_int


def _protect(address, length):
    if _libc.mprotect(ctypes.c_void_p(address), ctypes.c_size_t(length), PROT_NONE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mprotect(PROT_NONE) failed at {address:#x}")


@dataclass(frozen=True)
class Layout:
    """How an array's elements are laid out in its guarded mapping.

    perm:  memory order of the axes, outermost first (None: C order);
           perm=(1, 0) on a 2-D array is Fortran order.
    flip:  per axis, True for a negative stride (None: all positive).
    pad:   per axis, extra bytes between consecutive elements of that axis
           (None: all 0, a contiguous array).
    flush: "end" (guard right after the last byte) or "start" (guard right
           before the first byte).
    misalign: bytes (< itemsize) by which the data is moved off its natural
           alignment.
    """

    perm: Optional[tuple[int, ...]] = None
    flip: Optional[tuple[bool, ...]] = None
    pad: Optional[tuple[int, ...]] = None
    flush: str = "end"
    misalign: int = 0

    def describe(self):
        return (
            f"Layout(perm={self.perm}, flip={self.flip}, pad={self.pad}, "
            f"flush={self.flush!r}, misalign={self.misalign})"
        )


def _strides(shape, itemsize, layout):
    ndim = len(shape)
    perm = tuple(range(ndim)) if layout.perm is None else tuple(layout.perm)
    pad = (0,) * ndim if layout.pad is None else tuple(layout.pad)
    flip = (False,) * ndim if layout.flip is None else tuple(layout.flip)
    assert sorted(perm) == list(range(ndim)) and len(pad) == ndim and len(flip) == ndim
    mags = [0] * ndim
    step = itemsize  # bytes one element (or block) spans, innermost first
    for axis in reversed(perm):
        mags[axis] = step + pad[axis]
        step = mags[axis] * shape[axis]
    # lowest / highest byte offsets relative to element [0, ..., 0]
    strides = tuple(-m if f else m for m, f in zip(mags, flip))
    low = sum(s * (n - 1) for s, n in zip(strides, shape) if s < 0)
    high = sum(s * (n - 1) for s, n in zip(strides, shape) if s > 0) + itemsize
    return strides, low, high


class GuardedArray:
    """Owns one guarded mapping and the view into it (``.array``)."""

    def __init__(self, shape, dtype, layout=Layout()):
        dtype = np.dtype(dtype)
        shape = tuple(int(n) for n in shape)
        assert all(n >= 1 for n in shape), "guarded arrays need every dimension >= 1"
        assert 0 <= layout.misalign < max(dtype.itemsize, 2)
        assert layout.flush in ("start", "end")
        strides, low, high = _strides(shape, dtype.itemsize, layout)
        span = high - low  # bytes from the lowest to the past-the-highest element byte
        data_pages = -(-(span + dtype.itemsize) // PAGE)
        self._map = mmap.mmap(
            -1,
            (data_pages + 2) * PAGE,
            flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
        )
        raw = np.frombuffer(self._map, dtype=np.uint8)
        address = raw.__array_interface__["data"][0]
        assert address % PAGE == 0
        data_begin, data_end = PAGE, PAGE * (data_pages + 1)  # offsets into the mapping
        raw[data_begin:data_end] = FILL
        _protect(address, PAGE)
        _protect(address + data_end, PAGE)
        if layout.flush == "start":
            first = data_begin + layout.misalign  # lowest element byte
        else:
            # highest element byte flush with the guard, the start moved down
            # to the requested alignment (less than an item from the guard)
            tail = (-span - layout.misalign) % dtype.itemsize
            first = data_end - tail - span
        self.layout = layout
        self.low_byte = first  # offsets into the mapping
        self.high_byte = first + span  # past the last element byte
        self.region = raw[data_begin:data_end]
        self._data_begin = data_begin
        self.array = np.ndarray(shape, dtype, buffer=raw, offset=first - low, strides=strides)
        assert self.array.__array_interface__["data"][0] == address + first - low
        # which bytes of the data pages belong to an element
        mask = np.zeros(raw.shape, np.uint8)
        np.lib.stride_tricks.as_strided(
            mask[first - low :], shape + (dtype.itemsize,), strides + (1,), writeable=True
        )[...] = 1
        self._outside = mask[data_begin:data_end] == 0
        self.flush_gap = (
            self.low_byte - data_begin if layout.flush == "start" else data_end - self.high_byte
        )

    def outside_intact(self):
        """True if no byte outside the elements changed from the fill."""
        return bool((self.region[self._outside] == FILL).all())

    def snapshot(self):
        """All bytes of the data pages (elements and gaps)."""
        return self.region.copy()


def guarded_empty(shape, dtype, layout=Layout()):
    """A guarded array of this shape and dtype; its elements hold the fill
    pattern (NaN).  The mapping stays alive while the array does."""
    return GuardedArray(shape, dtype, layout)


def guarded_array(values, layout=Layout(), dtype=None):
    """A guarded copy of `values` (its dtype unless `dtype` is given)."""
    values = np.asarray(values)
    g = GuardedArray(values.shape, dtype or values.dtype, layout)
    g.array[...] = values
    return g
