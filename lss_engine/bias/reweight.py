r"""Unbiased weights from biased runs: MBAR (numpy) and TRAM (deeptime), and reweighted FES.

Setting
-------
Run :math:`k = 1 \dots K` samples the biased Boltzmann density

.. math:: p_k(x) = e^{f_k - u_0(x) - u_k(x)}, \qquad u_k(x) = b_k(x) / kT,

with a *fixed* bias :math:`b_k(x)` (kJ/mol, one thermodynamic state per run)
and the reduced free energy :math:`f_k` of the biased state relative to the
unbiased one, :math:`e^{-f_k} = \langle e^{-u_k} \rangle_0` (gauge: the unbiased
state has :math:`f = 0`).  The :math:`N = \sum_k N_k` frames of all runs are
pooled; the input is the matrix of every frame's reduced bias under every
run's bias, :math:`u_{kn} = b_k(x_n)/kT` (shape ``(K, N)``), and the run each
frame came from.  The unbiased potential :math:`u_0` is never needed.

MBAR
----
The estimator of Shirts & Chodera (2008), J. Chem. Phys. 129, 124105: the
free energies solve the self-consistent equations

.. math:: f_i = -\ln \sum_{n=1}^{N} \frac{e^{-u_{in}}}
                {\sum_{k=1}^{K} N_k\, e^{f_k - u_{kn}}}, \qquad i = 1 \dots K,

unique up to one additive constant, and every frame gets the unbiased weight

.. math:: w_n = \frac{1/D_n}{\sum_m 1/D_m}, \qquad
          D_n = \sum_k N_k\, e^{f_k - u_{kn}},

so that :math:`\langle A \rangle_0 ≈ \sum_n w_n A(x_n)`.  The constant is
fixed so that the unbiased state has :math:`f = -\ln\sum_n 1/D_n = 0`; then
:math:`f_k = -\ln \sum_n w_n e^{-u_{kn}}` (deeptime's TRAM reports the same
gauge).  Everything is computed in log space (``logsumexp``), so biases of
thousands of kT far from a window neither overflow nor underflow.

The equations are the stationarity conditions of the convex function

.. math:: Φ(f) = \sum_n \ln \sum_k N_k e^{f_k - u_{kn}} - \sum_k N_k f_k,

with gradient :math:`g_i = N_i (s_i - 1)`, :math:`s_i = \sum_n W_{ni}`,
:math:`W_{ni} = e^{f_i - u_{in}} / D_n`, and Hessian
:math:`H_{ij} = δ_{ij} N_i s_i - N_i N_j \sum_n W_{ni} W_{nj}`.  The solver is
pymbar's "adaptive" scheme: each iteration computes the self-consistent
update :math:`f_i \leftarrow f_i - \ln s_i` and a Newton step
:math:`f \leftarrow f - H^{-1} g` (one :math:`f` held fixed against the
gauge) and keeps the one with the smaller residual; it stops when
:math:`\max_i |\ln s_i|` (the change a self-consistent step would make) is
below ``tol``.  Frame multiplicities :math:`c_n` (a bootstrap sample) enter as
:math:`\sum_n \to \sum_n c_n` and :math:`N_k = \sum_{n \in k} c_n`.

TRAM
----
With discrete (cluster) labels and per-run trajectories, deeptime's
``TRAM`` (Wu et al. 2016, PNAS 113, E3221) also uses the transitions inside
each run at a lag: frames that are locally but not globally equilibrated in
their run (short runs started far from equilibrium) are still weighted
correctly.  With a single Markov state TRAM reduces to MBAR exactly (its
modified counts are :math:`R^k = N_k`); the tests check this agreement.
deeptime is an optional (test) dependency; MBAR needs numpy only.

FES and errors
--------------
:func:`reweighted_fes` is the weighted histogram of
:func:`lss_engine.kinetics.fes.free_energy` (the package's one FES rule:
:math:`F_b = -\ln p_b`, minimum 0, NaN where empty) with the weights above.
Its errors come from a bootstrap that *re-estimates the weights*: whole runs
(trajectories for TRAM) are resampled with replacement (``resample="runs"``),
or, stratified, contiguous blocks of every run are resampled within that run
(``resample="blocks"``: every bias keeps its frame count, the choice for
umbrella windows with one run per window, where losing a window leaves a gap
in the coverage).  From the bootstrap densities :math:`p_b^{(r)}`

.. math:: σ_{F_b} = kT\,\frac{\operatorname{std}_r(p_b^{(r)})}{p_b}\ (\text{ddof}=1),

the first-order propagation of the density's error that
:mod:`lss_engine.kinetics.fes` uses for block errors (finite when a bin is
empty in some replicate).  The uncertainty of the additive constant is not
included.  A TRAM sample keeps the full estimate's connected set of Markov
states and starts from its solution, to a looser tolerance (``_BOOT_TOL``,
or the full estimate's last change when that did not converge: a sample
need not do better than the estimate it measures the spread of);
MBAR samples start from the full estimate's :math:`f`.
:func:`tram_bootstrap` returns the samples themselves (weights and the
unbiased transition matrix), for the errors of kinetics.
"""
from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._helpers import jsonable, positive_float, positive_int
from ..errors import LssError, NonFiniteError
from ..kinetics._util import as_trajectories
from ..kinetics.fes import FreeEnergyProfile, free_energy

__all__ = [
    "ReweightResult",
    "ReweightedProfile",
    "mbar_weights",
    "reweighted_fes",
    "run_labels",
    "tram_weights",
]

_RESAMPLE = ("runs", "blocks")


def _logsumexp(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    r""":math:`\ln \sum e^{a}` along ``axis`` without overflow (scipy's; -inf where every term is -inf)."""
    from scipy.special import logsumexp

    with np.errstate(divide="ignore"):
        return np.asarray(logsumexp(np.asarray(a, dtype=float), axis=axis))


# ------------------------------------------------------------------------ result
@dataclass
class ReweightResult:
    r"""Unbiased frame weights and the free energies of the biased states.

    Attributes
    ----------
    method
        ``"mbar"`` or ``"tram"``.
    f_k
        ``(K,)`` reduced free energy of each run's biased state relative to
        the unbiased state, :math:`f_k = -\ln \sum_n w_n e^{-u_{kn}}` (in kT;
        multiply by :attr:`kT` for kJ/mol).
    weights
        ``(N,)`` normalised unbiased weight of every frame, in the pooled
        order of the input (sum 1; 0 for frames TRAM left out of its
        connected set).
    n_k
        ``(K,)`` frames per run.
    kT
        The energy unit of the input biases (kJ/mol); the weights do not
        depend on it.
    converged
        Whether the solver met its tolerance within ``maxiter``.
    iterations
        Iterations done.
    max_change
        Last iteration's largest free-energy change (kT).
    lag
        TRAM's lag in frames (``None`` for MBAR).
    n_markov_states
        TRAM's number of Markov states (``None`` for MBAR).
    run_of_frame, reduced_bias, dtraj, trajectory_lengths
        The inputs (reduced: :math:`u_{kn}`), kept for the bootstrap of
        :func:`reweighted_fes`; not part of :meth:`to_dict`.
    unbiased_run, unbiased_transition_matrix, unbiased_markov_states
        TRAM only, when one run has no bias (its row of ``bias_kn`` all
        zero): that run's label, TRAM's transition matrix of that run at ``lag``
        (:math:`T^0_{ij}`, reversible with respect to TRAM's unbiased
        :math:`π_i`, estimated from that run's transition counts alone) and
        the Markov state (``dtraj`` label) of each of its rows.  Else ``None``.
    markov_states, tram_model
        TRAM only: the Markov states of its connected set (``None`` without
        a connectivity restriction) and deeptime's ``TRAMModel``; the
        bootstrap keeps the first and starts from the second.
    """

    method: str
    f_k: np.ndarray
    weights: np.ndarray
    n_k: np.ndarray
    kT: float
    converged: bool
    iterations: int
    max_change: float
    lag: int | None = None
    n_markov_states: int | None = None
    run_of_frame: np.ndarray = field(default=None, repr=False)
    reduced_bias: np.ndarray = field(default=None, repr=False)
    dtraj: np.ndarray | None = field(default=None, repr=False)
    trajectory_lengths: np.ndarray | None = field(default=None, repr=False)
    settings: dict = field(default_factory=dict, repr=False)
    unbiased_run: int | None = None
    unbiased_transition_matrix: np.ndarray | None = field(default=None, repr=False)
    unbiased_markov_states: np.ndarray | None = field(default=None, repr=False)
    markov_states: np.ndarray | None = field(default=None, repr=False)
    tram_model: Any = field(default=None, repr=False)

    @property
    def n_runs(self) -> int:
        return len(self.n_k)

    @property
    def n_frames(self) -> int:
        return len(self.weights)

    @property
    def log_weights(self) -> np.ndarray:
        r""":math:`\ln w_n` (-inf for weight 0)."""
        with np.errstate(divide="ignore"):
            return np.log(self.weights)

    @property
    def effective_sample_size(self) -> float:
        r"""Kish's effective number of frames :math:`1 / \sum_n w_n^2` (N for equal weights)."""
        return float(1.0 / np.sum(self.weights ** 2))

    @property
    def f_k_kjmol(self) -> np.ndarray:
        """:attr:`f_k` in kJ/mol (times :attr:`kT`)."""
        return self.f_k * self.kT

    def expectation(self, values: Any) -> np.ndarray:
        r"""Unbiased average :math:`\sum_n w_n A(x_n)` of per-frame ``values`` (``(N,)`` or ``(N, ...)``)."""
        a = np.asarray(values, dtype=float)
        if a.ndim == 0 or a.shape[0] != self.n_frames:
            raise LssError(f"values must have one row per frame ({self.n_frames}), got shape {a.shape}")
        return np.tensordot(self.weights, a, axes=(0, 0))

    def to_dict(self, include_weights: bool = False) -> dict:
        """Strict-JSON-ready summary (NaN/Inf become ``None``); the per-frame weights only if asked."""
        out = {"method": self.method, "n_runs": self.n_runs, "n_frames": self.n_frames,
               "f_k": self.f_k, "n_k": self.n_k, "kT": self.kT, "converged": self.converged,
               "iterations": self.iterations, "max_change": self.max_change,
               "effective_sample_size": self.effective_sample_size, "lag": self.lag,
               "n_markov_states": self.n_markov_states}
        if include_weights:
            out["weights"] = self.weights
        return jsonable(out)


# ------------------------------------------------------------------------ checks
def run_labels(lengths: Sequence[int]) -> np.ndarray:
    """``run_of_frame`` for runs pooled one after the other: ``lengths[k]`` frames of run ``k``."""
    n = [positive_int(v, f"lengths[{i}]", minimum=0) for i, v in enumerate(lengths)]
    return np.repeat(np.arange(len(n)), n)


def _check_inputs(bias_kn: Any, run_of_frame: Any, kT: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(u_kn, run labels, n_k, kT) after the checks every estimator shares."""
    kT = positive_float(kT, "kT")
    runs = np.asarray(run_of_frame)
    if runs.ndim != 1:
        raise LssError(f"run_of_frame must be 1-D (one run index per frame), got shape {runs.shape}")
    if runs.size == 0:
        raise LssError("no frames given (run_of_frame is empty)")
    if not np.issubdtype(runs.dtype, np.integer):
        if not np.issubdtype(runs.dtype, np.number) or not np.all(np.isfinite(runs)) \
                or not np.all(runs == np.round(runs)):
            raise LssError("run_of_frame must hold integer run indices")
        runs = runs.astype(np.int64)
    try:
        b = np.asarray(bias_kn, dtype=float)
    except (TypeError, ValueError):
        raise LssError("bias_kn must be a numeric (K runs, N frames) array") from None
    n = len(runs)
    if b.ndim != 2:
        raise LssError(f"bias_kn must be 2-D (K runs, N frames), got shape {b.shape}")
    if b.shape[1] != n:
        hint = "; pass bias_kn.T" if b.shape[0] == n else ""
        raise LssError(f"bias_kn has shape {b.shape} but there are {n} frames: expected (K, {n}){hint}")
    K = b.shape[0]
    if K == 0:
        raise LssError("bias_kn has no runs (0 rows)")
    if runs.min() < 0 or runs.max() >= K:
        raise LssError(f"run_of_frame must lie in [0, {K}) for {K} biases, got [{runs.min()}, {runs.max()}]")
    n_k = np.bincount(runs, minlength=K)
    if np.any(n_k == 0):
        empty = np.flatnonzero(n_k == 0)
        raise LssError(f"run {int(empty[0])} has no frames ({len(empty)} empty run(s) of {K})")
    if not np.all(np.isfinite(b)):
        k, i = np.argwhere(~np.isfinite(b))[0]
        raise NonFiniteError(f"bias_kn contains NaN or Inf (first at run {k}, frame {i})")
    return b / kT, runs.astype(np.int64), n_k, kT


# ------------------------------------------------------------------------- MBAR
def _mbar_solve(u: np.ndarray, runs: np.ndarray, counts: np.ndarray | None, *, f_init: np.ndarray | None,
                tol: float, maxiter: int) -> tuple[np.ndarray, np.ndarray, bool, int, float]:
    r"""Solve the MBAR equations; returns (f_k in the unbiased gauge, log w_n, converged, iterations, last change).

    ``counts``: frame multiplicities :math:`c_n` (``None``: all 1); frames
    with :math:`c_n = 0` do not count and get weight 0.  States without
    frames get :math:`f_i` from the equation with the others' solution.
    """
    K, N = u.shape
    c = np.ones(N) if counts is None else np.asarray(counts, dtype=float)
    use = c > 0
    us, cs = u[:, use], c[use]
    logc = np.log(cs)
    Nk = np.bincount(runs[use], weights=cs, minlength=K)
    S = np.flatnonzero(Nk > 0)                     # sampled states
    logN = np.log(Nk[S])
    uS = us[S]
    f = np.zeros(len(S)) if f_init is None else np.asarray(f_init, dtype=float)[S].copy()
    f -= f[0]

    def evaluate(fs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logD = _logsumexp(logN[:, None] + fs[:, None] - uS, axis=0)
        logW = fs[:, None] - uS - logD[None, :]
        log_s = _logsumexp(logW + logc[None, :], axis=1)
        return logD, logW, log_s

    logD, logW, log_s = evaluate(f)
    change = float(np.max(np.abs(log_s)))
    it = 0
    converged = change < tol
    while not converged and it < maxiter:
        it += 1
        # self-consistent step
        f_sc = f - log_s
        f_sc -= f_sc[0]
        cand = [(f_sc, evaluate(f_sc))]
        # Newton step on the convex objective, f[0] fixed
        if len(S) > 1:
            W = np.exp(logW)
            s = np.exp(log_s)
            Nv = np.exp(logN)
            g = Nv * (s - 1.0)
            H = np.diag(Nv * s) - np.outer(Nv, Nv) * ((W * cs[None, :]) @ W.T)
            try:
                step = np.linalg.solve(H[1:, 1:], g[1:])
            except np.linalg.LinAlgError:
                step = None
            if step is not None and np.all(np.isfinite(step)):
                f_nr = f.copy()
                f_nr[1:] -= step
                cand.append((f_nr, evaluate(f_nr)))
        best = min(cand, key=lambda fc: np.max(np.abs(fc[1][2])) if np.all(np.isfinite(fc[1][2])) else np.inf)
        f_new, (logD, logW, log_s) = best
        change = float(np.max(np.abs(f_new - f)))
        f = f_new
        converged = bool(np.max(np.abs(log_s)) < tol) and np.all(np.isfinite(f))
    # gauge: unbiased state f = 0, i.e. sum_n c_n / D_n = 1
    log_w_used = logc - logD
    f_unbiased = -_logsumexp(log_w_used)
    log_w_used = log_w_used + f_unbiased
    f_all = -_logsumexp(-us + log_w_used[None, :], axis=1)   # every state, sampled or not
    log_w = np.full(N, -np.inf)
    log_w[use] = log_w_used
    return f_all, log_w, bool(converged), it, change


def mbar_weights(bias_kn: Any, run_of_frame: Any, *, kT: float, tol: float = 1e-10,
                 maxiter: int = 10000) -> ReweightResult:
    r"""Unbiased frame weights and biased-state free energies by MBAR (see the module docstring).

    Solves :math:`f_i = -\ln \sum_n e^{-u_{in}} / \sum_k N_k e^{f_k - u_{kn}}`
    and returns :math:`w_n ∝ 1 / \sum_k N_k e^{f_k - u_{kn}}` (sum 1) with the
    unbiased state's free energy set to 0.

    Parameters
    ----------
    bias_kn
        ``(K, N)`` bias energy of every pooled frame ``n`` under the bias of
        every run ``k``, :math:`b_k(x_n)`, in the unit of ``kT`` (kJ/mol, or
        reduced with ``kT=1``).  Only differences between runs matter: a
        constant added to a row changes that :math:`f_k` only.
    run_of_frame
        ``(N,)`` index of the run (row of ``bias_kn``) that sampled each
        frame; :func:`run_labels` builds it from run lengths.  Every run needs
        at least one frame.
    kT
        :math:`k_B T` in the unit of ``bias_kn`` (no default: a wrong unit
        would silently rescale every bias).
    tol
        Stop when no self-consistent step would change any :math:`f_k` by
        more than ``tol`` (kT).
    maxiter
        Most iterations; not converging warns and sets ``converged=False``.

    Returns
    -------
    ReweightResult

    Raises
    ------
    LssError
        Shapes that do not match, a run without frames, run indices out of
        range, a non-positive ``kT``; :class:`~lss_engine.errors.NonFiniteError`
        for NaN or Inf in ``bias_kn``.
    """
    tol = positive_float(tol, "tol")
    maxiter = positive_int(maxiter, "maxiter")
    u, runs, n_k, kT = _check_inputs(bias_kn, run_of_frame, kT)
    f, log_w, converged, it, change = _mbar_solve(u, runs, None, f_init=None, tol=tol, maxiter=maxiter)
    if not converged:
        warnings.warn(f"MBAR did not converge in {maxiter} iterations (last change {change:.3g} kT)",
                      RuntimeWarning, stacklevel=2)
    return ReweightResult("mbar", f, np.exp(log_w), n_k, kT, converged, it, change,
                          run_of_frame=runs, reduced_bias=u, settings={"tol": tol, "maxiter": maxiter})


# ------------------------------------------------------------------------- TRAM
def _trajectory_bounds(runs: np.ndarray, lengths: Any) -> np.ndarray:
    """Start/stop offsets of the trajectories: given lengths, or maximal stretches of one run label."""
    N = len(runs)
    if lengths is None:
        cuts = np.flatnonzero(np.diff(runs) != 0) + 1
        return np.concatenate([[0], cuts, [N]])
    ln = np.asarray(lengths)
    if ln.ndim != 1 or ln.size == 0 or not np.issubdtype(ln.dtype, np.integer) or np.any(ln <= 0):
        raise LssError("trajectory_lengths must be positive integers")
    if int(ln.sum()) != N:
        raise LssError(f"trajectory_lengths sum to {int(ln.sum())}, but there are {N} frames")
    bounds = np.concatenate([[0], np.cumsum(ln)])
    for i in range(len(ln)):
        seg = runs[bounds[i]:bounds[i + 1]]
        if np.any(seg != seg[0]):
            raise LssError(f"trajectory {i} mixes frames of several runs")
    return bounds


def _connected_markov_states(u: np.ndarray, runs: np.ndarray, dtraj: np.ndarray, pieces: list[np.ndarray], *,
                             lag: int, n_markov: int, connectivity: str, count_mode: str) -> np.ndarray:
    """Markov states of deeptime's largest connected set, computed with one trajectory per thermodynamic state.

    deeptime 0.5.0's ``restrict_to_largest_connected_set`` takes trajectory
    ``k`` for thermodynamic state ``k`` in its ``"post_hoc_RE"`` and
    ``"BAR_variance"`` modes whatever the ``ttrajs`` say; with several
    trajectories per state (a run of several trajectories, a bootstrap
    sample) it kept 2 156 of 6 000 well-connected frames.  So the pieces of
    each sampled state are concatenated (in order) for this check only: a
    junction adds at most one spurious transition per piece to the
    connectivity graph, never to the counts TRAM uses.
    """
    from deeptime.markov.msm import TRAMDataset

    states = sorted({int(runs[p[0]]) for p in pieces})
    local = {k: i for i, k in enumerate(states)}
    d_by, b_by = [[] for _ in states], [[] for _ in states]
    for p in pieces:
        i = local[int(runs[p[0]])]
        d_by[i].append(dtraj[p])
        b_by[i].append(u[np.ix_(states, p)].T)
    helper = TRAMDataset(dtrajs=[np.concatenate(d) for d in d_by],
                         bias_matrices=[np.ascontiguousarray(np.concatenate(b)) for b in b_by],
                         ttrajs=[np.full(sum(len(x) for x in d), i, dtype=np.int32) for i, d in enumerate(d_by)],
                         n_therm_states=len(states), n_markov_states=n_markov, lagtime=lag, count_mode=count_mode)
    helper.restrict_to_largest_connected_set(connectivity=connectivity)
    keep = np.unique(np.concatenate(helper.dtrajs))
    return keep[keep >= 0]


def _tram_fit(u: np.ndarray, runs: np.ndarray, dtraj: np.ndarray, pieces: list[np.ndarray], *, lag: int,
              n_markov: int, connectivity: str | None, tol: float, maxiter: int, count_mode: str,
              f_init: np.ndarray, states: np.ndarray | None = None,
              start: Any = None) -> tuple[np.ndarray, bool, int, float, Any, np.ndarray | None]:
    r"""deeptime TRAM on trajectories given as frame-index arrays.

    Returns (log w_n, converged, iterations, change, deeptime ``TRAMModel``,
    the Markov states kept: ``None`` when ``connectivity`` is ``None``).
    ``states`` restricts to those Markov states instead of finding the
    connected set (a bootstrap sample keeps its estimate's set), and
    ``start`` (a ``TRAMModel``, e.g. the full estimate's) replaces the MBAR
    start with its configuration free energies and Lagrange multipliers: a
    bootstrap sample then converges in fewer iterations.  Otherwise TRAM
    starts from the MBAR free energies
    ``f_init`` of the same frames (deeptime's own ``init_strategy="MBAR"``,
    with this module's Newton-accelerated solver instead of deeptime's
    plain self-consistent one, which took 15 s for 48 000 frames in 12
    states) and deeptime's initial Lagrange multipliers
    :math:`\ln v_i^k = \ln \tfrac12 \sum_j (c_{ij}^k + c_{ji}^k)`.
    """
    from deeptime.markov.msm import TRAM, TRAMDataset, TRAMModel

    K = u.shape[0]
    dtrajs = [dtraj[p] for p in pieces]
    biases = [np.ascontiguousarray(u[:, p].T) for p in pieces]
    ttrajs = [np.full(len(p), runs[p[0]], dtype=np.int32) for p in pieces]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = TRAMDataset(dtrajs=dtrajs, bias_matrices=biases, ttrajs=ttrajs, n_therm_states=K,
                         n_markov_states=n_markov, lagtime=lag, count_mode=count_mode)
        if states is None and connectivity is not None:
            states = _connected_markov_states(u, runs, dtraj, pieces, lag=lag, n_markov=n_markov,
                                              connectivity=connectivity, count_mode=count_mode)
        if states is not None:
            ds.restrict_to_submodel(np.asarray(states))
        if start is not None:
            conf, lagrangians = (np.asarray(a, dtype=float) for a in (start.biased_conf_energies,
                                                                     start.lagrangian_mult_log))
        else:
            conf = np.repeat(np.asarray(f_init, dtype=float)[:, None], n_markov, axis=1)
            C = np.asarray(ds.transition_counts, dtype=float)
            with np.errstate(divide="ignore"):
                lagrangians = np.log(0.5 * (C.sum(axis=2) + C.sum(axis=1)))
        initial = TRAMModel(count_models=[], transition_matrices=None, biased_conf_energies=conf,
                            lagrangian_mult_log=lagrangians, modified_state_counts_log=np.zeros_like(lagrangians))
        est = TRAM(lagtime=lag, count_mode=count_mode, maxiter=maxiter, maxerr=tol, callback_interval=1)
        est.fit(ds, model=initial)
    model = est.fetch_model()
    incs = est.energy_increments
    change = float(incs[-1]) if incs else 0.0
    logs = model.compute_sample_weights_log(ds.dtrajs, biases)
    log_w = np.full(len(runs), -np.inf)
    for p, lw in zip(pieces, logs):
        lw = np.where(np.isfinite(lw), lw, -np.inf)
        np.logaddexp.at(log_w, p, lw)
    log_w -= _logsumexp(log_w)
    return log_w, change <= tol, len(incs), change, model, states


def _unbiased_matrix(model: Any, u: np.ndarray) -> tuple[int | None, np.ndarray | None, np.ndarray | None,
                                                         np.ndarray | None]:
    """The run without bias (its row of ``u`` all zero) and TRAM's transition matrix, Markov states and counts of it.

    The counts are that run's transition counts at the lag on the matrix's
    states (``None`` when deeptime keeps no count model).  All ``None`` when
    every run is biased.
    """
    unbiased = [k for k in range(u.shape[0]) if not np.any(u[k])]
    if not unbiased:
        return None, None, None, None
    collection = model.msm_collection
    collection.select(unbiased[0])
    T0 = np.asarray(collection.transition_matrix, dtype=float)
    cm = collection.count_model
    states0 = np.asarray(cm.state_symbols if cm is not None else np.arange(len(T0)), dtype=np.int64)
    counts0 = np.asarray(cm.count_matrix, dtype=float) if cm is not None else None
    return unbiased[0], T0, states0, counts0


def tram_weights(bias_kn: Any, run_of_frame: Any, dtraj: Any, *, kT: float, lag: int = 1,
                 trajectory_lengths: Sequence[int] | None = None, connectivity: str | None = "post_hoc_RE",
                 count_mode: str = "sliding", tol: float = 1e-8, maxiter: int = 10000) -> ReweightResult:
    r"""Unbiased frame weights by deeptime's TRAM (discrete states + transitions at a lag).

    The trajectories are the pooled frames cut where the run label changes
    (or by ``trajectory_lengths``), each in time order; transitions are
    counted within each trajectory at ``lag``.  The unbiased weight of frame
    :math:`x` in Markov state :math:`i` is
    :math:`μ(x) ∝ 1/\sum_k R_i^k e^{f_i^k - u_k(x)}` (deeptime's
    ``compute_sample_weights_log``); with one Markov state
    :math:`R^k = N_k` and this is MBAR.  Frames of Markov states outside the
    connected set get weight 0.  :attr:`ReweightResult.f_k` is
    :math:`-\ln \sum_n w_n e^{-u_{kn}}`, the gauge of :func:`mbar_weights`.

    Parameters
    ----------
    bias_kn, run_of_frame, kT
        As in :func:`mbar_weights`.
    dtraj
        ``(N,)`` Markov state (cluster) label ``0 .. n-1`` of every frame.
    lag
        Lag in frames (each trajectory needs more than ``lag`` frames).
    trajectory_lengths
        Lengths of consecutive trajectories (each within one run), when a run
        holds several trajectories; default: one per stretch of one run label.
    connectivity
        deeptime's ``TRAMDataset.restrict_to_largest_connected_set`` mode
        (``"post_hoc_RE"``, ``"BAR_variance"``, ``"summed_count_matrix"``) or
        ``None`` for no restriction.
    count_mode
        deeptime's transition count mode (``"sliding"``, ``"sample"``, ...).
    tol, maxiter
        TRAM's ``maxerr`` (largest free-energy change per iteration) and
        ``maxiter``.

    Raises
    ------
    LssError
        As :func:`mbar_weights`; labels that are not one non-negative
        integer per frame; a trajectory not longer than ``lag``; deeptime not
        installed (``pip install deeptime``).
    """
    tol = positive_float(tol, "tol")
    maxiter = positive_int(maxiter, "maxiter")
    lag = positive_int(lag, "lag")
    u, runs, n_k, kT = _check_inputs(bias_kn, run_of_frame, kT)
    d = np.asarray(dtraj)
    if d.shape != runs.shape:
        raise LssError(f"dtraj must hold one label per frame ({len(runs)}), got shape {d.shape}")
    if not np.issubdtype(d.dtype, np.integer) or d.min() < 0:
        raise LssError("dtraj must hold non-negative integer Markov state labels")
    bounds = _trajectory_bounds(runs, trajectory_lengths)
    short = np.flatnonzero(np.diff(bounds) <= lag)
    if short.size:
        raise LssError(f"trajectory {int(short[0])} has {int(np.diff(bounds)[short[0]])} frames, "
                       f"not more than the lag {lag}")
    if importlib.util.find_spec("deeptime") is None:
        raise LssError("tram_weights needs deeptime (pip install deeptime); mbar_weights does not")
    n_markov = int(d.max()) + 1
    pieces = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    settings = {"tol": tol, "maxiter": maxiter, "connectivity": connectivity, "count_mode": count_mode}
    f0 = _mbar_solve(u, runs, None, f_init=None, tol=tol, maxiter=maxiter)[0]
    log_w, converged, it, change, model, states = _tram_fit(u, runs, d.astype(np.int32), pieces, lag=lag,
                                                    n_markov=n_markov, connectivity=connectivity, tol=tol,
                                                    maxiter=maxiter, count_mode=count_mode, f_init=f0)
    run0, T0, states0, _ = _unbiased_matrix(model, u)
    if not converged:
        warnings.warn(f"TRAM did not converge in {maxiter} iterations (last change {change:.3g} kT)",
                      RuntimeWarning, stacklevel=2)
    w = np.exp(log_w)
    f = -_logsumexp(-u + log_w[None, :], axis=1)
    return ReweightResult("tram", f, w, n_k, kT, converged, it, change, lag=lag, n_markov_states=n_markov,
                          run_of_frame=runs, reduced_bias=u, dtraj=d.astype(np.int64),
                          trajectory_lengths=np.diff(bounds), settings=settings,
                          unbiased_run=run0, unbiased_transition_matrix=T0, unbiased_markov_states=states0,
                          markov_states=states, tram_model=model)


# -------------------------------------------------------------------- bootstrap
#: TRAM's tolerance (kT per iteration) in a bootstrap sample: its linear convergence takes about half
#: the iterations of 1e-8 (740 vs 1 404 on 80 000 frames of a 4-state chain), and what it leaves is orders
#: below the spread between samples.
_BOOT_TOL = 1e-6


def _boot_tol(result: ReweightResult) -> float:
    """A TRAM bootstrap sample's tolerance: :data:`_BOOT_TOL`, or as converged as the full estimate when it was not."""
    return max(result.settings["tol"], _BOOT_TOL, 0.0 if result.converged else result.max_change)


def _units(result: ReweightResult, resample: str, n_blocks: int) -> list[np.ndarray]:
    """Frame-index arrays resampled by the bootstrap ("runs": runs or TRAM trajectories; "blocks": per run)."""
    runs = result.run_of_frame
    if result.method == "tram":
        bounds = np.concatenate([[0], np.cumsum(result.trajectory_lengths)])
        base = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    else:
        base = [np.flatnonzero(runs == k) for k in range(result.n_runs)]
    if resample == "runs":
        return base
    out = []
    for idx in base:
        out.extend(p for p in np.array_split(idx, min(n_blocks, len(idx))) if len(p))
    return out


def _replicate_weights(result: ReweightResult, units: list[np.ndarray], strata: np.ndarray,
                       rng: np.random.Generator) -> tuple[np.ndarray, Any] | None:
    """Unbiased weights of one bootstrap sample (multiplicity included) and, for TRAM, its deeptime model.

    ``None`` if the sample failed.  Units are drawn with replacement within
    each stratum (one stratum: all units; ``"blocks"``: the units of one run
    each).
    """
    model = None
    mult = np.zeros(len(units), dtype=np.int64)
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        mult[members] += np.bincount(rng.integers(0, len(members), len(members)), minlength=len(members))
    s = result.settings
    if result.method == "mbar":
        counts = np.zeros(result.n_frames)
        for m, idx in zip(mult, units):
            counts[idx] += m
        _, log_w, ok, _, _ = _mbar_solve(result.reduced_bias, result.run_of_frame, counts, f_init=result.f_k,
                                         tol=s["tol"], maxiter=s["maxiter"])
    else:
        pieces = [idx for m, idx in zip(mult, units) for _ in range(m) if len(idx) > result.lag]
        if not pieces:
            return None
        try:  # from the full estimate's solution, on its connected set
            log_w, ok, _, _, model, _ = _tram_fit(result.reduced_bias, result.run_of_frame,
                                                  result.dtraj.astype(np.int32), pieces, lag=result.lag,
                                                  n_markov=result.n_markov_states, connectivity=s["connectivity"],
                                                  tol=_boot_tol(result), maxiter=s["maxiter"],
                                                  count_mode=s["count_mode"], f_init=result.f_k,
                                                  states=result.markov_states,
                                                  start=result.tram_model)
        except (ValueError, RuntimeError):
            return None
    w = np.exp(log_w)
    return (w, model) if ok and np.all(np.isfinite(w)) else None


def tram_bootstrap(result: ReweightResult, n_boot: int, *, seed: int = 0
                   ) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]]:
    r"""TRAM re-estimated on ``n_boot`` bootstrap samples of its trajectories.

    Whole trajectories are drawn with replacement, the unbiased run's among
    themselves and the biased runs' among themselves (each keeps its
    ensemble, so the unbiased counts stay unbiased); each sample is refitted
    as in :func:`reweighted_fes` (module docstring).  Returns, per
    sample that converged, the unbiased frame weights (copies summed,
    :math:`\sum_n w_n = 1`), TRAM's unbiased transition matrix, its rows'
    Markov states and the sample's unbiased transition counts on them
    (``None`` without an unbiased run; see :class:`ReweightResult`).
    Samples that failed are left out.
    """
    if result.method != "tram":
        raise LssError("tram_bootstrap needs a TRAM result (tram_weights)")
    n_boot = positive_int(n_boot, "n_boot", minimum=0)
    units = _units(result, "runs", 2)
    strata = np.array([int(result.run_of_frame[idx[0]] != result.unbiased_run) for idx in units])
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        rep = _replicate_weights(result, units, strata, rng)
        if rep is not None:
            w, model = rep
            out.append((w, *_unbiased_matrix(model, result.reduced_bias)[1:]))
    return out


@dataclass
class ReweightedProfile(FreeEnergyProfile):
    r"""A :class:`~lss_engine.kinetics.fes.FreeEnergyProfile` whose errors come from a bootstrap of the reweighting.

    Attributes
    ----------
    edges, free_energy, errors, density, counts, kT
        As in :class:`~lss_engine.kinetics.fes.FreeEnergyProfile`; ``errors``
        are the bootstrap errors (``n_blocks`` is 0 then).
    n_boot
        Bootstrap samples that gave weights (``errors`` is NaN below two).
    n_boot_failed
        Bootstrap samples whose estimator did not converge (left out).
    resample
        ``"runs"`` or ``"blocks"`` (see :func:`reweighted_fes`); ``"none"``
        when the errors are :func:`~lss_engine.kinetics.fes.free_energy`'s
        block errors with the weights held fixed.
    method
        The reweighting estimator (``"mbar"``, ``"tram"``, or ``"weights"``).
    effective_sample_size
        Kish's :math:`1/\sum_n w_n^2` of the weights behind the profile.
    """

    n_boot: int = 0
    n_boot_failed: int = 0
    resample: str = "none"
    method: str = "weights"
    effective_sample_size: float = float("nan")

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.update(jsonable({"n_boot": self.n_boot, "n_boot_failed": self.n_boot_failed,
                             "resample": self.resample, "method": self.method,
                             "effective_sample_size": self.effective_sample_size}))
        return out


def reweighted_fes(values: Any, weights: ReweightResult | np.ndarray, bins: Any = 50, kT: float = 1.0, *,
                   range: Sequence[tuple[float, float]] | None = None, n_boot: int = 100, seed: int = 0,
                   resample: str = "runs", n_blocks: int = 10) -> ReweightedProfile:
    r"""Unbiased free-energy profile of a coordinate from biased frames, with bootstrap errors.

    :math:`F_b = -kT \ln p_b` (minimum 0) of the histogram of ``values``
    weighted by the unbiased weights (:func:`lss_engine.kinetics.fes.free_energy`),
    and :math:`σ_{F_b} = kT\,\operatorname{std}_r(p^{(r)}_b)/p_b` over
    ``n_boot`` bootstrap samples that re-estimate the weights (module
    docstring).

    Parameters
    ----------
    values
        ``(N,)`` (1-D profile) or ``(N, 2)`` (2-D) coordinate of every frame,
        in the pooled order of the reweighting input (e.g. φ in radians).
    weights
        A :class:`ReweightResult` (bootstrap errors), or a plain ``(N,)``
        weight array: then the errors are
        :func:`~lss_engine.kinetics.fes.free_energy`'s 5-block errors with
        the weights held fixed (``resample="none"``).
    bins
        Number of bins (per dimension) or edges, as :func:`~lss_engine.kinetics.fes.free_energy`
        (1-D: an edge array is accepted).
    kT
        Multiply :math:`-\ln p` by this (1.0: the profile in kT; the biases'
        ``kT`` for kJ/mol).
    range
        ``[(lo, hi)]`` per dimension (e.g. ``[(-π, π)]`` for a torsion);
        default: the data's extent.
    n_boot
        Bootstrap samples (0: no errors, NaN).
    seed
        Seed of the bootstrap's ``numpy.random.default_rng``.
    resample
        ``"runs"``: whole runs (TRAM: trajectories) drawn with replacement
        from all of them; right when runs are exchangeable draws (e.g.
        explorer walkers with random targets), but a sample that misses the
        only run of a window loses that window's coverage.  ``"blocks"``:
        each run cut into ``n_blocks`` contiguous blocks, drawn with
        replacement within the run (every bias keeps its frame count; right
        for umbrella windows; blocks must be longer than the correlation
        time).
    n_blocks
        Blocks per run for ``resample="blocks"``.

    Returns
    -------
    ReweightedProfile
    """
    kT = positive_float(kT, "kT")
    try:
        X = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise LssError("values must be a numeric (N,) or (N, 2) array") from None
    if X.size and not np.all(np.isfinite(X)):
        raise NonFiniteError("values contain NaN or Inf")
    X = as_trajectories(X, dtype=float, ndim=2, name="values")[0]
    if X.shape[1] == 1 and np.ndim(bins) == 1:   # one edge array, as free_energy_1d takes it
        bins = [np.asarray(bins, dtype=float)]
    result = weights if isinstance(weights, ReweightResult) else None
    if result is None:
        w = np.asarray(weights, dtype=float)
        if w.ndim != 1:
            raise LssError(f"weights must be a ReweightResult or one weight per frame, got shape {w.shape}")
        if not np.all(np.isfinite(w)):
            raise NonFiniteError("weights contain NaN or Inf")
    else:
        w = result.weights
    if len(X) != len(w):
        raise LssError(f"values have {len(X)} frames, the weights {len(w)}")
    if X.shape[1] not in (1, 2):
        raise LssError(f"free-energy profiles are 1-D or 2-D, got {X.shape[1]} columns")
    if range is not None and X.shape[1] == 1 and np.ndim(range) == 1:
        range = [tuple(range)]
    ess = float(1.0 / np.sum((w / w.sum()) ** 2)) if w.sum() > 0 else float("nan")
    if result is None:
        prof = free_energy(X, bins, range=range, weights=w, kT=kT)
        return ReweightedProfile(**vars(prof), method="weights", effective_sample_size=ess)

    n_boot = positive_int(n_boot, "n_boot", minimum=0)
    if resample not in _RESAMPLE:
        raise LssError(f"resample must be one of {_RESAMPLE}, got {resample!r}")
    n_blocks = positive_int(n_blocks, "n_blocks", minimum=2)
    prof = free_energy(X, bins, range=range, weights=w, n_blocks=2, kT=kT)
    units = _units(result, resample, n_blocks)
    if resample == "runs":
        strata = np.zeros(len(units), dtype=np.int64)
    else:
        strata = np.array([result.run_of_frame[idx[0]] for idx in units])
    rng = np.random.default_rng(seed)
    densities, failed = [], 0
    for _ in np.arange(n_boot):
        rep = _replicate_weights(result, units, strata, rng)
        if rep is None:
            failed += 1
            continue
        densities.append(free_energy(X, prof.edges, weights=rep[0], n_blocks=2).density)
    p = prof.density
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if len(densities) >= 2:
            D = np.stack(densities)
            D = np.where(np.isfinite(D), D, 0.0)     # a replicate with no weight in range: density 0
            sigma_p = np.std(D, axis=0, ddof=1)
            err = np.where(p > 0, kT * sigma_p / np.where(p > 0, p, 1.0), np.nan)
        else:
            err = np.full(p.shape, np.nan)
    fields = dict(vars(prof), errors=err, n_blocks=0)
    return ReweightedProfile(**fields, n_boot=len(densities), n_boot_failed=failed, resample=resample,
                             method=result.method, effective_sample_size=ess)
