r"""Free-energy profiles (1-D and 2-D) in units of kT with block-averaged errors.

Estimator
---------
Samples from all trajectories (concatenated in order) are histogrammed, with
optional per-frame weights :math:`w_t` (e.g. reweighting factors).  The
probability density of bin :math:`b` with volume :math:`V_b` is

.. math:: p_b = \frac{\sum_{t: x_t ∈ b} w_t}{V_b \sum_{t: x_t ∈ \text{range}} w_t},
          \qquad F_b = -\ln p_b - \min_{b'} (-\ln p_{b'})

in kT (multiplied by ``kT`` for other units); bins without samples are NaN.
The additive constant puts the minimum at 0.

Errors (LSS paper, Sidky et al. 2020: "standard errors estimated by five-fold
block averaging"): the concatenated data are cut into ``n_blocks`` contiguous
blocks of equal length, each block gives its own normalised density
:math:`p_b^{(k)}`, and

.. math:: σ_{p_b} = \frac{\operatorname{std}_k(p_b^{(k)})}{\sqrt K}\ (\text{ddof}=1),
          \qquad σ_{F_b} = σ_{p_b} / p_b

(first-order propagation of the block error of :math:`p` to
:math:`F = -\ln p`; unlike the spread of per-block :math:`-\ln p_b^{(k)}` it
stays finite when a bin is empty in some block).  The uncertainty of the
additive constant is not included.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np

from ..errors import LssError
from ._util import Trajectories, as_trajectories, jsonify

__all__ = ["FreeEnergyProfile", "free_energy_1d", "free_energy_2d", "free_energy", "fes_rmse"]


@dataclass
class FreeEnergyProfile:
    """A 1-D or 2-D free-energy profile.

    Attributes
    ----------
    edges
        Bin edges, one array per dimension.
    free_energy
        ``F`` in units of ``kT`` (bins shape; NaN where unpopulated; minimum 0).
    errors
        Block standard errors of ``F`` (same shape; NaN where unpopulated).
    density
        Normalised probability density (integrates to 1 over the range).
    counts
        Number of frames (unweighted) per bin.
    n_blocks
        Number of blocks behind ``errors``.
    kT
        Energy unit factor: ``F`` is ``-kT ln p`` (1.0 = units of kT).
    """

    edges: list[np.ndarray]
    free_energy: np.ndarray
    errors: np.ndarray
    density: np.ndarray
    counts: np.ndarray
    n_blocks: int = 5
    kT: float = 1.0

    @property
    def F(self) -> np.ndarray:
        """Alias of :attr:`free_energy`."""
        return self.free_energy

    @property
    def ndim(self) -> int:
        return len(self.edges)

    @property
    def centers(self) -> list[np.ndarray]:
        """Bin centres, one array per dimension."""
        return [0.5 * (e[1:] + e[:-1]) for e in self.edges]

    @property
    def populated(self) -> np.ndarray:
        """Boolean mask of bins with samples."""
        return np.isfinite(self.free_energy)

    def to_dict(self) -> dict:
        return jsonify({"ndim": self.ndim, "edges": self.edges, "centers": self.centers,
                        "free_energy": self.free_energy, "errors": self.errors,
                        "density": self.density, "counts": self.counts,
                        "n_blocks": self.n_blocks, "kT": self.kT})


def _densities(X: np.ndarray, W: np.ndarray, edges: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    h, _ = np.histogramdd(X, bins=edges, weights=W)
    n, _ = np.histogramdd(X, bins=edges)
    vol = np.ones(h.shape)
    for ax, e in enumerate(edges):
        shape = [1] * len(edges)
        shape[ax] = len(e) - 1
        vol = vol * np.diff(e).reshape(shape)
    total = h.sum()
    p = h / (vol * total) if total > 0 else np.full(h.shape, np.nan)
    return p, n


def free_energy(samples: Trajectories, bins: Any = 50, *, range: Sequence[tuple[float, float]] | None = None,
                weights: Trajectories | None = None, n_blocks: int = 5, kT: float = 1.0) -> FreeEnergyProfile:
    """Free-energy profile of ``(frames, d)`` samples (d = 1 or 2; see the module docstring).

    Parameters
    ----------
    samples
        One ``(frames,)`` / ``(frames, d)`` array or a list of them (trajectories).
    bins
        Number of bins (per dimension), a sequence of them, or edge arrays (as
        :func:`numpy.histogramdd`).
    range
        ``[(lo, hi)]`` per dimension; default: the data's extent.  Samples
        outside are ignored.
    weights
        Optional non-negative weight per frame, same layout as ``samples``.
    n_blocks
        Number of contiguous blocks for the standard errors (>= 2).
    kT
        Multiply ``-ln p`` by this (1.0: units of kT).
    """
    X = np.concatenate(as_trajectories(samples, dtype=float, ndim=2, name="samples"))
    d = X.shape[1]
    if d not in (1, 2):
        raise LssError(f"free-energy profiles are 1-D or 2-D, got {d} columns")
    if weights is None:
        W = np.ones(len(X))
    else:
        W = np.concatenate([np.ravel(w) for w in as_trajectories(weights, dtype=float, name="weights")])
        if W.shape != (len(X),):
            raise LssError(f"weights must have one value per frame ({len(X)}), got {W.shape}")
        if np.any(W < 0):
            raise LssError("weights must be non-negative")
    if n_blocks < 2:
        raise LssError(f"n_blocks must be >= 2 for block errors, got {n_blocks}")
    if len(X) < n_blocks:
        raise LssError(f"{len(X)} frames cannot be split into {n_blocks} blocks")
    _, edges = np.histogramdd(X, bins=bins, range=range)
    edges = [np.asarray(e, dtype=float) for e in edges]
    p, counts = _densities(X, W, edges)
    block_p = np.stack([_densities(X[idx], W[idx], edges)[0]
                        for idx in np.array_split(np.arange(len(X)), n_blocks)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sigma_p = np.nanstd(block_p, axis=0, ddof=1) / np.sqrt(n_blocks)
        populated = p > 0
        F = np.where(populated, -np.log(np.where(populated, p, 1.0)), np.nan)
        if np.any(populated):
            F = F - np.nanmin(F)
        err = np.where(populated, sigma_p / np.where(populated, p, 1.0), np.nan)
    return FreeEnergyProfile(edges, kT * F, kT * err, p, counts, int(n_blocks), float(kT))


def free_energy_1d(x: Trajectories, bins: Any = 50, *, range: tuple[float, float] | None = None,
                   weights: Trajectories | None = None, n_blocks: int = 5,
                   kT: float = 1.0) -> FreeEnergyProfile:
    r"""1-D free-energy profile :math:`F(x) = -\ln p(x)` (+const, min 0) in kT.

    ``x``: one ``(frames,)`` array or a list of them; ``bins``: a number or an
    array of edges (e.g. ``other.edges[0]`` to compare on the same bins).  See
    :func:`free_energy`.
    """
    xs = as_trajectories(x, dtype=float, name="x")
    for i, a in enumerate(xs):
        if a.ndim != 1:
            raise LssError(f"x[{i}] must be 1-D, got shape {a.shape}")
    if np.ndim(bins) == 1:  # bin edges
        bins = [np.asarray(bins, dtype=float)]
    return free_energy(xs, bins, range=None if range is None else [tuple(range)], weights=weights,
                       n_blocks=n_blocks, kT=kT)


def free_energy_2d(x: Trajectories, y: Trajectories, bins: Any = 50, *,
                   range: Sequence[tuple[float, float]] | None = None,
                   weights: Trajectories | None = None, n_blocks: int = 5,
                   kT: float = 1.0) -> FreeEnergyProfile:
    r"""2-D free-energy surface :math:`F(x, y) = -\ln p(x, y)` (+const, min 0) in kT.

    ``x`` and ``y``: matching ``(frames,)`` arrays or lists of them; the result's
    ``free_energy[i, j]`` belongs to ``x`` bin ``i`` and ``y`` bin ``j``.  See
    :func:`free_energy`.
    """
    xs = as_trajectories(x, dtype=float, name="x")
    ys = as_trajectories(y, dtype=float, name="y")
    if len(xs) != len(ys) or any(a.shape != b.shape or a.ndim != 1 for a, b in zip(xs, ys)):
        raise LssError("x and y must be matching 1-D arrays (or lists of them)")
    return free_energy([np.stack([a, b], axis=1) for a, b in zip(xs, ys)], bins, range=range,
                       weights=weights, n_blocks=n_blocks, kT=kT)


def fes_rmse(F_a: Union[np.ndarray, FreeEnergyProfile], F_b: Union[np.ndarray, FreeEnergyProfile],
             populated_mask: np.ndarray | None = None, *, return_offset: bool = False) -> Any:
    r"""Root-mean-square difference of two free-energy profiles after aligning their constants.

    Over the bins :math:`b ∈ M` in ``populated_mask`` where both profiles are
    finite, the offset minimising :math:`\sum_{b∈M} (F_a - F_b - c)^2` is
    :math:`c = \operatorname{mean}_M(F_a - F_b)` and

    .. math:: \text{RMSE} = \sqrt{\operatorname{mean}_M (F_a - F_b - c)^2}.

    Parameters
    ----------
    F_a, F_b
        Profiles on the same bins (arrays or :class:`FreeEnergyProfile`).
    populated_mask
        Bins to compare (default: all bins finite in both).
    return_offset
        Also return ``c``.

    Returns
    -------
    float, or (float, float) with ``return_offset``; NaN if no bin is shared.
    """
    a = np.asarray(F_a.free_energy if isinstance(F_a, FreeEnergyProfile) else F_a, dtype=float)
    b = np.asarray(F_b.free_energy if isinstance(F_b, FreeEnergyProfile) else F_b, dtype=float)
    if a.shape != b.shape:
        raise LssError(f"profiles have different shapes {a.shape} and {b.shape}")
    mask = np.isfinite(a) & np.isfinite(b)
    if populated_mask is not None:
        pm = np.asarray(populated_mask, dtype=bool)
        if pm.shape != a.shape:
            raise LssError(f"populated_mask has shape {pm.shape}, profiles {a.shape}")
        mask &= pm
    if not mask.any():
        return (float("nan"), float("nan")) if return_offset else float("nan")
    diff = a[mask] - b[mask]
    c = float(diff.mean())
    rmse = float(np.sqrt(np.mean((diff - c) ** 2)))
    return (rmse, c) if return_offset else rmse
