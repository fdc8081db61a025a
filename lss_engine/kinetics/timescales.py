r"""Implied timescales as a function of lag time, with the state assignment fixed.

For every lag :math:`τ` a transition matrix :math:`T(τ)` (discrete states,
:func:`~lss_engine.kinetics.msm.estimate_msm`) or a Koopman matrix
:math:`K(τ) = C_{00}^{-1}C_{0τ}` (soft memberships / features,
:func:`~lss_engine.kinetics.msm.koopman_from_features`) is estimated and

.. math:: t_i(τ) = -\frac{τ}{\ln λ_i(τ)},\qquad i = 1..k,

is reported (``inf`` for :math:`λ_i ≥ 1`, NaN for a real :math:`λ_i ≤ 0`, the
modulus for complex :math:`λ_i`: the package's one rule,
:func:`lss_engine._helpers.implied_timescales`) (the eigenvalue of largest modulus, λ₀ = 1 for memberships — the
stationary process — is dropped; continuous features should therefore contain
the constant function, as VAMPnet/SRV outputs with a constant column do).  A
Markovian model
has :math:`t_i` constant in :math:`τ` (VAMPnets, Mardt et al. 2018, Eq. 14).

Bootstrap errors resample, with replacement, whole trajectories if there are at
least 10, otherwise contiguous pieces of them (each trajectory cut into
``ceil(10 / n_trajs)`` pieces; pairs never span a cut).  The error is the
standard deviation of the bootstrap estimates; it is unreliable at lags close
to the piece length.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

from ..errors import LssError
from ._util import Trajectories, as_lag, as_trajectories, bootstrap_units, check_dt, jsonify
from .msm import estimate_msm, eigenvalues, koopman_from_features, timescales_from_eigenvalues

__all__ = ["ImpliedTimescales", "implied_timescales"]


@dataclass
class ImpliedTimescales:
    """Implied timescales vs lag time.

    Attributes
    ----------
    lags
        ``(n_lags,)`` lag times in frames.
    dt
        Frame interval in ps.
    timescales
        ``(n_lags, k)`` implied timescales in ps (NaN where the model at that
        lag has fewer than ``k + 1`` eigenvalues, or a non-physical one).
    errors
        ``(n_lags, k)`` bootstrap standard deviations in ps, or ``None``.
    kind
        ``"discrete"`` or ``"fuzzy"``.
    n_bootstrap
        Number of bootstrap samples (0: no errors).
    """

    lags: np.ndarray
    dt: float
    timescales: np.ndarray
    errors: np.ndarray | None = None
    kind: str = "discrete"
    n_bootstrap: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def lag_times(self) -> np.ndarray:
        """Lag times in ps."""
        return self.lags * self.dt

    @property
    def k(self) -> int:
        return int(self.timescales.shape[1])

    def to_dict(self) -> dict:
        return jsonify({"kind": self.kind, "dt": self.dt, "lags": self.lags,
                        "lag_times": self.lag_times, "timescales": self.timescales,
                        "errors": self.errors, "n_bootstrap": self.n_bootstrap, **self.extra})


def _timescales_at(data: list[np.ndarray], lag: int, kind: str, k: int, dt: float,
                   reversible: bool, n_states: int | None) -> np.ndarray:
    out = np.full(k, np.nan)
    try:
        if kind == "discrete":
            msm = estimate_msm(data, lag, reversible=reversible, n_states=n_states, dt=dt)
            ts = msm.timescales(k)
        else:
            K = koopman_from_features(data, lag, reversible=reversible)
            ts = timescales_from_eigenvalues(eigenvalues(K, k + 1)[1:], lag, dt)
    except LssError:
        return out
    out[:len(ts)] = ts
    return out


def implied_timescales(trajs: Trajectories, lags: Sequence[Any], *,
                       kind: Literal["discrete", "fuzzy"] = "discrete", k: int | None = None,
                       dt: float = 1.0, n_bootstrap: int = 0, reversible: bool | None = None,
                       n_states: int | None = None, seed: int | None = None) -> ImpliedTimescales:
    r"""Implied timescales :math:`t_i(τ)` for several lags with a fixed encoder.

    Parameters
    ----------
    trajs
        ``kind="discrete"``: integer state trajectories; ``kind="fuzzy"``:
        ``(frames, m)`` memberships (or features) per trajectory.
    lags
        Lag times: frames (int) or times (``"10ps"``, float in ps; multiples of ``dt``).
    kind
        Estimator: MSM (``"discrete"``) or Koopman matrix (``"fuzzy"``).
    k
        Number of timescales (default: ``min(n_states - 1, 10)`` / ``m - 1``).
    dt
        Frame interval in ps.
    n_bootstrap
        Bootstrap samples for errors (0: none).
    reversible
        Reversible estimator; default ``True`` for discrete (reversible MLE) and
        ``False`` for fuzzy (:math:`C_{00}^{-1}C_{0τ}` as in VAMPnets).
    n_states
        Size of the discrete state space (default ``max label + 1``).
    seed
        Seed of the bootstrap's random generator.
    """
    dt = check_dt(dt)
    if kind not in ("discrete", "fuzzy"):
        raise LssError(f"kind must be 'discrete' or 'fuzzy', got {kind!r}")
    if kind == "discrete":
        data = as_trajectories(trajs, dtype=int, ndim=1, name="dtrajs")
        n_tot = max((int(d.max()) for d in data if d.size), default=0) + 1 if n_states is None else n_states
        k_max = max(n_tot - 1, 1)
        k = min(k_max, 10) if k is None else int(k)
        reversible = True if reversible is None else reversible
    else:
        data = as_trajectories(trajs, dtype=float, ndim=2)
        k = max(data[0].shape[1] - 1, 1) if k is None else int(k)
        reversible = False if reversible is None else reversible
    lag_frames = np.array([as_lag(l, dt) for l in lags], dtype=int)
    ts = np.stack([_timescales_at(data, lag, kind, k, dt, reversible, n_states) for lag in lag_frames])
    errors = None
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        units = bootstrap_units(data)
        samples = np.empty((n_bootstrap, len(lag_frames), k))
        for b in range(n_bootstrap):
            pick = [units[i] for i in rng.integers(0, len(units), len(units))]
            samples[b] = [_timescales_at(pick, lag, kind, k, dt, reversible, n_states) for lag in lag_frames]
        finite = np.where(np.isfinite(samples), samples, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            errors = np.nanstd(finite, axis=0, ddof=1)
    return ImpliedTimescales(lag_frames, dt, ts, errors, kind, int(n_bootstrap),
                             {"reversible": reversible})
