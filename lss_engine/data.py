"""Training data from trajectories: time-lagged pairs and sequence windows.

All frames of all trajectories are loaded into **one** contiguous tensor
(trajectories concatenated in the order given); ``offsets`` records where each
trajectory starts.  A dataset is then a tensor of *start indices* into that
frame tensor:

* :class:`TimeLaggedDataset` - pairs ``(x_i, x_{i+lag})`` with ``i`` and
  ``i + lag`` in the same trajectory, for VAMPnets and latent space simulators;
* :class:`SequenceDataset` - windows ``x_i, ..., x_{i+length-1}`` inside one
  trajectory, of features or of integer labels, for LSTM models.

Batches are gathered with tensor indexing (``frames[idx]``) on a random
permutation of the starts, never item by item.  :meth:`split
<TimeLaggedDataset.split>` makes training and validation views that share the
frame tensor, and :class:`Normalizer` standardises features with statistics of
the training frames only::

    data = TimeLaggedDataset(stores, lag="10ps")
    train, val = data.split(0.2)                  # every 5th of >= 100 contiguous blocks
    norm = Normalizer().fit(train)
    train, val = train.with_normalizer(norm), val.with_normalizer(norm)
    for x0, xt in train.batches(1024, seed=epoch):
        ...

A trajectory is a :class:`lss_engine.store.TrajectoryStore` (anything with a
``features(start, stop)`` method, ``n_frames``, ``feature_names`` and
``frame_interval_ps``), a 2-D array ``(n_frames, n_features)`` (numpy or
torch), or for sequences a 1-D integer array of labels ``(n_frames,)``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, TypeVar, Union

import numpy as np
import torch

from ._helpers import positive_int
from .errors import LssError, NonFiniteError
from .units import TimeLike, lag_to_frames, parse_time_ps

__all__ = ["TimeLaggedDataset", "SequenceDataset", "Normalizer"]

#: frames read (or copied) per step when loading, to bound peak memory
_LOAD_CHUNK = 1 << 16
#: the default block length gives at least this many blocks: random blocks ...
_MIN_BLOCKS = 10
#: ... interleaved blocks (every 5th to validation at 0.2, so the validation blocks sample the whole of
#: every trajectory, and with it every state it visits) ...
_MIN_INTERLEAVED_BLOCKS = 100
#: ... but blocks are at least this many times the lag (or window span)
_BLOCK_SPANS = 10

Trajectory = Union[np.ndarray, torch.Tensor, Any]
Index = Union[int, slice, np.ndarray, torch.Tensor]
_D = TypeVar("_D", bound="_WindowDataset")


# --------------------------------------------------------------------------
# loading


@dataclass(frozen=True)
class _Frames:
    """Concatenated frames of all trajectories, shared by a dataset and its views."""

    data: torch.Tensor  # (n_frames, n_features) or (n_frames,) for labels
    offsets: tuple[int, ...]  # trajectory k holds frames offsets[k]:offsets[k+1]
    feature_names: tuple[str, ...] | None
    frame_interval_ps: float | None
    labels: bool


def _is_store(obj: Any) -> bool:
    return callable(getattr(obj, "features", None)) and hasattr(obj, "n_frames")


def _as_list(trajectories: Any) -> list:
    if _is_store(trajectories) or isinstance(trajectories, (np.ndarray, torch.Tensor)):
        return [trajectories]
    if isinstance(trajectories, (str, bytes)) or not isinstance(trajectories, Iterable):
        raise LssError(
            f"trajectories must be a list of stores or arrays, got {type(trajectories).__name__}"
        )
    return list(trajectories)


def _as_array(traj: Any, k: int) -> np.ndarray:
    if isinstance(traj, torch.Tensor):
        traj = traj.detach().cpu().numpy()
    try:
        array = np.asarray(traj)
    except Exception as exc:  # ragged lists and other junk
        raise LssError(f"trajectory {k} is not a store or an array ({exc.__class__.__name__})") from None
    if array.ndim == 1 and not np.issubdtype(array.dtype, np.integer):
        raise LssError(
            f"trajectory {k} is 1-D of dtype {array.dtype}: 1-D arrays must be integer labels; "
            "give features as (n_frames, n_features)"
        )
    if array.ndim not in (1, 2) or not (
        np.issubdtype(array.dtype, np.number) and not np.issubdtype(array.dtype, np.complexfloating)
    ):
        raise LssError(
            f"trajectory {k} has shape {array.shape} and dtype {array.dtype}; expected real "
            "(n_frames, n_features) features or (n_frames,) integer labels"
        )
    return array


def _load(
    trajectories: Any,
    frame_interval_ps: float | None,
    dtype: torch.dtype | None,
    device: str | torch.device,
) -> _Frames:
    """Check that the trajectories fit together and copy them into one tensor."""
    items = _as_list(trajectories)
    if not items:
        raise LssError("no trajectories given")
    sources: list[Any] = []
    lengths: list[int] = []
    widths: list[int | None] = []  # None: labels
    names: tuple[str, ...] | None = None
    interval = None if frame_interval_ps is None else float(frame_interval_ps)
    if interval is not None and not (math.isfinite(interval) and interval > 0):
        raise LssError(f"frame_interval_ps must be a positive number, got {frame_interval_ps!r}")
    interval_from: str = "frame_interval_ps="
    for k, traj in enumerate(items):
        if _is_store(traj):
            store_names = tuple(str(n) for n in traj.feature_names)
            if names is None:
                names = store_names
            elif store_names != names:
                diff = next((i for i, (a, b) in enumerate(zip(names, store_names)) if a != b), None)
                where = (
                    f"{len(store_names)} features, the others {len(names)}"
                    if diff is None
                    else f"feature {diff} is {store_names[diff]!r}, elsewhere {names[diff]!r}"
                )
                raise LssError(f"trajectory {k} ({getattr(traj, 'path', '?')}) has other features: {where}")
            dt = float(traj.frame_interval_ps)
            if interval is None:
                interval, interval_from = dt, f"trajectory {k}"
            elif not math.isclose(dt, interval, rel_tol=1e-9):
                raise LssError(
                    f"trajectory {k} ({getattr(traj, 'path', '?')}) has frame interval {dt:g} ps, "
                    f"{interval_from} has {interval:g} ps"
                )
            sources.append(traj)
            lengths.append(int(traj.n_frames))
            widths.append(len(store_names))
        else:
            array = _as_array(traj, k)
            sources.append(array)
            lengths.append(array.shape[0])
            widths.append(array.shape[1] if array.ndim == 2 else None)
    if len(set(w is None for w in widths)) > 1:
        raise LssError("trajectories mix integer labels (1-D) with features (2-D)")
    if len(set(widths)) > 1:
        k = next(i for i, w in enumerate(widths) if w != widths[0])
        raise LssError(f"trajectory {k} has {widths[k]} features, trajectory 0 has {widths[0]}")
    total = sum(lengths)
    if total == 0:
        raise LssError("the trajectories hold no frames")
    labels = widths[0] is None
    if dtype is None:
        dtype = torch.int64 if labels else torch.float32
    shape = (total,) if labels else (total, widths[0])
    data = torch.empty(shape, dtype=dtype, device=device)
    offsets = [0]
    for k, (source, n) in enumerate(zip(sources, lengths)):
        start = offsets[-1]
        for a in range(0, n, _LOAD_CHUNK):
            b = min(a + _LOAD_CHUNK, n)
            chunk = source.features(a, b) if _is_store(source) else source[a:b]
            chunk = np.ascontiguousarray(chunk)
            if chunk.shape != (b - a,) + shape[1:]:
                raise LssError(
                    f"trajectory {k} returned frames {a}:{b} with shape {chunk.shape}, "
                    f"expected {(b - a,) + shape[1:]}"
                )
            if np.issubdtype(chunk.dtype, np.floating) and not np.isfinite(chunk).all():
                bad = a + int(np.flatnonzero(~np.isfinite(chunk).reshape(b - a, -1).all(axis=1))[0])
                raise NonFiniteError(f"trajectory {k} has NaN or Inf features at frame {bad}")
            if not chunk.flags.writeable:
                chunk = chunk.copy()
            data[start + a : start + b].copy_(torch.from_numpy(chunk))
        offsets.append(start + n)
    return _Frames(data, tuple(offsets), names, interval, labels)


def _window_starts(offsets: tuple[int, ...], span: int, stride: int = 1) -> np.ndarray:
    """Starts ``i`` with ``i`` and ``i + span`` in the same trajectory, every ``stride`` frames."""
    parts = [
        np.arange(a, b - span, stride, dtype=np.int64)
        for a, b in zip(offsets[:-1], offsets[1:])
        if b - a > span
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _default_block_length(lengths: list[int], span: int, min_blocks: int = _MIN_BLOCKS) -> int:
    """Longest block length giving >= ``min_blocks`` blocks in all, but at least 10 x span."""
    usable = [n for n in lengths if n > span]

    def n_blocks(length: int) -> int:
        return sum(max(1, n // length) for n in usable)

    lo, hi = 1, max(usable)  # n_blocks(lo) >= 10 unless the data are tiny
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if n_blocks(mid) >= min_blocks:
            lo = mid
        else:
            hi = mid - 1
    return max(lo, _BLOCK_SPANS * max(span, 1))


def _block_bounds(offsets: tuple[int, ...], block_length: int) -> np.ndarray:
    """First frame of every block: each trajectory of ``n`` frames is cut like
    ``np.array_split(frames, max(1, n // block_length))``, so no block is
    shorter than ``block_length`` unless its trajectory is."""
    bounds = []
    for a, b in zip(offsets[:-1], offsets[1:]):
        k = max(1, (b - a) // block_length)
        sizes = np.full(k, (b - a) // k, dtype=np.int64)
        sizes[: (b - a) % k] += 1
        bounds.append(a + np.cumsum(sizes) - sizes)
    return np.concatenate(bounds)


def _interleaved_choice(n_units: int, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean ``(n_units,)``: evenly spaced units for validation, about ``val_fraction`` of them.

    Unit ``j`` is chosen when a multiple of 1 falls in ``(j f + v, (j + 1) f + v]``
    (``f = val_fraction``, phase ``v`` in [0, 1) drawn with ``seed``): every
    ``1/f``-th unit for ``f = 1/k``, and at least one unit on each side.
    """
    v = np.random.default_rng(seed).random()
    edges = np.floor(np.arange(n_units + 1) * val_fraction + v)
    chosen = np.diff(edges) > 0
    if not chosen.any():
        chosen[n_units // 2] = True
    if chosen.all():
        chosen[0] = False
    return chosen


def _lag_frames(lag: TimeLike, frame_interval_ps: float | None) -> int:
    if frame_interval_ps is not None:
        return lag_to_frames(lag, frame_interval_ps)
    try:
        return lag_to_frames(lag, -1.0)  # a lag in frames does not need the interval
    except LssError:
        try:
            parse_time_ps(lag)
        except LssError:
            raise
        raise LssError(f"lag {lag!r} is a time: give frame_interval_ps= for array trajectories") from None


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    if seed is not None and generator is not None:
        raise LssError("give either seed= or generator=, not both")
    if seed is not None:
        return torch.Generator().manual_seed(int(seed))
    return generator


# --------------------------------------------------------------------------
# normalisation


class Normalizer:
    """Per-feature standardisation ``(x - mean) / std``.

    Statistics are computed in float64 (population std, ``ddof=0``) and the std
    is floored at ``min_std`` so constant features do not divide by zero.

    Parameters
    ----------
    mean, std
        Statistics of an already fitted normaliser (else call :meth:`fit`).
    min_std
        Lower bound of ``std``.
    feature_names
        Names of the features, checked against a dataset's when applied.
    """

    def __init__(
        self,
        mean: Iterable[float] | None = None,
        std: Iterable[float] | None = None,
        *,
        min_std: float = 1e-6,
        feature_names: Iterable[str] | None = None,
    ):
        if (mean is None) != (std is None):
            raise LssError("give both mean and std, or neither")
        self.min_std = float(min_std)
        self.feature_names = None if feature_names is None else [str(n) for n in feature_names]
        self.n_frames = 0
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        if mean is not None:
            self._set(np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64))
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _set(self, mean: np.ndarray, std: np.ndarray) -> None:
        if mean.ndim != 1 or mean.shape != std.shape:
            raise LssError(f"mean and std must be 1-D of equal length, got {mean.shape} and {std.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise NonFiniteError("normaliser statistics contain NaN or Inf")
        if self.feature_names is not None and len(self.feature_names) != len(mean):
            raise LssError(f"{len(self.feature_names)} feature names for {len(mean)} features")
        self.mean, self.std = mean, np.maximum(std, self.min_std)
        self._cache = {}

    @property
    def fitted(self) -> bool:
        """Whether the statistics are set."""
        return self.mean is not None

    @property
    def n_features(self) -> int | None:
        return None if self.mean is None else len(self.mean)

    def fit(self, data: "TimeLaggedDataset | SequenceDataset | np.ndarray | torch.Tensor") -> "Normalizer":
        """Compute mean and std per feature; returns ``self``.

        Parameters
        ----------
        data
            A dataset (statistics over the frames its pairs or windows use -
            for the training view of a split, the training frames only; a
            normaliser already applied to it is ignored), or an array
            ``(n_frames, n_features)``.
        """
        if isinstance(data, _WindowDataset):
            if data.is_labels:
                raise LssError("cannot normalise integer labels")
            frames, mask, names = data.frames, data.frame_mask(), data.feature_names
        else:
            frames = data if isinstance(data, torch.Tensor) else np.asarray(data)
            mask, names = None, None
            if frames.ndim != 2:
                raise LssError(f"can only fit (n_frames, n_features) data, got shape {tuple(frames.shape)}")
        # Chan et al.'s pairwise update of (count, mean, M2), chunk by chunk, in float64
        count, mean, m2 = 0, np.zeros(frames.shape[1]), np.zeros(frames.shape[1])
        for a in range(0, frames.shape[0], _LOAD_CHUNK):
            chunk = frames[a : a + _LOAD_CHUNK]
            if mask is not None:
                chunk = chunk[mask[a : a + _LOAD_CHUNK]]
            if not len(chunk):
                continue
            if isinstance(chunk, torch.Tensor):
                x = chunk.detach().to("cpu", torch.float64).numpy()
            else:
                x = np.asarray(chunk, dtype=np.float64)
            n_b, mean_b = len(x), x.mean(axis=0)
            m2_b = ((x - mean_b) ** 2).sum(axis=0)
            delta, total = mean_b - mean, count + n_b
            mean = mean + delta * (n_b / total)
            m2 = m2 + m2_b + delta**2 * (count * n_b / total)
            count = total
        if count == 0:
            raise LssError("no frames to fit the normaliser to")
        if names is not None:
            self.feature_names = list(names)
        elif self.feature_names is not None and len(self.feature_names) != len(mean):
            self.feature_names = None
        self._set(mean, np.sqrt(m2 / count))
        self.n_frames = count
        return self

    def _check_fitted(self) -> None:
        if self.mean is None:
            raise LssError("the normaliser is not fitted; call fit() first")

    def _tensors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = x.dtype if x.is_floating_point() else torch.float64
        key = (dtype, x.device)
        if key not in self._cache:
            self._cache[key] = (
                torch.as_tensor(self.mean, dtype=dtype, device=x.device),
                torch.as_tensor(self.std, dtype=dtype, device=x.device),
            )
        return self._cache[key]

    def transform(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """``(x - mean) / std`` over the last axis; torch in, torch out (same
        dtype and device), numpy in, numpy out (float64 for integer input)."""
        self._check_fitted()
        if isinstance(x, torch.Tensor):
            mean, std = self._tensors(x)
            return (x - mean) / std
        x = np.asarray(x)
        out = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
        return ((x - self.mean) / self.std).astype(out, copy=False)

    def inverse_transform(self, z: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """``z * std + mean``: undo :meth:`transform`."""
        self._check_fitted()
        if isinstance(z, torch.Tensor):
            mean, std = self._tensors(z)
            return z * std + mean
        z = np.asarray(z)
        out = z.dtype if np.issubdtype(z.dtype, np.floating) else np.float64
        return (z * self.std + self.mean).astype(out, copy=False)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (lists of floats)."""
        self._check_fitted()
        return {
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "min_std": self.min_std,
            "feature_names": self.feature_names,
            "n_frames": int(self.n_frames),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "Normalizer":
        """Rebuild a normaliser from :meth:`state_dict`'s output."""
        if not isinstance(state, dict) or "mean" not in state or "std" not in state:
            raise LssError("not a normaliser state: expected a dict with 'mean' and 'std'")
        norm = cls(
            state["mean"],
            state["std"],
            min_std=state.get("min_std", 1e-6),
            feature_names=state.get("feature_names"),
        )
        norm.n_frames = int(state.get("n_frames", 0))
        return norm

    def __repr__(self) -> str:
        if self.mean is None:
            return "Normalizer(not fitted)"
        return f"Normalizer({len(self.mean)} features, fitted on {self.n_frames} frames)"


# --------------------------------------------------------------------------
# datasets


class _WindowDataset:
    """Items that start at ``starts`` and reach ``span`` frames further, within
    one trajectory; shared machinery of pairs and sequences."""

    _frames: _Frames
    _starts: torch.Tensor
    _span: int
    normalizer: Normalizer | None

    def _setup(self, frames: _Frames, span: int, stride: int, normalizer: Normalizer | None, what: str) -> None:
        self._frames, self._span = frames, span
        starts = _window_starts(frames.offsets, span, stride)
        if not len(starts):
            longest = max(b - a for a, b in zip(frames.offsets[:-1], frames.offsets[1:]))
            raise LssError(f"{what} is longer than every trajectory (the longest has {longest} frames)")
        self._starts = torch.from_numpy(starts).to(frames.data.device)
        self.normalizer = None
        if normalizer is not None:
            self._apply(normalizer)

    # -- metadata ------------------------------------------------------------
    @property
    def frames(self) -> torch.Tensor:
        """All frames, concatenated and un-normalised: ``(n_frames, n_features)`` (labels: ``(n_frames,)``)."""
        return self._frames.data

    @property
    def offsets(self) -> tuple[int, ...]:
        """Trajectory ``k`` holds ``frames[offsets[k]:offsets[k+1]]``."""
        return self._frames.offsets

    @property
    def n_trajectories(self) -> int:
        return len(self._frames.offsets) - 1

    @property
    def n_frames(self) -> int:
        """Frames of all trajectories (not only those this view uses)."""
        return self._frames.offsets[-1]

    @property
    def n_features(self) -> int | None:
        """Features per frame (``None`` for labels)."""
        return None if self._frames.labels else self._frames.data.shape[1]

    @property
    def feature_names(self) -> list[str] | None:
        """From the stores; ``None`` for arrays."""
        names = self._frames.feature_names
        return None if names is None else list(names)

    @property
    def frame_interval_ps(self) -> float | None:
        return self._frames.frame_interval_ps

    @property
    def is_labels(self) -> bool:
        """Whether the frames are integer labels rather than features."""
        return self._frames.labels

    @property
    def dtype(self) -> torch.dtype:
        return self._frames.data.dtype

    @property
    def device(self) -> torch.device:
        return self._frames.data.device

    def __len__(self) -> int:
        return len(self._starts)

    def trajectory_of(self, idx: Index) -> torch.Tensor:
        """Trajectory number of items ``idx``."""
        offsets = torch.tensor(self._frames.offsets[1:], device=self._starts.device)
        return torch.searchsorted(offsets, self._starts[self._index(idx)], right=True)

    # -- views ---------------------------------------------------------------
    def _view(self: _D, starts: torch.Tensor) -> _D:
        view = copy.copy(self)
        view._starts = starts
        return view

    def _apply(self, normalizer: Normalizer) -> None:
        if self._frames.labels:
            raise LssError("cannot normalise integer labels")
        if not normalizer.fitted:
            raise LssError("the normaliser is not fitted; call fit() first")
        if normalizer.n_features != self.n_features:
            raise LssError(f"the normaliser has {normalizer.n_features} features, the data {self.n_features}")
        names = self._frames.feature_names
        if names is not None and normalizer.feature_names is not None and list(names) != normalizer.feature_names:
            raise LssError("the normaliser was fitted to other features (feature names differ)")
        self.normalizer = normalizer

    def with_normalizer(self: _D, normalizer: Normalizer | None) -> _D:
        """A view whose items are normalised by ``normalizer`` (``None``: raw).

        The frame tensor is shared, not copied; the transform is applied to
        each gathered batch.
        """
        view = copy.copy(self)
        view.normalizer = None
        if normalizer is not None:
            view._apply(normalizer)
        return view

    def split(
        self: _D,
        val_fraction: float = 0.2,
        *,
        by: str = "blocks",
        block_length: int | None = None,
        seed: int = 0,
    ) -> tuple[_D, _D]:
        """Split into ``(train, val)`` views that share the frame tensor.

        Parameters
        ----------
        val_fraction
            Wanted fraction of items in the validation set, in (0, 1); the
            split takes whole blocks (or trajectories).
        by
            ``"blocks"``: each trajectory of ``n`` frames is cut into
            ``max(1, n // block_length)`` contiguous blocks of nearly equal
            length (as ``np.array_split``), and an item belongs to a set only
            if all its frames lie in one block of that set - items straddling
            a block boundary are dropped, so no frame of a validation item is
            in a training item.  Blocks are drawn at random (the prefix of a
            random order whose item count comes closest to ``val_fraction``),
            which can leave a rare state out of one set.
            ``"interleaved"``: blocks as for ``"blocks"`` (by default ten
            times as many), the validation blocks evenly spaced: every
            ``1/val_fraction``-th block in time order, counting on across
            trajectories (every 5th for 0.2), so validation samples the whole
            of every trajectory and every state that it visits, even a rare
            one visited once.  Frames on either side of a boundary between a
            training and a validation block are correlated (over the slowest
            relaxation time), so the validation score checks the fit on unseen
            frames of the same transitions, and early stopping is less strict
            than with random blocks (measured on the double-well VAMPNet
            acceptance: its slowest timescale came out lower); the demo uses
            it so that its one slow process is in both parts.
            ``"trajectories"``: whole trajectories are assigned at random (at
            least two trajectories are needed).
        block_length
            In frames.  Default: the longest length that gives at least 10
            blocks (interleaved: 100) over all trajectories, but no shorter
            than 10 x the lag (10 x the window span for sequences), so at most
            a tenth of the items straddle a boundary and are dropped; on short
            data the latter wins and there are fewer blocks.
        seed
            Seed of the assignment (interleaved: the phase of the spacing).

        Raises
        ------
        LssError
            On a bad fraction or mode, or fewer than two blocks/trajectories
            that hold items.
        """
        if not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
            raise LssError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
        offsets = self._frames.offsets
        starts = self._starts.cpu().numpy()
        if by in ("blocks", "interleaved"):
            if block_length is None:
                lengths = [b - a for a, b in zip(offsets[:-1], offsets[1:])]
                block_length = _default_block_length(
                    lengths, self._span, _MIN_INTERLEAVED_BLOCKS if by == "interleaved" else _MIN_BLOCKS)
            block_length = positive_int(block_length, "block_length")
            if block_length <= self._span:
                raise LssError(f"block_length {block_length} must exceed the {self._span}-frame span of an item")
            bounds = _block_bounds(offsets, block_length)
            unit_name = f"blocks of {block_length} frames"
        elif by == "trajectories":
            bounds = np.asarray(offsets[:-1], dtype=np.int64)
            unit_name = "trajectories"
        else:
            raise LssError(f"split by must be 'blocks', 'interleaved' or 'trajectories', got {by!r}")
        unit = np.searchsorted(bounds, starts, side="right") - 1
        keep = unit == np.searchsorted(bounds, starts + self._span, side="right") - 1
        weights = np.bincount(unit[keep], minlength=len(bounds))
        candidates = np.flatnonzero(weights)
        if len(candidates) < 2:
            hint = "; use by='blocks'" if by == "trajectories" else "; give a shorter block_length"
            raise LssError(f"cannot split: only {len(candidates)} of the {unit_name} hold items{hint}")
        is_val = np.zeros(len(bounds), dtype=bool)
        if by == "interleaved":  # blocks are in time order, trajectory after trajectory
            is_val[candidates] = _interleaved_choice(len(candidates), val_fraction, seed)
        else:
            order = np.random.default_rng(seed).permutation(candidates)
            cumulative = np.cumsum(weights[order])[:-1]  # at least one unit on each side
            n_val = int(np.argmin(np.abs(cumulative - val_fraction * weights.sum()))) + 1
            is_val[order[:n_val]] = True
        val = keep & is_val[unit]
        train = keep & ~is_val[unit]
        device = self._starts.device
        return (
            self._view(torch.from_numpy(starts[train]).to(device)),
            self._view(torch.from_numpy(starts[val]).to(device)),
        )

    # -- items -----------------------------------------------------------------
    def frame_mask(self) -> torch.Tensor:
        """Boolean ``(n_frames,)``: the frames that some item of this view uses."""
        raise NotImplementedError

    def _index(self, idx: Index) -> torch.Tensor | slice | int:
        if isinstance(idx, np.ndarray):
            idx = torch.from_numpy(idx)
        if isinstance(idx, torch.Tensor):
            idx = idx.to(self._starts.device)
        return idx

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.normalizer is None else self.normalizer.transform(x)

    def _gather(self, starts: torch.Tensor):
        raise NotImplementedError

    def __getitem__(self, idx: Index):
        return self._gather(self._starts[self._index(idx)])

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator:
        """Yield one epoch of batches, gathered by tensor indexing.

        Every item appears exactly once per epoch.  A batch of a
        :class:`TimeLaggedDataset` is ``(x0, xt)``, each ``(batch, n_features)``;
        of a :class:`SequenceDataset` it is ``(batch, length, n_features)``
        (labels: ``(batch, length)``).  Batches are normalised if the dataset
        has a normaliser.

        Parameters
        ----------
        batch_size
            Items per batch (the last one may be smaller unless ``drop_last``).
        shuffle
            Random order; else the order of the starts.
        seed, generator
            Source of the permutation, drawn on the CPU: a seed gives the same
            batches every time; a CPU ``torch.Generator`` advances, so
            successive epochs differ; neither uses torch's global RNG.
        drop_last
            Drop the last, incomplete batch.
        """
        batch_size = positive_int(batch_size, "batch_size")
        gen = _generator(seed, generator)
        starts = self._starts
        if shuffle:
            perm = torch.randperm(len(starts), generator=gen)
            starts = starts[perm.to(starts.device)]
        stop = len(starts) - len(starts) % batch_size if drop_last else len(starts)
        return self._iterate(starts, batch_size, stop)

    def _iterate(self, starts: torch.Tensor, batch_size: int, stop: int) -> Iterator:
        for a in range(0, stop, batch_size):
            yield self._gather(starts[a : min(a + batch_size, stop)])


class TimeLaggedDataset(_WindowDataset):
    """Time-lagged pairs ``(x_i, x_{i+lag})`` that never cross a trajectory boundary.

    Parameters
    ----------
    trajectories
        Stores, ``(n_frames, n_features)`` arrays or ``(n_frames,)`` integer
        label arrays (a single one need not be in a list).  All must have the
        same features and frame interval.
    lag
        Frames (``5``, ``"5frames"``) or a time (``"10ps"``, a Quantity) that
        is a whole multiple of the frame interval.
    frame_interval_ps
        Time between frames of arrays (stores carry their own; if given with
        stores it must agree).  Needed only for a lag given as a time.
    dtype, device
        Of the frame tensor; ``dtype=None`` is float32 for features and int64
        for labels.
    normalizer
        A fitted :class:`Normalizer` to apply to the items.

    Raises
    ------
    LssError
        Empty input, mismatched features or frame intervals, a lag that is not
        a whole number of frames, or a lag longer than every trajectory.
    NonFiniteError
        NaN or Inf in the features.
    """

    def __init__(
        self,
        trajectories: Trajectory | Iterable[Trajectory],
        lag: TimeLike,
        *,
        frame_interval_ps: float | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        normalizer: Normalizer | None = None,
    ):
        frames = _load(trajectories, frame_interval_ps, dtype, device)
        self.lag = _lag_frames(lag, frames.frame_interval_ps)
        self._setup(frames, self.lag, 1, normalizer, f"lag of {self.lag} frames")

    @property
    def lag_ps(self) -> float | None:
        """The lag in ps (``None`` without a frame interval)."""
        dt = self._frames.frame_interval_ps
        return None if dt is None else self.lag * dt

    @property
    def pair_indices(self) -> torch.Tensor:
        """int64 ``(n_pairs,)``: pair ``k`` is ``(frames[i], frames[i + lag])`` with ``i = pair_indices[k]``."""
        return self._starts

    def x0(self, idx: Index) -> torch.Tensor:
        """Earlier frames of pairs ``idx``."""
        return self._normalise(self._frames.data[self._starts[self._index(idx)]])

    def xt(self, idx: Index) -> torch.Tensor:
        """Later frames (``lag`` frames on) of pairs ``idx``."""
        return self._normalise(self._frames.data[self._starts[self._index(idx)] + self.lag])

    def _gather(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        data = self._frames.data
        if starts.ndim == 0:
            return self._normalise(data[starts]), self._normalise(data[starts + self.lag])
        return (
            self._normalise(data.index_select(0, starts)),
            self._normalise(data.index_select(0, starts + self.lag)),
        )

    def frame_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.n_frames, dtype=torch.bool, device=self.device)
        mask[self._starts] = True
        mask[self._starts + self.lag] = True
        return mask

    def _iterate(self, starts: torch.Tensor, batch_size: int, stop: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        data, later = self._frames.data, starts + self.lag
        for a in range(0, stop, batch_size):
            b = min(a + batch_size, stop)
            yield (
                self._normalise(data.index_select(0, starts[a:b])),
                self._normalise(data.index_select(0, later[a:b])),
            )

    def __repr__(self) -> str:
        lag = f"{self.lag} frames" + ("" if self.lag_ps is None else f" ({self.lag_ps:g} ps)")
        what = "labels" if self.is_labels else f"{self.n_features} features"
        return f"TimeLaggedDataset({len(self)} pairs, lag {lag}, {self.n_trajectories} trajectories, {what})"


class SequenceDataset(_WindowDataset):
    """Windows of ``length`` consecutive frames inside one trajectory.

    Items are ``(length, n_features)`` feature windows, or ``(length,)``
    windows of integer labels when the trajectories are 1-D integer arrays.

    Parameters
    ----------
    trajectories
        As for :class:`TimeLaggedDataset`, including ``(n_frames,)`` int labels.
    length
        Frames per window.
    stride
        Frames between the starts of successive windows of a trajectory.
    frame_interval_ps, dtype, device, normalizer
        As for :class:`TimeLaggedDataset`.

    Raises
    ------
    LssError
        Empty input, mismatched trajectories, or a window longer than every
        trajectory.
    """

    def __init__(
        self,
        trajectories: Trajectory | Iterable[Trajectory],
        length: int,
        *,
        stride: int = 1,
        frame_interval_ps: float | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        normalizer: Normalizer | None = None,
    ):
        self.length = positive_int(length, "length")
        self.stride = positive_int(stride, "stride")
        frames = _load(trajectories, frame_interval_ps, dtype, device)
        self._setup(frames, self.length - 1, self.stride, normalizer, f"a window of {self.length} frames")
        self._arange = torch.arange(self.length, device=self.device)

    @property
    def window_starts(self) -> torch.Tensor:
        """int64 ``(n_windows,)``: window ``k`` is ``frames[s : s + length]`` with ``s = window_starts[k]``."""
        return self._starts

    def windows(self, idx: Index) -> torch.Tensor:
        """Windows ``idx``: ``(len(idx), length, n_features)`` or ``(len(idx), length)``."""
        return self._gather(self._starts[self._index(idx)])

    def _gather(self, starts: torch.Tensor) -> torch.Tensor:
        index = starts.unsqueeze(-1) + self._arange  # (..., length)
        data = self._frames.data
        out = data.index_select(0, index.reshape(-1)).reshape(index.shape + data.shape[1:])
        return self._normalise(out)

    def frame_mask(self) -> torch.Tensor:
        cover = torch.zeros(self.n_frames + 1, dtype=torch.int64, device=self.device)
        ones = torch.ones_like(self._starts)
        cover.index_add_(0, self._starts, ones)
        cover.index_add_(0, self._starts + self.length, -ones)
        return cover.cumsum(0)[:-1] > 0

    def __repr__(self) -> str:
        what = "labels" if self.is_labels else f"{self.n_features} features"
        return (
            f"SequenceDataset({len(self)} windows of {self.length} frames, stride {self.stride}, "
            f"{self.n_trajectories} trajectories, {what})"
        )
