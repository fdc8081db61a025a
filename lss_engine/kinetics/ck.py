r"""Chapman–Kolmogorov test: does :math:`P(kτ) ≈ P(τ)^k` hold?

A Markov model estimated at lag :math:`τ` predicts the model at :math:`kτ`
by :math:`P(τ)^k` (VAMPnets, Mardt et al. 2018, Eq. 13).  The test compares,
for :math:`k = 1..n`, the prediction with an independent estimate at lag
:math:`kτ` from the same (fixed) state assignment.

Discrete states, grouped into sets :math:`A_1..A_m` (default: each state its
own set).  With :math:`π^{(τ)}` the stationary distribution of the model at lag
:math:`τ`, the start distribution in set :math:`A_a` is :math:`π` restricted to
:math:`A_a` and renormalised, and

.. math:: p^{\text{pred}}_{ab}(k) = \frac{\sum_{i∈A_a} π^{(τ)}_i [T(τ)^k\,\mathbf 1_{A_b}]_i}{\sum_{i∈A_a} π^{(τ)}_i},
          \qquad
          p^{\text{est}}_{ab}(k) = \frac{\sum_{i∈A_a} π^{(kτ)}_i [T(kτ)\,\mathbf 1_{A_b}]_i}{\sum_{i∈A_a} π^{(kτ)}_i},

(the estimate uses the model at :math:`kτ` with its own stationary
distribution; PyEMMA's convention).  Models live on their largest connected
sets, embedded in the full state space; a set without stationary weight gives
NaN.

Soft memberships / features (``kind="fuzzy"``): :math:`p^{\text{pred}}(k) =
K(τ)^k` and :math:`p^{\text{est}}(k) = K(kτ)` with the Koopman matrices of
:func:`~lss_engine.kinetics.msm.koopman_from_features`.

``max_deviation`` is :math:`\max_{k,a,b} |p^{\text{pred}}_{ab}(k) - p^{\text{est}}_{ab}(k)|`.
Errors of the estimates (optional) are bootstrap standard deviations, resampling
trajectories or contiguous pieces of them as in
:func:`~lss_engine.kinetics.timescales.implied_timescales`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np

from ..errors import LssError
from ._util import Trajectories, as_lag, as_trajectories, bootstrap_units, check_dt, jsonify
from .msm import estimate_msm, koopman_from_features

__all__ = ["CKTest", "chapman_kolmogorov_test", "ck_test"]


@dataclass
class CKTest:
    """Result of a Chapman–Kolmogorov test.

    Attributes
    ----------
    lag
        Base lag τ in frames.
    dt
        Frame interval in ps.
    steps
        ``(n_steps,)`` multiples ``k = 1..n``.
    predicted
        ``(n_steps, m, m)`` :math:`P(τ)^k` set-to-set probabilities.
    estimated
        ``(n_steps, m, m)`` :math:`P(kτ)` estimated at lag ``kτ``.
    estimated_errors
        ``(n_steps, m, m)`` bootstrap standard deviations of ``estimated`` or ``None``.
    max_deviation
        Largest absolute difference between ``predicted`` and ``estimated``.
    kind
        ``"discrete"`` or ``"fuzzy"``.
    sets
        The sets (lists of labels) for discrete inputs, else ``None``.
    """

    lag: int
    dt: float
    steps: np.ndarray
    predicted: np.ndarray
    estimated: np.ndarray
    estimated_errors: np.ndarray | None
    max_deviation: float
    kind: str = "discrete"
    sets: list[list[int]] | None = None

    @property
    def lag_times(self) -> np.ndarray:
        """Lag times ``k τ Δt`` in ps."""
        return self.steps * self.lag * self.dt

    @property
    def n_sets(self) -> int:
        return int(self.predicted.shape[1])

    def deviation(self) -> np.ndarray:
        """``|predicted - estimated|``, shape ``(n_steps, m, m)``."""
        return np.abs(self.predicted - self.estimated)

    def to_dict(self) -> dict:
        return jsonify({"kind": self.kind, "lag": self.lag, "dt": self.dt, "steps": self.steps,
                        "lag_times": self.lag_times, "predicted": self.predicted,
                        "estimated": self.estimated, "estimated_errors": self.estimated_errors,
                        "max_deviation": self.max_deviation, "sets": self.sets})


def _set_matrix(sets: list[np.ndarray], n: int) -> np.ndarray:
    M = np.zeros((n, len(sets)))
    for a, s in enumerate(sets):
        M[s, a] = 1.0
    return M


def _set_probabilities(T_full: np.ndarray, pi_full: np.ndarray, S: np.ndarray) -> np.ndarray:
    """rows: start sets (π-weighted), columns: end sets."""
    W = pi_full[:, None] * S  # (n, m) start weights
    mass = W.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        P = (W.T @ T_full @ S) / mass[:, None]
    P[mass <= 0] = np.nan
    return P


def _discrete_model(data, lag, n_states, reversible, dt):
    msm = estimate_msm(data, lag, reversible=reversible, n_states=n_states, dt=dt)
    return msm.embedded_transition_matrix(), msm.full_stationary_distribution()


def _estimates(data, lag, n_steps, kind, n_states, reversible, dt, S):
    m = S.shape[1] if S is not None else data[0].shape[1]
    out = []
    for k in range(1, n_steps + 1):
        try:
            if kind == "discrete":
                T, pi = _discrete_model(data, k * lag, n_states, reversible, dt)
                out.append(_set_probabilities(T, pi, S))
            else:
                out.append(koopman_from_features(data, k * lag, reversible=reversible))
        except LssError:
            out.append(np.full((m, m), np.nan))
    return np.stack(out)


def chapman_kolmogorov_test(trajs: Trajectories, lag: Any, n_steps: int = 5, *,
                            kind: Literal["discrete", "fuzzy"] = "discrete",
                            sets: Sequence[Sequence[int]] | None = None,
                            reversible: bool | None = None, n_states: int | None = None,
                            dt: float = 1.0, n_bootstrap: int = 0,
                            seed: int | None = None) -> CKTest:
    """Chapman–Kolmogorov test for ``k = 1..n_steps`` (see the module docstring).

    Parameters
    ----------
    trajs
        Integer state trajectories (``kind="discrete"``) or ``(frames, m)``
        memberships/features (``kind="fuzzy"``).
    lag
        Base lag τ: frames (int) or a time (``"10ps"``, float in ps).
    n_steps
        Largest multiple ``n`` of τ tested.
    sets
        Discrete only: groups of state labels (e.g. metastable sets from
        :func:`~lss_engine.kinetics.msm.pcca`); default: every state its own set.
    reversible
        Default ``True`` (reversible MLE) for discrete, ``False`` for fuzzy.
    n_states
        Size of the discrete state space (default ``max label + 1``).
    dt
        Frame interval in ps.
    n_bootstrap
        Bootstrap samples for errors of the estimates (0: none).
    seed
        Seed of the bootstrap's random generator.
    """
    dt = check_dt(dt)
    lag = as_lag(lag, dt)
    n_steps = int(n_steps)
    if n_steps < 1:
        raise LssError(f"n_steps must be >= 1, got {n_steps}")
    if kind == "discrete":
        data = as_trajectories(trajs, dtype=int, ndim=1, name="dtrajs")
        n = max((int(d.max()) for d in data if d.size), default=0) + 1 if n_states is None else int(n_states)
        set_list = [np.arange(n)[i:i + 1] for i in range(n)] if sets is None else \
            [np.unique(np.asarray(s, dtype=int)) for s in sets]
        for s in set_list:
            if s.size == 0 or s.min() < 0 or s.max() >= n:
                raise LssError(f"sets must hold labels in 0..{n - 1}")
        S = _set_matrix(set_list, n)
        reversible = True if reversible is None else reversible
        T, pi = _discrete_model(data, lag, n, reversible, dt)
        predicted = np.stack([_set_probabilities(np.linalg.matrix_power(T, k), pi, S)
                              for k in range(1, n_steps + 1)])
        n_states_arg: int | None = n
    elif kind == "fuzzy":
        if sets is not None:
            raise LssError("sets are only used with kind='discrete'")
        data = as_trajectories(trajs, dtype=float, ndim=2)
        S, set_list, n_states_arg = None, None, None
        reversible = False if reversible is None else reversible
        K = koopman_from_features(data, lag, reversible=reversible)
        predicted = np.stack([np.linalg.matrix_power(K, k) for k in range(1, n_steps + 1)])
    else:
        raise LssError(f"kind must be 'discrete' or 'fuzzy', got {kind!r}")
    estimated = _estimates(data, lag, n_steps, kind, n_states_arg, reversible, dt, S)
    errors = None
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        units = bootstrap_units(data)
        samples = np.stack([
            _estimates([units[i] for i in rng.integers(0, len(units), len(units))],
                       lag, n_steps, kind, n_states_arg, reversible, dt, S)
            for _ in range(int(n_bootstrap))])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            errors = np.nanstd(samples, axis=0, ddof=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dev = np.nanmax(np.abs(predicted - estimated)) if np.any(np.isfinite(predicted - estimated)) else np.nan
    return CKTest(lag, dt, np.arange(1, n_steps + 1), predicted, estimated, errors, float(dev), kind,
                  None if set_list is None else [s.tolist() for s in set_list])


#: Short alias of :func:`chapman_kolmogorov_test`.
ck_test = chapman_kolmogorov_test
