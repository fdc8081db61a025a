r"""Autocorrelation functions and relaxation times with five-block standard errors.

Autocorrelation
---------------
For a coordinate :math:`ψ` (one column of the input), with :math:`\bar ψ`
its mean over all frames (``mean_free=True``, default) or 0,

.. math:: C(s) = \frac{\langle δψ(t)\,δψ(t+s)\rangle}{\langle δψ(t)^2\rangle},
          \qquad δψ = ψ - \bar ψ,

where :math:`\langle\cdot\rangle` averages over all pairs ``(t, t+s)``
inside the trajectories (never across two): the numerator sums over all
trajectories divided by the number of pairs :math:`\sum (N_r - s)`.  The sums
are computed with zero-padded FFTs, :math:`O(N \log N)`.  This is the
estimator of the LSS paper (Sidky et al. 2020), whose latent coordinates are
mean-free.

Relaxation times
----------------
*Fit* (LSS paper): :math:`C(s) ≈ \exp(-s/t)` with amplitude fixed to 1,
least squares over the lags from 0 up to (not including) the first lag where
:math:`C` drops below ``fit_cutoff`` (default 0.05 ≈ e⁻³, i.e. about three
relaxation times; the noisy tail is left out).  If :math:`C` never drops below
the cutoff within ``max_lag`` all lags are used (and the fit is unreliable;
raise ``max_lag``).

*Integrated*: :math:`t_{\text{int}} = \int_0^{s_0} C(s)\,ds` by the trapezoid
rule up to the first lag :math:`s_0` where :math:`C ≤ 0` (or ``max_lag``).
For an exact exponential both equal :math:`t`.

Standard errors (LSS paper): the concatenated data are cut into
:math:`K = 5` contiguous blocks of equal length; each block gives its own
:math:`C^{(k)}` (with its own mean) and :math:`t^{(k)}`, and
:math:`σ_t = \operatorname{std}_k(t^{(k)})/\sqrt K` (ddof = 1).  The reported
:math:`t` is the estimate from all data.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import LssError
from ._util import Trajectories, as_trajectories, block_se, check_dt, jsonify, split_blocks

__all__ = ["autocorrelation", "RelaxationTimes", "relaxation_times", "fit_exponential_time",
           "integrated_time"]


def _acf_sums(X: list[np.ndarray], max_lag: int, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = X[0].shape[1]
    num = np.zeros((max_lag + 1, d))
    pairs = np.zeros(max_lag + 1)
    for x in X:
        n = len(x)
        if n == 0:
            continue
        y = x - mean
        size = 1 << int(np.ceil(np.log2(2 * n)))
        f = np.fft.rfft(y, n=size, axis=0)
        ac = np.fft.irfft(f * np.conj(f), n=size, axis=0)[:min(n, max_lag + 1)]
        num[:len(ac)] += ac
        s = np.arange(len(ac))
        pairs[:len(ac)] += n - s
    return num, pairs


def autocorrelation(trajs: Trajectories, max_lag: int, *, mean_free: bool = True,
                    normalize: bool = True) -> np.ndarray:
    r"""Autocorrelation :math:`C(s)`, ``s = 0..max_lag`` frames, over several trajectories.

    Parameters
    ----------
    trajs
        ``(frames,)`` or ``(frames, d)`` arrays, or a list of them.
    max_lag
        Largest lag in frames.
    mean_free
        Subtract the global mean first (default).
    normalize
        Divide by :math:`C(0)` (default); otherwise return the covariance.

    Returns
    -------
    ndarray, shape (max_lag + 1,) for 1-D input or (max_lag + 1, d); NaN at lags without pairs.
    """
    X = as_trajectories(trajs, dtype=float, ndim=2)
    raw = [trajs] if isinstance(trajs, np.ndarray) else list(trajs)
    one_d = all(np.ndim(t) <= 1 for t in raw)
    C = _acf(X, int(max_lag), mean_free, normalize)
    return C[:, 0] if one_d and C.shape[1] == 1 else C


def _acf(X: list[np.ndarray], max_lag: int, mean_free: bool, normalize: bool) -> np.ndarray:
    if max_lag < 0:
        raise LssError(f"max_lag must be >= 0, got {max_lag}")
    allx = np.concatenate(X)
    mean = allx.mean(axis=0) if mean_free else np.zeros(allx.shape[1])
    num, pairs = _acf_sums(X, max_lag, mean)
    with np.errstate(invalid="ignore", divide="ignore"):
        C = num / pairs[:, None]
        if normalize:
            C = C / C[0]
    C[pairs == 0] = np.nan
    return C


def fit_exponential_time(acf: np.ndarray, dt: float = 1.0, *, fit_cutoff: float = 0.05) -> float:
    r"""Relaxation time :math:`t` (ps) of a least-squares fit :math:`C(s) = e^{-s/t}`.

    ``acf`` is one normalised ACF at lags ``0, dt, 2dt, ...``; the fit uses the
    lags before the first value below ``fit_cutoff`` (at least two points).
    """
    from scipy.optimize import curve_fit

    c = np.asarray(acf, dtype=float)
    ok = np.isfinite(c)
    c = c[:np.argmin(ok)] if not ok.all() else c
    below = np.flatnonzero(c < fit_cutoff)
    n_fit = int(below[0]) if below.size else len(c)
    n_fit = max(n_fit, 2)
    c = c[:n_fit]
    s = np.arange(len(c)) * dt
    if len(c) < 2:
        return float("nan")
    # log-linear first guess through the origin
    pos = c > 0
    slope = np.sum(s[pos] * np.log(c[pos])) / max(np.sum(s[pos] ** 2), 1e-300) if pos.sum() > 1 else -1.0 / dt
    t0 = -1.0 / slope if slope < 0 else s[-1] if s[-1] > 0 else dt
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            popt, _ = curve_fit(lambda x, t: np.exp(-x / t), s, c, p0=[t0], bounds=(1e-12 * dt, np.inf))
        return float(popt[0])
    except (RuntimeError, ValueError):
        return float("nan")


def integrated_time(acf: np.ndarray, dt: float = 1.0) -> float:
    r""":math:`\int_0^{s_0} C(s) ds` (ps) by the trapezoid rule up to the first lag with
    :math:`C ≤ 0` (or the last lag)."""
    c = np.asarray(acf, dtype=float)
    ok = np.isfinite(c)
    c = c[:np.argmin(ok)] if not ok.all() else c
    nonpos = np.flatnonzero(c <= 0)
    end = int(nonpos[0]) + 1 if nonpos.size else len(c)
    c = c[:end]
    if len(c) < 2:
        return float("nan")
    return float(dt * (c.sum() - 0.5 * (c[0] + c[-1])))


@dataclass
class RelaxationTimes:
    """Autocorrelation functions and relaxation times with block errors.

    Attributes
    ----------
    dt
        Frame interval in ps.
    acf
        ``(max_lag + 1, d)`` normalised ACF from all data.
    acf_errors
        ``(max_lag + 1, d)`` block standard errors of the ACF.
    tau_fit, tau_fit_errors
        ``(d,)`` single-exponential relaxation times (ps) and block SEs.
    tau_integrated, tau_integrated_errors
        ``(d,)`` integrated times (ps) and block SEs.
    tau_fit_blocks, tau_integrated_blocks
        ``(n_blocks, d)`` per-block estimates.
    n_blocks
        Number of blocks.
    fit_cutoff
        ACF threshold that ends the fit range.
    """

    dt: float
    acf: np.ndarray
    acf_errors: np.ndarray
    tau_fit: np.ndarray
    tau_fit_errors: np.ndarray
    tau_integrated: np.ndarray
    tau_integrated_errors: np.ndarray
    tau_fit_blocks: np.ndarray
    tau_integrated_blocks: np.ndarray
    n_blocks: int = 5
    fit_cutoff: float = 0.05

    @property
    def lag_times(self) -> np.ndarray:
        """Lags in ps, ``(max_lag + 1,)``."""
        return np.arange(self.acf.shape[0]) * self.dt

    @property
    def tau(self) -> np.ndarray:
        """Alias of :attr:`tau_fit`."""
        return self.tau_fit

    @property
    def tau_errors(self) -> np.ndarray:
        """Alias of :attr:`tau_fit_errors`."""
        return self.tau_fit_errors

    def to_dict(self) -> dict:
        return jsonify({k: getattr(self, k) for k in (
            "dt", "lag_times", "acf", "acf_errors", "tau_fit", "tau_fit_errors", "tau_integrated",
            "tau_integrated_errors", "tau_fit_blocks", "tau_integrated_blocks", "n_blocks", "fit_cutoff")})


def relaxation_times(trajs: Trajectories, *, dt: float = 1.0, max_lag: int | None = None,
                     fit_cutoff: float = 0.05, n_blocks: int = 5, mean_free: bool = True) -> RelaxationTimes:
    """Autocorrelation functions and relaxation times of each column, with block SEs.

    Parameters
    ----------
    trajs
        ``(frames,)`` or ``(frames, d)`` arrays (e.g. latent coordinates), or a list of them.
    dt
        Frame interval in ps.
    max_lag
        Largest lag in frames; default a quarter of the block length.  Must be
        shorter than a block.
    fit_cutoff
        The exponential fit uses lags before the ACF first falls below this.
    n_blocks
        Number of contiguous blocks for the standard errors (LSS paper: 5).
    mean_free
        Subtract the mean (global for all data, per block for blocks).

    Notes
    -----
    See the module docstring for the estimators.
    """
    dt = check_dt(dt)
    X = as_trajectories(trajs, dtype=float, ndim=2)
    if n_blocks < 2:
        raise LssError(f"n_blocks must be >= 2, got {n_blocks}")
    blocks = split_blocks(X, n_blocks)
    block_len = min(sum(len(s) for s in b) for b in blocks)
    if max_lag is None:
        max_lag = max(block_len // 4, 1)
    max_lag = int(max_lag)
    if not 1 <= max_lag < block_len:
        raise LssError(f"max_lag={max_lag} must be in 1..{block_len - 1} (block length {block_len})")
    d = X[0].shape[1]

    def times(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([fit_exponential_time(C[:, j], dt, fit_cutoff=fit_cutoff) for j in range(d)]),
                np.array([integrated_time(C[:, j], dt) for j in range(d)]))

    C = _acf(X, max_lag, mean_free, True)
    t_fit, t_int = times(C)
    C_blocks, tf_blocks, ti_blocks = [], [], []
    for b in blocks:
        Cb = _acf(b, max_lag, mean_free, True)
        C_blocks.append(Cb)
        tf, ti = times(Cb)
        tf_blocks.append(tf)
        ti_blocks.append(ti)
    C_blocks, tf_blocks, ti_blocks = np.stack(C_blocks), np.stack(tf_blocks), np.stack(ti_blocks)
    return RelaxationTimes(dt, C, block_se(C_blocks), t_fit, block_se(tf_blocks), t_int,
                           block_se(ti_blocks), tf_blocks, ti_blocks, int(n_blocks), float(fit_cutoff))
