r"""Markov state models and Koopman matrices from trajectories.

Discrete trajectories are integer arrays of state labels ``0 .. n-1``; negative
labels mean "unassigned" (e.g. frames before the first core visit) and no pair
that touches one is counted.  Several trajectories are given as a list; a pair
``(x_t, x_{t+τ})`` never spans two trajectories.

Estimators
----------
Count matrix (sliding window) at lag :math:`τ` (frames):

.. math:: c_{ij}(τ) = \sum_{\text{trajs}} \sum_{t=0}^{N-τ-1} 1[x_t = i]\, 1[x_{t+τ} = j].

Non-reversible maximum-likelihood estimate: :math:`T_{ij} = c_{ij} / c_i`,
:math:`c_i = \sum_j c_{ij}`.

Reversible maximum-likelihood estimate (Bowman et al. 2009; Prinz et al.
2011, J. Chem. Phys. 134, 174105): maximise :math:`\sum_{ij} c_{ij}\ln T_{ij}`
subject to detailed balance.  With :math:`x_{ij} = π_i T_{ij}` symmetric, the
optimum satisfies the fixed point

.. math:: x_{ij} = \frac{c_{ij} + c_{ji}}{c_i / x_i + c_j / x_j},
          \qquad x_i = \sum_j x_{ij},

which is iterated on :math:`x_i` (:math:`x_i \leftarrow \sum_j (c_{ij} +
c_{ji}) / (c_i/x_i + c_j/x_j)`, then normalised; accelerated with SQUAREM,
Varadhan & Roland 2008) until the largest relative change of :math:`x` in one
accelerated cycle is below ``tol``; then :math:`T_{ij} = x_{ij}/x_i` and
:math:`π = x / \sum_i x_i`.

Both estimators are applied to the largest *strongly* connected set of the
count graph (states that can reach each other in both directions); ties in
size are broken by the larger number of counts.

Implied timescales: :math:`t_i = -τ\,Δt / \ln λ_i(τ)` for the eigenvalues
:math:`1 = λ_0 ≥ |λ_1| ≥ \dots` of :math:`T(τ)` (``inf`` for :math:`λ_i ≥ 1`,
NaN for a real :math:`λ_i ≤ 0`; the rule of :func:`lss_engine._helpers.implied_timescales`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Union

import numpy as np
import scipy.linalg
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from .._helpers import implied_timescales
from ..errors import LssError
from ._util import Trajectories, as_lag, as_trajectories, check_dt, jsonify

StateSet = Union[int, Iterable[int]]

__all__ = [
    "MSM",
    "PCCA",
    "count_matrix",
    "largest_connected_set",
    "transition_matrix_reversible",
    "transition_matrix_nonreversible",
    "transition_matrix",
    "stationary_distribution",
    "is_reversible",
    "eigenvalues",
    "reversible_eigenvectors",
    "timescales_from_eigenvalues",
    "estimate_msm",
    "koopman_from_features",
    "mfpt_msm",
    "pcca",
]


# --------------------------------------------------------------------------- counts
def _n_states_of(dtrajs: list[np.ndarray], n_states: int | None) -> int:
    top = max((int(d.max()) for d in dtrajs if d.size), default=-1)
    if n_states is None:
        return top + 1
    if top >= n_states:
        raise LssError(f"label {top} found but n_states={n_states}")
    return int(n_states)


def count_matrix(dtrajs: Trajectories, lag: int, *, n_states: int | None = None) -> np.ndarray:
    r"""Sliding-window transition counts :math:`c_{ij}(τ)`.

    Parameters
    ----------
    dtrajs
        One integer trajectory or a list of them; negative labels are skipped.
    lag
        Lag time :math:`τ` in frames (>= 1).
    n_states
        Size of the state space; default ``max label + 1``.

    Returns
    -------
    ndarray, shape (n_states, n_states), float
        ``C[i, j]`` = number of pairs ``(x_t = i, x_{t+τ} = j)`` within a trajectory.
    """
    dtrajs = as_trajectories(dtrajs, dtype=int, ndim=1, name="dtrajs")
    lag = int(lag)
    if lag < 1:
        raise LssError(f"lag must be >= 1 frame, got {lag}")
    n = _n_states_of(dtrajs, n_states)
    C = np.zeros(n * n, dtype=float)
    for d in dtrajs:
        if len(d) <= lag:
            continue
        a, b = d[:-lag], d[lag:]
        ok = (a >= 0) & (b >= 0)
        C += np.bincount(a[ok] * n + b[ok], minlength=n * n)
    return C.reshape(n, n)


def largest_connected_set(C: np.ndarray, *, directed: bool = True) -> np.ndarray:
    """Indices of the largest (strongly, if ``directed``) connected set of ``C > 0``.

    Ties in the number of states are broken by the larger total count.
    """
    C = np.asarray(C, dtype=float)
    if C.shape[0] == 0:
        return np.zeros(0, dtype=int)
    n_comp, labels = connected_components(csr_matrix(C > 0), directed=directed,
                                          connection="strong" if directed else "weak")
    sizes = np.bincount(labels, minlength=n_comp)
    weight = np.bincount(labels, weights=C.sum(axis=1), minlength=n_comp)
    best = max(range(n_comp), key=lambda c: (sizes[c], weight[c]))
    return np.flatnonzero(labels == best)


# ---------------------------------------------------------------- transition matrices
def transition_matrix_nonreversible(C: np.ndarray) -> np.ndarray:
    r"""Row-normalised counts :math:`T_{ij} = c_{ij}/\sum_k c_{ik}` (rows without
    counts become a self-loop)."""
    C = np.asarray(C, dtype=float)
    rows = C.sum(axis=1, keepdims=True)
    T = np.divide(C, rows, out=np.zeros_like(C), where=rows > 0)
    empty = rows[:, 0] == 0
    T[empty, empty] = 1.0
    return T


def _reversible_fixed_point(C: np.ndarray, maxiter: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    n = C.shape[0]
    if n == 1:
        return np.ones((1, 1)), np.ones(1)
    S = C + C.T
    c = C.sum(axis=1)
    if np.any(c <= 0):
        raise LssError("reversible MLE needs counts out of every state; restrict C to its "
                       "largest connected set first")
    i, j = np.nonzero(S)
    s = S[i, j]

    def update(x: np.ndarray) -> np.ndarray:
        r = c / x
        x_new = np.bincount(i, weights=s / (r[i] + r[j]), minlength=n)
        return x_new / x_new.sum()

    # SQUAREM-accelerated fixed-point iteration (Varadhan & Roland 2008): two
    # plain updates give the step r and curvature v, an extrapolated point is
    # taken when it stays positive, and one plain update stabilises it.
    x = S.sum(axis=1) / S.sum()
    converged = False
    change = np.inf
    for _ in range(int(maxiter)):
        x1 = update(x)
        x2 = update(x1)
        r1 = x1 - x
        v = x2 - x1 - r1
        nv = np.linalg.norm(v)
        x_ext = x2
        if nv > 0:
            alpha = min(-np.linalg.norm(r1) / nv, -1.0)
            cand = x - 2.0 * alpha * r1 + alpha * alpha * v
            if np.all(cand > 0):
                x_ext = cand / cand.sum()
        x_new = update(x_ext)
        change = np.max(np.abs(x_new - x) / x_new)
        x = x_new
        if change < tol:
            converged = True
            break
    if not converged:
        warnings.warn(f"reversible MLE did not converge to tol={tol:g} in {maxiter} iterations "
                      f"(last relative change {change:.3g})", RuntimeWarning, stacklevel=3)
    r = c / x
    X = np.zeros_like(S)
    X[i, j] = s / (r[i] + r[j])
    T = X / X.sum(axis=1, keepdims=True)
    return T, x / x.sum()


def transition_matrix_reversible(C: np.ndarray, *, maxiter: int = 1_000_000,
                                 tol: float = 1e-12) -> np.ndarray:
    r"""Reversible maximum-likelihood transition matrix of a connected count matrix.

    Fixed-point iteration of Bowman/Prinz (see module docstring); ``C`` must be
    strongly connected (use :func:`largest_connected_set`).
    """
    return _reversible_fixed_point(np.asarray(C, dtype=float), maxiter, tol)[0]


def transition_matrix(C: np.ndarray, *, reversible: bool = True, **kw: Any) -> np.ndarray:
    """Reversible MLE (``reversible=True``) or row-normalised estimate of ``C``."""
    if reversible:
        return transition_matrix_reversible(C, **kw)
    return transition_matrix_nonreversible(C)


def stationary_distribution(T: np.ndarray) -> np.ndarray:
    r"""Left eigenvector :math:`π^\top T = π^\top`, :math:`\sum π = 1`, of the
    eigenvalue closest to 1."""
    T = np.asarray(T, dtype=float)
    evals, evecs = scipy.linalg.eig(T.T)
    k = int(np.argmin(np.abs(evals - 1.0)))
    pi = np.real(evecs[:, k])
    pi = pi / pi.sum()
    return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()


def is_reversible(T: np.ndarray, pi: np.ndarray | None = None, *, atol: float = 1e-10) -> bool:
    r"""Whether :math:`π_i T_{ij} = π_j T_{ji}` to ``atol``."""
    T = np.asarray(T, dtype=float)
    pi = stationary_distribution(T) if pi is None else np.asarray(pi, dtype=float)
    F = pi[:, None] * T
    return bool(np.allclose(F, F.T, atol=atol, rtol=0))


def eigenvalues(T: np.ndarray, k: int | None = None, *, pi: np.ndarray | None = None) -> np.ndarray:
    r"""Eigenvalues of ``T`` sorted by decreasing modulus (first ``k``).

    A reversible ``T`` is symmetrised, :math:`D_π^{1/2} T D_π^{-1/2}`, and its
    real eigenvalues come from a symmetric solver; otherwise the result may be
    complex.
    """
    T = np.asarray(T, dtype=float)
    if pi is None:
        pi = stationary_distribution(T)
    if np.all(pi > 0) and is_reversible(T, pi):
        ev = np.linalg.eigvalsh(_symmetrized(T, pi))
    else:
        ev = np.linalg.eigvals(T)
        if np.all(np.abs(ev.imag) < 1e-12):
            ev = ev.real
    ev = ev[np.argsort(-np.abs(ev), kind="stable")]
    return ev if k is None else ev[:k]


def _symmetrized(T: np.ndarray, pi: np.ndarray) -> np.ndarray:
    r""":math:`D_π^{1/2} T D_π^{-1/2}`, symmetrised against round-off (symmetric for a reversible ``T``)."""
    s = np.sqrt(pi)
    M = s[:, None] * T / s[None, :]
    return 0.5 * (M + M.T)


def reversible_eigenvectors(T: np.ndarray, pi: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    r"""The ``k`` eigenvalues of largest modulus of a reversible ``T`` and its right eigenvectors.

    From the symmetric :math:`D_π^{1/2} T D_π^{-1/2} = V Λ V^\top`: right
    eigenvectors :math:`r_k = D_π^{-1/2} v_k`, normalised so that
    :math:`\sum_i π_i r_{ki}^2 = 1` (left ones are :math:`π ∘ r_k`).

    Returns
    -------
    eigenvalues : ndarray, shape (k,)
    r : ndarray, shape (n, k)
    """
    lam, v = np.linalg.eigh(_symmetrized(np.asarray(T, dtype=float), pi))
    order = np.argsort(-np.abs(lam))[:k]
    return lam[order], v[:, order] / np.sqrt(pi)[:, None]


def timescales_from_eigenvalues(evals: np.ndarray, lag: int, dt: float = 1.0) -> np.ndarray:
    r"""Implied timescales :math:`t_i = -τ Δt / \ln λ_i` (ps), by the package's one rule.

    See :func:`lss_engine._helpers.implied_timescales`: ``inf`` for
    :math:`λ_i \ge 1`, NaN for a real :math:`λ_i \le 0`, :math:`|λ_i|` for
    complex eigenvalues.
    """
    return implied_timescales(evals, lag * dt)


# ----------------------------------------------------------------------- MSM object
@dataclass
class MSM:
    """A Markov state model estimated at one lag time.

    Attributes
    ----------
    transition_matrix
        ``(n_active, n_active)`` row-stochastic matrix on the active set.
    stationary_distribution
        ``(n_active,)``.
    count_matrix
        Sliding-window counts restricted to the active set.
    active_set
        Labels (in the full state space) of the active states, ascending.
    n_states
        Size of the full state space the labels come from.
    lag
        Lag time in frames.
    dt
        Frame interval in ps.
    reversible
        Whether the reversible MLE was used.
    """

    transition_matrix: np.ndarray
    stationary_distribution: np.ndarray
    count_matrix: np.ndarray
    active_set: np.ndarray
    n_states: int
    lag: int
    dt: float = 1.0
    reversible: bool = True

    @property
    def lag_time(self) -> float:
        """Lag time in ps."""
        return self.lag * self.dt

    @property
    def n_active(self) -> int:
        return int(len(self.active_set))

    def eigenvalues(self, k: int | None = None) -> np.ndarray:
        """Eigenvalues sorted by decreasing modulus (including λ₀ = 1)."""
        return eigenvalues(self.transition_matrix, k, pi=self.stationary_distribution)

    def timescales(self, k: int | None = None) -> np.ndarray:
        """The ``k`` slowest implied timescales in ps (λ₀ excluded)."""
        ev = self.eigenvalues(None if k is None else k + 1)[1:]
        return timescales_from_eigenvalues(ev, self.lag, self.dt)

    def embedded_transition_matrix(self) -> np.ndarray:
        """``(n_states, n_states)`` matrix: T on the active set, zero rows/columns elsewhere."""
        full = np.zeros((self.n_states, self.n_states))
        full[np.ix_(self.active_set, self.active_set)] = self.transition_matrix
        return full

    def full_stationary_distribution(self) -> np.ndarray:
        """π over all ``n_states`` labels (zero outside the active set)."""
        full = np.zeros(self.n_states)
        full[self.active_set] = self.stationary_distribution
        return full

    def _to_active(self, states: StateSet) -> np.ndarray:
        labels = np.atleast_1d(np.asarray(list(states) if not np.isscalar(states) else [states], dtype=int))
        pos = np.searchsorted(self.active_set, labels)
        ok = (pos < len(self.active_set)) & (self.active_set[np.minimum(pos, len(self.active_set) - 1)] == labels)
        return pos[ok]

    def mfpt(self, source: StateSet, target: StateSet) -> float:
        """Mean first-passage time (ps) from ``source`` to ``target`` (labels); see :func:`mfpt_msm`.

        Labels outside the active set are ignored; raises if no target state is active.
        """
        a, b = self._to_active(source), self._to_active(target)
        if len(b) == 0 or len(a) == 0:
            raise LssError("source or target has no state in the MSM's active set")
        return mfpt_msm(self.transition_matrix, a, b, lag=self.lag, dt=self.dt,
                        stationary=self.stationary_distribution)

    def to_dict(self) -> dict:
        return jsonify({
            "lag": self.lag, "dt": self.dt, "lag_time": self.lag_time,
            "reversible": self.reversible, "n_states": self.n_states,
            "active_set": self.active_set, "transition_matrix": self.transition_matrix,
            "stationary_distribution": self.stationary_distribution,
            "count_matrix": self.count_matrix, "timescales": self.timescales(),
        })


def estimate_msm(dtrajs: Trajectories, lag: Any, *, reversible: bool = True,
                 n_states: int | None = None, dt: float = 1.0, maxiter: int = 1_000_000,
                 tol: float = 1e-12) -> MSM:
    """Estimate an MSM at ``lag`` on the largest strongly connected set.

    Parameters
    ----------
    dtrajs
        Integer trajectories (negative labels are unassigned frames).
    lag
        Frames (int) or a time (``"10ps"``, float in ps) that is a multiple of ``dt``.
    reversible
        Reversible MLE (default) or row-normalised counts.
    n_states
        Full state-space size (default ``max label + 1``).
    dt
        Frame interval in ps.
    """
    dt = check_dt(dt)
    lag = as_lag(lag, dt)
    C_full = count_matrix(dtrajs, lag, n_states=n_states)
    if C_full.sum() == 0:
        raise LssError(f"no transition pairs at lag {lag} frames (trajectories too short?)")
    active = largest_connected_set(C_full, directed=True)
    C = C_full[np.ix_(active, active)]
    if reversible:
        T, pi = _reversible_fixed_point(C, maxiter, tol)
    else:
        T = transition_matrix_nonreversible(C)
        pi = stationary_distribution(T)
    return MSM(T, pi, C, active, C_full.shape[0], lag, dt, reversible)


# ------------------------------------------------------------- Koopman from features
def koopman_from_features(trajs: Trajectories, lag: int, *, reversible: bool = False,
                          renormalize: bool | None = None, epsilon: float = 1e-10) -> np.ndarray:
    r"""Koopman matrix :math:`K(τ) = C_{00}^{-1} C_{0τ}` from soft memberships or features.

    With :math:`χ(t) ∈ \mathbb{R}^m` the feature (membership) vector of frame
    :math:`t`, the *non-mean-free* covariances are

    .. math:: C_{00} = \sum_t χ(t) χ(t)^\top,\qquad C_{0τ} = \sum_t χ(t) χ(t+τ)^\top,
              \qquad C_{ττ} = \sum_t χ(t+τ) χ(t+τ)^\top,

    summed over all pairs within each trajectory (VAMPnets, Mardt et al. 2018,
    Eq. 5).  ``reversible=True`` uses the symmetrised estimates
    :math:`\bar C_{00} = (C_{00} + C_{ττ})/2`, :math:`\bar C_{0τ} = (C_{0τ} +
    C_{0τ}^\top)/2`.  :math:`C_{00}^{-1}` is a pseudo-inverse that drops
    eigenvalues below ``epsilon`` × the largest one
    (:func:`lss_engine.models.vamp.koopman_from_moments`, the VAMPNet's solve too).

    For one-hot memberships :math:`K` equals the row-normalised count matrix.
    For memberships (non-negative rows summing to 1) the rows of :math:`K` sum
    to one up to round-off and are renormalised exactly (``renormalize=None``
    detects memberships; pass ``False`` for continuous features, where row
    sums have no meaning).

    Returns
    -------
    ndarray, shape (m, m)
    """
    X = as_trajectories(trajs, dtype=float, ndim=2)
    lag = int(lag)
    if lag < 1:
        raise LssError(f"lag must be >= 1 frame, got {lag}")
    m = X[0].shape[1]
    C00 = np.zeros((m, m))
    C0t = np.zeros((m, m))
    Ctt = np.zeros((m, m))
    n_pairs = 0
    for x in X:
        if len(x) <= lag:
            continue
        a, b = x[:-lag], x[lag:]
        C00 += a.T @ a
        C0t += a.T @ b
        Ctt += b.T @ b
        n_pairs += len(a)
    if n_pairs == 0:
        raise LssError(f"no pairs at lag {lag} frames (trajectories too short?)")
    if reversible:
        C00, C0t = 0.5 * (C00 + Ctt), 0.5 * (C0t + C0t.T)
    from ..models.vamp import koopman_from_moments  # the one Koopman solve (torch: imported on use)

    K = koopman_from_moments(C00 / n_pairs, C0t / n_pairs, rcond=epsilon)
    if renormalize is None:
        renormalize = all(np.all(x >= -1e-8) and np.allclose(x.sum(axis=1), 1.0, atol=1e-6) for x in X)
    if renormalize:
        rows = K.sum(axis=1, keepdims=True)
        K = np.divide(K, rows, out=K.copy(), where=np.abs(rows) > 1e-12)
    return K


# ------------------------------------------------------------------------ MSM MFPT
def _as_index_set(states: StateSet, n: int, name: str) -> np.ndarray:
    idx = np.unique(np.atleast_1d(np.asarray(list(states) if not np.isscalar(states) else [states], dtype=int)))
    if idx.size == 0 or idx.min() < 0 or idx.max() >= n:
        raise LssError(f"{name} must name states in 0..{n - 1}, got {states!r}")
    return idx


def mfpt_msm(T: np.ndarray, source: StateSet, target: StateSet, *, lag: int = 1, dt: float = 1.0,
             stationary: np.ndarray | None = None) -> float:
    r"""Mean first-passage time (ps) of a Markov chain from set A to set B.

    The hitting times :math:`m_i` (in steps of τ) solve

    .. math:: m_i = 0 \; (i ∈ B), \qquad m_i = 1 + \sum_j T_{ij} m_j \; (i ∉ B),

    i.e. :math:`(I - T_{\bar B\bar B})\, m_{\bar B} = \mathbf 1`.  The result is
    the stationary average over the source states,
    :math:`τΔt \sum_{i∈A} π_i m_i / \sum_{i∈A} π_i` (PyEMMA's convention; for a
    single source state it is just :math:`τΔt\, m_i`).
    """
    T = np.asarray(T, dtype=float)
    n = T.shape[0]
    a = _as_index_set(source, n, "source")
    b = _as_index_set(target, n, "target")
    if np.intersect1d(a, b).size:
        raise LssError("source and target sets overlap")
    rest = np.setdiff1d(np.arange(n), b)
    A = np.eye(len(rest)) - T[np.ix_(rest, rest)]
    try:
        m_rest = np.linalg.solve(A, np.ones(len(rest)))
    except np.linalg.LinAlgError as exc:
        raise LssError("target set is not reachable from every other state") from exc
    m = np.zeros(n)
    m[rest] = m_rest
    pi = stationary_distribution(T) if stationary is None else np.asarray(stationary, dtype=float)
    w = pi[a]
    w = w / w.sum() if w.sum() > 0 else np.full(len(a), 1.0 / len(a))
    return float(lag * dt * np.dot(w, m[a]))


# ---------------------------------------------------------------------------- PCCA
@dataclass
class PCCA:
    """Spectral clustering of an MSM into metastable sets.

    Attributes
    ----------
    memberships
        ``(n, m)`` soft memberships χ (rows sum to 1; may be slightly outside [0, 1]).
    assignments
        ``(n,)`` crisp set index per state: ``argmax`` of the memberships.
    """

    memberships: np.ndarray
    assignments: np.ndarray

    @property
    def n_sets(self) -> int:
        return int(self.memberships.shape[1])

    @property
    def sets(self) -> list[np.ndarray]:
        """State indices of each set."""
        return [np.flatnonzero(self.assignments == k) for k in range(self.n_sets)]

    def to_dict(self) -> dict:
        return jsonify({"memberships": self.memberships, "assignments": self.assignments})


def pcca(T: np.ndarray, n_sets: int, *, stationary: np.ndarray | None = None) -> PCCA:
    r"""PCCA+-like metastable sets from the ``n_sets`` dominant right eigenvectors.

    The dominant right eigenvectors :math:`Y ∈ \mathbb{R}^{n×m}` (first column
    constant) span the slow subspace; their rows form a simplex whose vertices
    are the most metastable states.  The vertices are found with the inner
    simplex algorithm (Deuflhard & Weber 2005: the row farthest from the
    origin, then repeatedly the row farthest from the span of those found), and
    the memberships are :math:`χ = Y\,Y_{\text{vertices}}^{-1}` — the initial
    guess of PCCA+ without its subsequent optimisation.  Each state is assigned
    to ``argmax`` of its memberships.  For a non-reversible ``T`` the real parts
    of the eigenvectors are used.
    """
    T = np.asarray(T, dtype=float)
    n = T.shape[0]
    if not 1 <= n_sets <= n:
        raise LssError(f"n_sets must be in 1..{n}, got {n_sets}")
    pi = stationary_distribution(T) if stationary is None else np.asarray(stationary, dtype=float)
    if np.all(pi > 0) and is_reversible(T, pi):
        s = np.sqrt(pi)
        M = s[:, None] * T / s[None, :]
        w, U = np.linalg.eigh(0.5 * (M + M.T))
        order = np.argsort(-w)
        Y = U[:, order] / s[:, None]
    else:
        w, V = np.linalg.eig(T)
        order = np.argsort(-np.abs(w), kind="stable")
        Y = np.real(V[:, order])
    Y = Y[:, :n_sets]
    Y[:, 0] = 1.0
    # inner simplex algorithm
    O = Y.copy()
    vertices = [int(np.argmax(np.linalg.norm(O, axis=1)))]
    O = O - O[vertices[0]]
    for _ in range(1, n_sets):
        d = np.linalg.norm(O, axis=1)
        v = int(np.argmax(d))
        vertices.append(v)
        u = O[v] / d[v]
        O = O - np.outer(O @ u, u)
    chi = Y @ np.linalg.pinv(Y[vertices])
    return PCCA(chi, np.argmax(chi, axis=1))
