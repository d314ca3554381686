"""GroupNorm for NumPy arrays: the public functions `group_norm`
and `group_norm_backward`, their Dask path (chunks along N), and the
`GroupNorm` module.  The arguments are checked and the kernels run by the
compiled core (fastnorm/_group.pxi)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import _core
from ._modules import _module_dtype, _Norm

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike

    from ._api import Array

__all__ = ["group_norm", "group_norm_backward", "GroupNorm"]


def group_norm(
    x: ArrayLike,
    num_groups: int,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    eps: float = 1e-5,
    *,
    channel_axis: int = 1,
    out: Array | None = None,
    return_stats: bool = False,
) -> Any:
    """Group normalization, as ``torch.nn.functional.group_norm`` and ONNX
    GroupNormalization-21.

    The C channels are split into `num_groups` groups of C / num_groups
    neighbouring channels; each sample's group is normalized over its
    channels and every spatial position, then each channel is scaled and
    shifted by its own weight and bias.

    Parameters
    ----------
    x : array_like
        (N, C, *spatial) with ``channel_axis=1`` (channels-first, as in
        PyTorch and ONNX) or (N, *spatial, C) with ``channel_axis=-1``
        (channels-last: NHWC, Keras); any number of spatial axes, none
        included.  float32 and float64 are computed in their own precision,
        float16 and bfloat16 in float32 and rounded once; integers and bools
        become float64.  A Dask array gives a lazy result, computed block by
        block along N (the other axes are single chunks).
    num_groups : int
        The number of groups; C must be divisible by it.
    weight, bias : array_like, optional
        Shape (C,): one scale and one shift per channel.
    eps : float, default 1e-5
        Added to the variance; finite and >= 0.
    channel_axis : {1, -1}, default 1
        Where the channels are.
    out : ndarray, optional
        Where to write the result (x's shape and dtype); may be x itself.
    return_stats : bool, default False
        Also return ``mean`` and ``rstd = 1/sqrt(var + eps)``, shape
        (N, num_groups), float64 for float64 input, else float32.

    Returns
    -------
    y : ndarray
        x's shape and dtype; ``(y, mean, rstd)`` with `return_stats`.

    Notes
    -----
    Each group is normalized by one thread, so the results are the same
    bits for any thread count.  The statistics are taken about a pivot
    inside the group and finished in double, so a large mean costs no
    accuracy (the LayerNorm kernels' method, docs/accuracy.md).
    """
    try:
        return _core.group_norm(x, num_groups, weight, bias, eps, channel_axis, out, return_stats)
    except _core.DaskOperand:
        return _dask_group_norm(x, num_groups, weight, bias, eps, channel_axis, out, return_stats)


def group_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    num_groups: int,
    weight: ArrayLike | None = None,
    *,
    mean: ArrayLike | None = None,
    rstd: ArrayLike | None = None,
    eps: float = 1e-5,
    channel_axis: int = 1,
) -> tuple[Array, Array | None, Array]:
    """Gradients of `group_norm`.

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to the forward's output; x's shape.
    x : array_like
        The forward's input.
    num_groups : int
    weight : array_like, optional
        The forward's weight, shape (C,).
    mean, rstd : array_like, optional
        The statistics ``group_norm(..., return_stats=True)`` returned, shape
        (N, num_groups).  With rstd the variance is not recomputed; the mean
        is always taken from x again (exactly, in the same pass); `mean` is
        checked for shape only.
    eps : float, default 1e-5
        As in the forward; used only when rstd is not given.
    channel_axis : {1, -1}, default 1

    Returns
    -------
    dx : ndarray
        x's shape and dtype.
    dweight : ndarray or None
        Shape (C,); None when weight is None.
    dbias : ndarray
        Shape (C,).

    dweight and dbias are summed over the samples in float64 in a fixed
    order and rounded once: float32 for float16 and bfloat16 inputs, else
    x's dtype.  A Dask operand gives lazy results.
    """
    try:
        return _core.group_norm_backward(dy, x, num_groups, weight, mean, rstd, eps, channel_axis)
    except _core.DaskOperand:
        return _dask_group_norm_backward(dy, x, num_groups, weight, mean, rstd, eps, channel_axis)


# ---- Dask: blocks along N ------------------------------------------------------


def _dask_input(value):
    import dask.array as da

    arr = value if hasattr(type(value), "__dask_graph__") else da.asarray(value)
    # one block per chunk of samples: every other axis whole
    return arr.rechunk(dict.fromkeys(range(1, arr.ndim), -1))


def _dask_small(value):
    """weight, bias, mean or rstd as an in-memory array (they are small)."""
    if value is None or not hasattr(type(value), "__dask_graph__"):
        return value
    return np.asarray(value.compute())


def _dask_blocks(*arrays):
    """The delayed blocks of arrays chunked alike along N (one block each)."""
    return [arr.to_delayed().reshape(-1) for arr in arrays]


def _dask_group_norm(x, num_groups, weight, bias, eps, channel_axis, out, return_stats):
    import dask
    import dask.array as da

    if out is not None:
        raise TypeError(
            "out= is not supported with a Dask input; store the lazy result with "
            "dask.array.store instead"
        )
    xd = _dask_input(x)
    weight, bias = _dask_small(weight), _dask_small(bias)
    # the arguments are checked now, on an empty sample of the same layout
    probe = np.zeros((0,) + xd.shape[1:], xd.dtype)
    _core.group_norm(probe, num_groups, weight, bias, eps, channel_axis, None, False)
    stat_dtype = _core.compute_dtype(xd.dtype)
    call = dask.delayed(_core.group_norm, nout=3, pure=True)
    ys, means, rstds = [], [], []
    for block, n in zip(_dask_blocks(xd)[0], xd.chunks[0]):
        y, mean, rstd = call(block, num_groups, weight, bias, eps, channel_axis, None, True)
        ys.append(da.from_delayed(y, (n,) + xd.shape[1:], xd.dtype))
        means.append(da.from_delayed(mean, (n, int(num_groups)), stat_dtype))
        rstds.append(da.from_delayed(rstd, (n, int(num_groups)), stat_dtype))
    y = da.concatenate(ys, axis=0)
    if not return_stats:
        return y
    return y, da.concatenate(means, axis=0), da.concatenate(rstds, axis=0)


def _dask_group_norm_backward(dy, x, num_groups, weight, mean, rstd, eps, channel_axis):
    import dask
    import dask.array as da

    xd, dyd = _dask_input(x), _dask_input(dy)
    if dyd.shape != xd.shape:
        raise ValueError(f"dy has shape {dyd.shape} but x has shape {xd.shape}")
    dyd = dyd.rechunk(xd.chunks)
    weight = _dask_small(weight)
    mean, rstd = _dask_small(mean), _dask_small(rstd)
    probe = np.zeros((0,) + xd.shape[1:], xd.dtype)
    _core.group_norm_backward(probe, probe, num_groups, weight, None, None, eps, channel_axis)
    for name, stat in (("mean", mean), ("rstd", rstd)):
        if stat is not None and np.shape(stat) != (xd.shape[0], num_groups):
            raise ValueError(
                f"{name} must have shape ({xd.shape[0]}, {num_groups}), (N, num_groups), "
                f"got shape {np.shape(stat)}"
            )
    channels = xd.shape[channel_axis]
    call = dask.delayed(_core.group_norm_backward, nout=3, pure=True)
    dxs, dws, dbs = [], [], []
    lo = 0
    for dyb, xb, n in zip(*_dask_blocks(dyd, xd), xd.chunks[0]):
        r = None if rstd is None else np.asarray(rstd)[lo : lo + n]
        lo += n
        dx, dw, db = call(dyb, xb, num_groups, weight, None, r, eps, channel_axis, True)
        dxs.append(da.from_delayed(dx, (n,) + xd.shape[1:], xd.dtype))
        if weight is not None:
            dws.append(da.from_delayed(dw, (channels,), np.float64))
        dbs.append(da.from_delayed(db, (channels,), np.float64))
    stat_dtype = _core.compute_dtype(xd.dtype)

    def total(parts):
        # the blocks' float64 sums added in block order, then rounded once
        return da.stack(parts).sum(axis=0, split_every=len(parts)).astype(stat_dtype)

    dweight = total(dws) if weight is not None else None
    return da.concatenate(dxs, axis=0), dweight, total(dbs)


# ---- the module ----------------------------------------------------------------


class GroupNorm(_Norm):
    """Group normalization as a stateful module, with torch.nn.GroupNorm's
    parameters and state_dict keys.

    Parameters
    ----------
    num_groups : int
    num_channels : int
        C; divisible by num_groups.
    eps : float, default 1e-5
    affine : bool, default True
        Learnable per-channel `weight` (ones) and `bias` (zeros).
    dtype : float32, float64, float16 or bfloat16, default float32
        Dtype of the parameters (float16/bfloat16 modules compute in float32).
    channel_axis : {1, -1}, default 1
        Channels-first (N, C, *spatial) or channels-last (N, *spatial, C).

    Calling the module runs `fastnorm.group_norm` and keeps what `backward`
    needs; `backward(dy)` returns dx and sets `weight_grad` and `bias_grad`.
    """

    _param_names = ("weight", "bias")
    eps: float
    bias: Array | None
    bias_grad: Array | None

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        dtype: DTypeLike = np.float32,
        channel_axis: int = 1,
    ) -> None:
        num_groups, num_channels = int(num_groups), int(num_channels)
        if num_groups < 1 or num_channels < 1 or num_channels % num_groups:
            raise ValueError(
                f"num_channels ({num_channels}) must be a positive multiple of num_groups "
                f"({num_groups})"
            )
        self.num_groups, self.num_channels = num_groups, num_channels
        self.normalized_shape = (num_channels,)
        self.eps = _core.check_eps(eps)
        self.affine = self.elementwise_affine = bool(affine)
        self.channel_axis = channel_axis
        self.dtype = _module_dtype(dtype)
        self.weight = np.ones(num_channels, self.dtype) if affine else None
        self.bias = np.zeros(num_channels, self.dtype) if affine else None
        self.weight_grad = self.bias_grad = None
        self._saved = None

    def __call__(self, x: ArrayLike) -> Array:
        y, mean, rstd = _core.group_norm(
            x, self.num_groups, self.weight, self.bias, self.eps, self.channel_axis, None, True
        )
        self._saved = (x, mean, rstd)
        return y

    def backward(self, dy: ArrayLike) -> Array:
        x, mean, rstd = self._require_saved()
        dx, dw, db = group_norm_backward(
            dy,
            x,
            self.num_groups,
            self.weight,
            mean=mean,
            rstd=rstd,
            eps=self.eps,
            channel_axis=self.channel_axis,
        )
        self.weight_grad = dw
        self.bias_grad = db if self.bias is not None else None
        return dx

    def __repr__(self):
        return (
            f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, "
            f"affine={self.affine}, dtype={self.dtype.name}, channel_axis={self.channel_axis})"
        )
