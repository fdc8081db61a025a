"""Shared helpers of :mod:`lss_engine.kinetics`: input coercion, blocks, JSON.

Nothing here is public API; the public functions document the conventions
(a trajectory list never yields pairs across trajectory boundaries; blocks are
contiguous pieces of the time-ordered concatenation of all trajectories).
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Sequence, Union

import numpy as np

from .._helpers import jsonable
from ..errors import LssError
from ..units import lag_to_frames

#: One trajectory (frames, ...) or a list of them.
Trajectories = Union[np.ndarray, Sequence[np.ndarray]]


def as_trajectories(trajs: Trajectories, *, dtype: Any = float, ndim: int | None = None,
                    name: str = "trajs") -> list[np.ndarray]:
    """Return a list of arrays; a single array (or a flat list of numbers) is one trajectory.

    ``ndim=1`` requires 1-D trajectories; ``ndim=2`` promotes 1-D ones to
    ``(frames, 1)``.
    """
    if isinstance(trajs, np.ndarray):
        items = [trajs]
    else:
        items = list(trajs)
        if not items:
            raise LssError(f"{name}: no trajectories given")
        if all(isinstance(v, numbers.Number) for v in items):
            items = [np.asarray(items)]
    out = []
    for i, t in enumerate(items):
        a = np.asarray(t)
        if dtype is int:
            if a.size and not np.issubdtype(a.dtype, np.integer):
                if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
                    raise LssError(f"{name}[{i}]: discrete trajectories must hold integer labels")
            a = a.astype(np.int64)
        else:
            a = a.astype(dtype)
            if a.size and not np.all(np.isfinite(a)):
                raise LssError(f"{name}[{i}] contains NaN or Inf")
        if ndim == 1:
            if a.ndim != 1:
                raise LssError(f"{name}[{i}] must be 1-D (frames,), got shape {a.shape}")
        elif ndim == 2:
            if a.ndim == 1:
                a = a[:, None]
            if a.ndim != 2:
                raise LssError(f"{name}[{i}] must be (frames,) or (frames, n), got shape {a.shape}")
        out.append(a)
    if ndim == 2:
        widths = {a.shape[1] for a in out}
        if len(widths) > 1:
            raise LssError(f"{name}: trajectories have different numbers of columns {sorted(widths)}")
    return out


def as_lag(lag: Any, dt: float) -> int:
    """Lag in frames from an int (frames) or a time ("10ps", float in ps)."""
    if isinstance(lag, np.integer):
        lag = int(lag)
    return lag_to_frames(lag, dt)


def check_dt(dt: float) -> float:
    dt = float(dt)
    if not (dt > 0 and math.isfinite(dt)):
        raise LssError(f"dt must be a positive frame interval in ps, got {dt!r}")
    return dt


def split_blocks(trajs: list[np.ndarray], n_blocks: int) -> list[list[np.ndarray]]:
    """Split the time-ordered concatenation of ``trajs`` into ``n_blocks`` contiguous blocks.

    Block ``k`` holds frames ``[k N / K, (k+1) N / K)`` of the concatenation
    (``N`` frames in all, lengths differ by at most one frame), kept as a list
    of segments so that no segment spans a trajectory boundary.
    """
    if n_blocks < 1:
        raise LssError(f"n_blocks must be >= 1, got {n_blocks}")
    lengths = np.array([len(t) for t in trajs])
    total = int(lengths.sum())
    if total < n_blocks:
        raise LssError(f"{total} frames cannot be split into {n_blocks} blocks")
    bounds = np.array_split(np.arange(total), n_blocks)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    blocks: list[list[np.ndarray]] = []
    for b in bounds:
        lo, hi = int(b[0]), int(b[-1]) + 1
        segs = []
        for i, t in enumerate(trajs):
            s, e = max(lo, starts[i]), min(hi, starts[i + 1])
            if e > s:
                segs.append(t[s - starts[i]:e - starts[i]])
        blocks.append(segs)
    return blocks


def bootstrap_units(trajs: list[np.ndarray], min_units: int = 10) -> list[np.ndarray]:
    """Units resampled by the bootstrap: whole trajectories if there are at least
    ``min_units`` of them, otherwise each trajectory cut into equal contiguous
    pieces so that there are about ``min_units`` pieces in all."""
    if len(trajs) >= min_units:
        return list(trajs)
    per = math.ceil(min_units / len(trajs))
    units = []
    for t in trajs:
        units.extend(p for p in np.array_split(t, per) if len(p))
    return units


def block_se(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Standard error from block estimates: std (ddof=1) / sqrt(K) over the finite
    estimates along ``axis``; NaN where fewer than two are finite."""
    v = np.asarray(values, dtype=float)
    v = np.where(np.isfinite(v), v, np.nan)
    n = np.sum(np.isfinite(v), axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        std = np.nanstd(v, axis=axis, ddof=1)
        se = std / np.sqrt(np.maximum(n, 1))
    return np.where(n >= 2, se, np.nan)


def _real_part(value: Any) -> Any:
    return jsonable(value.real) if isinstance(value, complex) else value


def jsonify(value: Any) -> Any:
    """Convert numpy arrays/scalars (nested in dicts, lists) to JSON-safe Python.

    The package's strict-JSON rule (:func:`lss_engine._helpers.jsonable`):
    non-finite floats (NaN, ±Inf) become ``None``; complex numbers keep their
    real part.
    """
    return jsonable(value, default=_real_part)
