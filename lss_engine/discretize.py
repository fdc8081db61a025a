r"""Discretisation of low-dimensional coordinates into integer labels.

A language model of molecular dynamics (LSTM paper, Tsai, Kuo & Tiwary 2020,
Nat. Commun. 11, 5115) reads a trajectory as a sequence of characters: each
frame's order parameter :math:`\xi(t)` is replaced by the label of its
*representative value*.  :class:`Discretizer` does that mapping and its
inverse (label → representative value, :meth:`Discretizer.decode`) in three
flavours:

``"bins"`` (:meth:`Discretizer.uniform`)
    ``n_labels`` equal-width bins over a stored range :math:`[a, b)` of a 1-D
    coordinate (the paper's equally spaced representative values): with
    :math:`w = (b - a)/N`,

    .. math:: \ell(\xi) = \min\bigl(N - 1, \max(0, \lfloor (\xi - a)/w \rfloor)\bigr),

    so values outside the range fall into the first or the last bin; the
    representative value of label :math:`\ell` is the bin centre
    :math:`a + (\ell + \tfrac12)w`.
``"centers"`` (:meth:`Discretizer.from_centers`, :meth:`Discretizer.kmeans`)
    Nearest centre in Euclidean distance,
    :math:`\ell(\xi) = \arg\min_k \lVert \xi - c_k \rVert` (ties: lowest
    index), for 1-D or low-D coordinates; the centres are given (e.g. the
    minima of a model potential, as the authors' code does for the four-state
    potential) or fitted by k-means (:func:`lss_engine.kinetics.kmeans`).

Coring of short visits
----------------------
With ``min_visit = m > 1`` the raw labels are cored: a *visit* is a maximal
run of frames with the same raw label, and every visit shorter than ``m``
frames is relabelled to the label of the most recent visit that is at least
``m`` frames long (runs are judged on the raw labels, before any merging).
Visits of the trajectory before its first long visit have no such
predecessor and keep their raw labels.  This removes recrossings and the
transient passages of a projection through the bins of other states (the
authors' code does the same job with ``Rm_peaks_steps``).  ``min_visit = 1``
(the default) leaves the labels untouched.  Coring is applied per trajectory.

The configuration (:meth:`Discretizer.config` / :meth:`Discretizer.from_config`)
is plain JSON, so a discretiser travels with a model bundle's metadata.
"""
from __future__ import annotations

import math
from typing import Any, Sequence, Union

import numpy as np

from .errors import LssError

__all__ = ["Discretizer", "core_short_visits"]

ArrayOrList = Union[np.ndarray, Sequence[np.ndarray]]
_KINDS = ("bins", "centers")


def core_short_visits(labels: np.ndarray, min_visit: int) -> np.ndarray:
    """Relabel visits shorter than ``min_visit`` frames to the previous long visit's label.

    Parameters
    ----------
    labels
        ``(n_frames,)`` integer labels of one trajectory.
    min_visit
        Minimum length (frames) of a visit that is kept; ``1`` keeps all.

    Returns
    -------
    ndarray of int64, shape (n_frames,)
        Cored labels (see the module docstring; leading short visits are kept).

    Examples
    --------
    >>> core_short_visits(np.array([0, 0, 0, 1, 0, 0, 0, 2, 2, 1, 1, 1]), 3)
    array([0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    """
    lab = np.asarray(labels)
    if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
        raise LssError(f"labels must be a 1-D integer array, got shape {lab.shape} and dtype {lab.dtype}")
    m = _check_min_visit(min_visit)
    lab = lab.astype(np.int64, copy=True)
    if m == 1 or lab.size == 0:
        return lab
    starts = np.concatenate([[0], np.flatnonzero(np.diff(lab)) + 1])
    lengths = np.diff(np.concatenate([starts, [lab.size]]))
    values = lab[starts]
    long_run = lengths >= m
    # index of the most recent long run at or before each run (-1: none yet)
    last_long = np.where(long_run, np.arange(len(starts)), -1)
    np.maximum.accumulate(last_long, out=last_long)
    new_values = np.where(last_long >= 0, values[np.maximum(last_long, 0)], values)
    return np.repeat(new_values, lengths)


def _check_min_visit(min_visit: Any) -> int:
    if isinstance(min_visit, bool) or not isinstance(min_visit, (int, np.integer)) or min_visit < 1:
        raise LssError(f"min_visit must be a positive integer (frames), got {min_visit!r}")
    return int(min_visit)


def _check_n_labels(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise LssError(f"n_labels must be a positive integer, got {n!r}")
    return int(n)


class Discretizer:
    r"""Maps coordinates to integer labels ``0 .. n_labels-1`` and labels back to representative values.

    Build one with :meth:`uniform`, :meth:`from_centers` or :meth:`kmeans`
    (or :meth:`from_config`); see the module docstring for the rules.

    Parameters
    ----------
    kind
        ``"bins"`` or ``"centers"``.
    range
        ``(lo, hi)`` of the bins (``kind="bins"``).
    n_labels
        Number of bins (``kind="bins"``).
    centers
        ``(n_labels,)`` or ``(n_labels, dim)`` centres (``kind="centers"``).
    min_visit
        Coring: visits shorter than this many frames take the previous long
        visit's label (``1``: no coring).
    """

    def __init__(self, kind: str, *, range: tuple[float, float] | None = None, n_labels: int | None = None,
                 centers: Any = None, min_visit: int = 1):
        if kind not in _KINDS:
            raise LssError(f"discretiser kind must be one of {_KINDS}, got {kind!r}")
        self.kind = kind
        self.min_visit = _check_min_visit(min_visit)
        if kind == "bins":
            if range is None or n_labels is None or centers is not None:
                raise LssError("a 'bins' discretiser takes range=(lo, hi) and n_labels (no centers)")
            try:
                lo, hi = (float(v) for v in range)
            except (TypeError, ValueError):
                raise LssError(f"range must be two numbers (lo, hi), got {range!r}") from None
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise LssError(f"range must be finite with lo < hi, got {range!r}")
            self.range: tuple[float, float] | None = (lo, hi)
            self.n_labels = _check_n_labels(n_labels)
            width = (hi - lo) / self.n_labels
            self._centers = lo + (np.arange(self.n_labels) + 0.5) * width
        else:
            if centers is None or range is not None:
                raise LssError("a 'centers' discretiser takes centers (no range)")
            c = np.asarray(centers, dtype=np.float64)
            if c.ndim not in (1, 2) or c.shape[0] < 1 or not np.isfinite(c).all():
                raise LssError(f"centers must be a finite (n,) or (n, dim) array, got shape {c.shape}")
            if n_labels is not None and _check_n_labels(n_labels) != c.shape[0]:
                raise LssError(f"n_labels={n_labels} but {c.shape[0]} centers")
            self.range = None
            self.n_labels = int(c.shape[0])
            self._centers = c.copy()

    # -- constructors ------------------------------------------------------------------
    @classmethod
    def uniform(cls, n_labels: int, *, range: tuple[float, float] | None = None, data: ArrayOrList | None = None,
                min_visit: int = 1) -> "Discretizer":
        """``n_labels`` equal-width bins over ``range``, or over ``[min, max]`` of 1-D ``data``.

        With ``data`` the upper edge is nudged up by ``1e-9`` of the span so the
        maximum falls into the last bin rather than onto its edge.
        """
        if (range is None) == (data is None):
            raise LssError("give exactly one of range=(lo, hi) and data=")
        if data is not None:
            x = np.concatenate([_as_1d(t) for t in _as_list(data)])
            if x.size == 0 or not np.isfinite(x).all():
                raise LssError("data must be non-empty and finite")
            lo, hi = float(x.min()), float(x.max())
            if hi <= lo:
                raise LssError("data are constant; give range=(lo, hi)")
            range = (lo, hi + 1e-9 * (hi - lo))
        return cls("bins", range=range, n_labels=n_labels, min_visit=min_visit)

    @classmethod
    def from_centers(cls, centers: Any, *, min_visit: int = 1) -> "Discretizer":
        """Nearest of the given centres ``(n,)`` (1-D) or ``(n, dim)``."""
        return cls("centers", centers=centers, min_visit=min_visit)

    @classmethod
    def kmeans(cls, data: ArrayOrList, n_labels: int, *, seed: int = 0, min_visit: int = 1,
               max_samples: int = 100_000) -> "Discretizer":
        """Centres from k-means (:func:`lss_engine.kinetics.kmeans`, k-means++ seeding) on ``data``.

        ``data`` is one ``(n_frames,)``/``(n_frames, dim)`` array or a list of
        them.  Centres are sorted (lexicographically by coordinate) so the
        labels do not depend on the seeding order.
        """
        from .kinetics import kmeans

        parts = [_as_2d(t) for t in _as_list(data)]
        dims = {p.shape[1] for p in parts}
        if len(dims) != 1:
            raise LssError(f"data trajectories differ in dimension: {sorted(dims)}")
        model = kmeans(parts, _check_n_labels(n_labels), seed=seed, max_samples=max_samples)
        c = model.centers
        c = c[np.lexsort(c.T[::-1])]
        one_d = all(np.asarray(t).ndim == 1 for t in _as_list(data))
        return cls("centers", centers=c[:, 0] if one_d else c, min_visit=min_visit)

    # -- mapping -------------------------------------------------------------------------
    @property
    def centers(self) -> np.ndarray:
        """Representative values: ``(n_labels,)`` (1-D) or ``(n_labels, dim)``."""
        return self._centers.copy()

    @property
    def dim(self) -> int:
        """Dimension of the coordinate (1 for bins)."""
        return 1 if self._centers.ndim == 1 else int(self._centers.shape[1])

    def raw_labels(self, x: np.ndarray) -> np.ndarray:
        """Labels of one trajectory's frames before coring (``int64``, ``(n_frames,)``)."""
        if self.kind == "bins":
            v = _as_1d(x)
            lo, hi = self.range
            width = (hi - lo) / self.n_labels
            with np.errstate(invalid="ignore"):
                lab = np.floor((v - lo) / width)
            return np.clip(lab, 0, self.n_labels - 1).astype(np.int64)
        pts = _as_2d(x)
        c = self._centers.reshape(self.n_labels, -1)
        if pts.shape[1] != c.shape[1]:
            raise LssError(f"coordinates have dimension {pts.shape[1]}, the centres {c.shape[1]}")
        out = np.empty(len(pts), dtype=np.int64)
        for a in np.arange(0, len(pts), 65536):
            d2 = ((pts[a:a + 65536, None, :] - c[None, :, :]) ** 2).sum(-1)
            out[a:a + 65536] = np.argmin(d2, axis=1)
        return out

    def to_labels(self, x: ArrayOrList) -> Union[np.ndarray, list[np.ndarray]]:
        """Cored labels of one trajectory (an array) or of each trajectory of a list.

        Parameters
        ----------
        x
            ``(n_frames,)`` or ``(n_frames, dim)`` coordinates, or a list of them.

        Returns
        -------
        ndarray of int64 ``(n_frames,)``, or a list of them for a list input.
        """
        if isinstance(x, (list, tuple)):
            return [core_short_visits(self.raw_labels(t), self.min_visit) for t in x]
        return core_short_visits(self.raw_labels(x), self.min_visit)

    def decode(self, labels: np.ndarray) -> np.ndarray:
        """Representative values of ``labels`` (any shape): ``centers[labels]``."""
        lab = np.asarray(labels)
        if not np.issubdtype(lab.dtype, np.integer):
            raise LssError(f"labels must be integers, got dtype {lab.dtype}")
        if lab.size and (lab.min() < 0 or lab.max() >= self.n_labels):
            raise LssError(f"labels must lie in 0..{self.n_labels - 1}, got {lab.min()}..{lab.max()}")
        return self._centers[lab]

    # -- configuration ---------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-serialisable description; :meth:`from_config` rebuilds an identical discretiser."""
        cfg: dict[str, Any] = {"kind": self.kind, "n_labels": self.n_labels, "min_visit": self.min_visit}
        if self.kind == "bins":
            cfg["range"] = [float(v) for v in self.range]
        else:
            cfg["centers"] = self._centers.tolist()
        return cfg

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Discretizer":
        """Inverse of :meth:`config`."""
        if not isinstance(config, dict) or "kind" not in config:
            raise LssError(f"a discretiser config is a dict with 'kind', got {config!r}")
        cfg = dict(config)
        kind = cfg.pop("kind")
        try:
            if kind == "bins":
                return cls("bins", range=tuple(cfg.pop("range")), n_labels=cfg.pop("n_labels"),
                           min_visit=cfg.pop("min_visit", 1), **_no_extra(cfg))
            return cls(kind, centers=cfg.pop("centers", None), n_labels=cfg.pop("n_labels", None),
                       min_visit=cfg.pop("min_visit", 1), **_no_extra(cfg))
        except (KeyError, TypeError) as exc:
            raise LssError(f"bad discretiser config: {exc}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Discretizer) and self.config() == other.config()

    def __repr__(self) -> str:
        where = f"range={self.range}" if self.kind == "bins" else f"dim={self.dim}"
        return f"Discretizer({self.kind!r}, n_labels={self.n_labels}, {where}, min_visit={self.min_visit})"


def _no_extra(cfg: dict) -> dict:
    if cfg:
        raise LssError(f"unknown discretiser config keys: {sorted(cfg)}")
    return {}


def _as_list(data: ArrayOrList) -> list:
    return list(data) if isinstance(data, (list, tuple)) else [data]


def _as_1d(x: Any) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64)
    if v.ndim == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if v.ndim != 1:
        raise LssError(f"expected a 1-D coordinate (n_frames,) or (n_frames, 1), got shape {v.shape}")
    return v


def _as_2d(x: Any) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2:
        raise LssError(f"expected coordinates (n_frames,) or (n_frames, dim), got shape {v.shape}")
    return v
