r"""Which frames to restart from: rankers over latent cells, and a diverse batch.

Every ranker sees one :class:`RankInput` — the campaign's frames in the
current model's latent space, cut into cells by k-means — and returns one
score per candidate frame (higher: restart there).  Candidates are always
real frames (ones whose full-system positions were saved).
:func:`select_batch` then picks the batch: the best-scored candidates,
spread out in latent space.

Rankers
-------
``counts`` (HTMD's :math:`1/M_c`)
    :math:`s = 1/N_c`, with :math:`N_c` the frames in the candidate's cell.
``ucb`` (UCB1 over cells)
    Each cell is an arm; a walker started from cell :math:`c` earned the
    reward :math:`r \in [0, 1]`: the share of its frames that fell in *rare*
    cells (fewer frames than the median cell).  With :math:`n_c` walkers
    started from :math:`c`, :math:`n` in all,
    :math:`s = \bar r_c + C\sqrt{2\ln n / n_c}` (unplayed arms: :math:`+\infty`,
    ties broken by :math:`1/N_c`).
``uncertainty`` (the LSS paper's "known unknowns")
    An ensemble of :math:`m` encoders trained on the same data with different
    seeds, each aligned to the first (:func:`align_gauge`).  The disagreement
    at a frame is :math:`\sigma(x) = \sqrt{\sum_k \operatorname{Var}_m
    \psi_k(x)}`; :math:`s = \sigma(x)/\sqrt{N_c}`: uncertain *and* rarely
    sampled.
``dream`` (the campaign's own generative simulator)
    The campaign's latent propagator (an MDN trained on this round's latent
    trajectories) runs :math:`W_d` synthetic walkers of :math:`T_d` steps from
    each candidate; :math:`s` is the mean over their frames of
    :math:`1/N_{c(\psi)}`, with frames farther from every cell centre than
    the largest cell radius counted as a new cell (:math:`N = 1`): the
    frames from which the model *dreams* of reaching rare or unseen regions.
``timescales`` (the kinetic model's own error bars; Singhal & Pande, J. Chem. Phys. 123, 204909
(2005); Hinrichs & Pande, J. Chem. Phys. 126, 244101 (2007))
    A reversible MSM on the cells from the unbiased walkers' transitions at
    the encoder's lag; row :math:`i`'s first-order share :math:`q_{ik}` of
    the relative variance :math:`\operatorname{Var} t_k / t_k^2` of the
    :math:`d` leading implied timescales (:func:`timescale_variance`) falls
    as :math:`1/(n_i + 1)` with the row's :math:`n_i` counts, so one more
    count removes :math:`s_i = \sum_k q_{ik} / (n_i + 2)`: the score.
    It is largest on both sides of a barrier (where the eigenvectors change
    sign within a row's reach), where the rates, and with them the
    populations, are least known; cells outside the MSM's connected set
    score as the best cell.  Adaptive data estimate equilibrium through
    exactly this model (:mod:`.estimates`), so this ranker spends MD where
    the estimate is weakest rather than where frames are fewest.
``random``
    Uniform scores (a control).

Plain MD (``continue``) is not a ranker: each walker continues from its own
last state (see :mod:`.driver`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["RankInput", "align_gauge", "rank", "select_batch", "stratified_subsample", "timescale_variance",
           "unbiased_first", "RANKER_FUNCTIONS"]


@dataclass
class RankInput:
    """What a ranker sees.

    Attributes
    ----------
    latent
        ``(n_frames, d)``: every committed frame of the campaign, pooled.
    labels
        ``(n_frames,)``: each frame's cell.
    centers
        ``(n_cells, d)``: the cells' centres.
    candidates
        Indices into ``latent`` of the frames that can seed a walker.
    seeds_cells, rewards
        UCB: for each earlier walker, the cell of its seed frame and its
        reward in [0, 1] (see the module docstring).
    ensemble
        ``(m, n_candidates, d)``: the candidates' latent coordinates under
        every ensemble member (gauge-aligned), or ``None``.
    dream
        ``f(starts (n, d)) -> (n, walkers, steps, d)``: the latent simulator, or ``None``.
    dtrajs, lag
        ``timescales``: the cells of each unbiased walker's frames, and the
        MSM's lag in frames.
    """

    latent: np.ndarray
    labels: np.ndarray
    centers: np.ndarray
    candidates: np.ndarray
    rng: np.random.Generator
    seeds_cells: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    rewards: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ensemble: np.ndarray | None = None
    dream: Callable[[np.ndarray], np.ndarray] | None = None
    ucb_c: float = 1.0
    dtrajs: list[np.ndarray] | None = None
    lag: int = 1

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.centers)).astype(float)


def _inverse_counts(inp: RankInput) -> np.ndarray:
    return 1.0 / np.maximum(inp.counts[inp.labels[inp.candidates]], 1.0)


def _ucb(inp: RankInput) -> np.ndarray:
    n_cells = len(inp.centers)
    plays = np.bincount(inp.seeds_cells, minlength=n_cells).astype(float)
    total = np.bincount(inp.seeds_cells, weights=inp.rewards, minlength=n_cells)
    n = max(plays.sum(), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        arm = np.where(plays > 0, total / np.maximum(plays, 1) + inp.ucb_c * np.sqrt(2 * np.log(n) / plays),
                       np.inf)
    score = arm[inp.labels[inp.candidates]]
    tie = _inverse_counts(inp)  # < 1: only orders candidates within one arm value
    return np.where(np.isinf(score), 1e6, score) + 1e-3 * tie


def _uncertainty(inp: RankInput) -> np.ndarray:
    if inp.ensemble is None or len(inp.ensemble) < 2:
        raise ValueError("the uncertainty ranker needs an ensemble of at least 2 encoders (model.ensemble >= 2)")
    sigma = np.sqrt(np.var(inp.ensemble, axis=0).sum(axis=-1))
    return sigma * np.sqrt(_inverse_counts(inp))


def _dream(inp: RankInput) -> np.ndarray:
    if inp.dream is None:
        raise ValueError("the dream ranker needs the campaign's latent simulator")
    paths = inp.dream(inp.latent[inp.candidates])  # (n, walkers, steps, d)
    flat = paths.reshape(-1, paths.shape[-1])
    dist = np.linalg.norm(flat[:, None, :] - inp.centers[None], axis=-1)
    cell = dist.argmin(axis=1)
    radius = np.linalg.norm(inp.latent - inp.centers[inp.labels], axis=1).max()  # the largest cell's radius
    new = dist[np.arange(len(flat)), cell] > radius
    value = np.where(new, 1.0, 1.0 / np.maximum(inp.counts[cell], 1.0))
    return value.reshape(paths.shape[0], -1).mean(axis=1)


def timescale_variance(C: np.ndarray, n_processes: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Each row's first-order share of the relative variances :math:`\operatorname{Var} t_k / t_k^2`.

    The reversible MSM of the counts ``C`` on their largest connected set
    (:math:`T`, :math:`π`, right eigenvectors :math:`r_k` with
    :math:`\sum_i π_i r_{ki}^2 = 1`); row :math:`i`'s posterior covariance
    :math:`(\mathrm{diag}\,T_i - T_i T_i^\top)/(n_i + 1)` (the
    Dirichlet posterior of :math:`n_i = \sum_j c_{ij}` counts) and the
    sensitivity :math:`\partial λ_k/\partial T_{ij} = π_i r_{ki} r_{kj}` give
    (Hinrichs & Pande 2007)

    .. math:: q_{ik} = \frac{(π_i r_{ki})^2 \operatorname{Var}_{T_i}(r_k)}
                        {(n_i + 1)\,(λ_k \ln λ_k)^2}, \qquad
              \frac{\operatorname{Var} t_k}{t_k^2} ≈ \sum_i q_{ik},

    with :math:`\operatorname{Var}_{T_i}(r_k) = \sum_j T_{ij} r_{kj}^2 -
    (\sum_j T_{ij} r_{kj})^2` and :math:`t_k = -τ/\ln λ_k`.

    Parameters
    ----------
    C
        ``(n, n)`` transition counts at the lag.
    n_processes
        How many leading processes (eigenvalues :math:`λ_2, λ_3, \dots`).

    Returns
    -------
    q : ndarray, shape (n, n_processes)
        NaN for states outside the connected set (and everywhere when it has
        fewer than two states); 0 for a process with :math:`λ_k \notin (0, 1)`.
    n : ndarray, shape (n,)
        Counts :math:`n_i` in each row within the connected set.
    """
    from ..kinetics.msm import (largest_connected_set, reversible_eigenvectors, stationary_distribution,
                                transition_matrix_reversible)

    C = np.asarray(C, dtype=float)
    q, n = np.full((len(C), n_processes), np.nan), np.zeros(len(C))
    active = largest_connected_set(C)
    if len(active) < 2:
        return q, n
    Ca = C[np.ix_(active, active)]
    # a score, not an estimate: 10^4 iterations (the fixed point usually converges in far fewer; on nearly
    # disconnected cells of the four-state benchmark it had not in 10^6, which cost tens of seconds per round)
    T = transition_matrix_reversible(Ca, maxiter=10_000)
    pi = stationary_distribution(T)
    lam, r = reversible_eigenvectors(T, pi, 1 + n_processes)
    lam, r = lam[1:], r[:, 1:]
    spread = np.maximum(T @ r ** 2 - (T @ r) ** 2, 0.0)  # Var_{T_i}(r_k)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where((lam > 0) & (lam < 1), 1.0 / (lam * np.log(lam)) ** 2, 0.0)
    n[active] = Ca.sum(axis=1)
    q[active] = 0.0
    q[active, :len(lam)] = (pi[:, None] * r) ** 2 * spread * scale / (n[active, None] + 1.0)
    return q, n


def _timescales(inp: RankInput) -> np.ndarray:
    if not inp.dtrajs:
        raise ValueError("the timescales ranker needs the unbiased walkers' cell trajectories")
    from ..kinetics.msm import count_matrix

    q, n = timescale_variance(count_matrix(inp.dtrajs, inp.lag, n_states=len(inp.centers)), inp.latent.shape[1])
    cell = q.sum(axis=1) / (n + 2.0)  # q ∝ 1/(n+1) → 1/(n+2): what one more count in the row removes
    if not np.isfinite(cell).any():  # no kinetic model yet (one cell, or no transitions): the rarest cells
        return _inverse_counts(inp)
    best = np.nanmax(cell)
    cell = np.where(np.isfinite(cell), cell, best)  # outside the connected set: unknown rows, as good as the best
    return cell[inp.labels[inp.candidates]] + 1e-9 * best * _inverse_counts(inp)  # ties: the rarer cell


def _random(inp: RankInput) -> np.ndarray:
    return inp.rng.random(len(inp.candidates))


RANKER_FUNCTIONS: dict[str, Callable[[RankInput], np.ndarray]] = {
    "counts": _inverse_counts, "ucb": _ucb, "uncertainty": _uncertainty, "dream": _dream, "timescales": _timescales,
    "random": _random}


def rank(name: str, inp: RankInput) -> np.ndarray:
    """Scores of ``inp.candidates`` under the ranker ``name`` (higher: restart there)."""
    return np.asarray(RANKER_FUNCTIONS[name](inp), dtype=float)


def select_batch(points: np.ndarray, scores: np.ndarray, k: int, *, diversity: str = "farthest",
                 pool: int | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices of ``k`` candidates: the best-scored ones, spread out in latent space.

    ``diversity="farthest"``: from the ``pool`` best candidates (default
    ``4k``; ties in score broken at random) take the best one, then
    repeatedly the one farthest (in latent distance) from those taken — FAST's
    point that a batch of neighbours is one walker's worth of information.
    ``"none"``: the ``k`` best.  Fewer than ``k`` candidates are reused in turn.
    """
    points, scores = np.asarray(points, float), np.asarray(scores, float)
    n = len(scores)
    if n == 0:
        raise ValueError("no candidate frames to select from")
    rng = rng or np.random.default_rng(0)
    order = np.lexsort((rng.random(n), -scores))  # best first, random among equals
    if diversity == "none" or n <= 1:
        return order[np.arange(k) % n]
    top = order[:min(n, pool or 4 * k)]
    chosen = [top[0]]
    gap = np.linalg.norm(points[top] - points[top[0]], axis=1)
    while len(chosen) < min(k, len(top)):
        nxt = int(np.argmax(gap))
        chosen.append(top[nxt])
        gap = np.minimum(gap, np.linalg.norm(points[top] - points[top[nxt]], axis=1))
    chosen = np.array(chosen)
    return chosen[np.arange(k) % len(chosen)]


def unbiased_first(cells: np.ndarray, biased: np.ndarray) -> np.ndarray:
    """Which candidates may seed under ``[ranker] seed_from = "unbiased"``: a mask over the candidates.

    A candidate from a biased explorer is kept only in a cell where no
    candidate from an unbiased walker lies; unbiased candidates are always kept.

    Parameters
    ----------
    cells
        ``(n,)`` cell of each candidate.
    biased
        ``(n,)`` whether each candidate is an explorer's frame.
    """
    cells, biased = np.asarray(cells), np.asarray(biased, dtype=bool)
    return ~biased | ~np.isin(cells, cells[~biased])


def stratified_subsample(cells: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of at most ``k`` entries of ``cells``, spread evenly over the cells.

    Round robin over the cells in random order, a random member of each in
    turn, so that every cell has a candidate whenever ``k`` is at least the
    number of cells.  A uniform subsample would miss exactly the rarely
    visited cells the rankers look for (a cell of 3 frames among 4000 has a
    7 % chance to be in a uniform subsample of 300).
    """
    cells = np.asarray(cells)
    if len(cells) <= k:
        return np.arange(len(cells))
    order = rng.permutation(len(cells))
    cells_in_order = cells[order]
    # rank of each entry within its cell (0 for the first member met in random order)
    sort = np.argsort(cells_in_order, kind="stable")
    first = np.searchsorted(cells_in_order[sort], cells_in_order[sort], side="left")
    rank_in_cell = np.empty(len(cells), int)
    rank_in_cell[sort] = np.arange(len(cells)) - first
    cell_order = rng.permutation(int(cells.max()) + 1)[cells_in_order]  # random order of cells within a rank
    take = np.lexsort((cell_order, rank_in_cell))[:k]
    return np.sort(order[take])


def align_gauge(reference: np.ndarray, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permutation and signs that map ``latent``'s coordinates onto ``reference``'s (same frames).

    SRV/VAMP coordinates are defined up to sign, and near-degenerate ones up
    to order.  With :math:`\\rho_{ij}` the correlation of reference
    coordinate :math:`i` and new coordinate :math:`j`, the assignment
    maximising :math:`\\sum_i |\\rho_{i\\pi(i)}|` (Hungarian) gives the order
    and :math:`\\operatorname{sign}\\rho_{i\\pi(i)}` the signs:
    ``aligned = latent[:, perm] * signs``.
    """
    from scipy.optimize import linear_sum_assignment

    reference, latent = np.asarray(reference, float), np.asarray(latent, float)
    d = min(reference.shape[1], latent.shape[1])
    a = (reference[:, :d] - reference[:, :d].mean(0)) / (reference[:, :d].std(0) + 1e-12)
    b = (latent - latent.mean(0)) / (latent.std(0) + 1e-12)
    rho = a.T @ b / len(a)
    rows, cols = linear_sum_assignment(-np.abs(rho))
    perm = np.arange(latent.shape[1])
    perm[:d] = cols[np.argsort(rows)]
    rest = [j for j in range(latent.shape[1]) if j not in set(perm[:d].tolist())]
    perm[d:] = rest
    signs = np.ones(latent.shape[1])
    signs[:d] = np.sign(rho[np.arange(d), perm[:d]])
    signs[signs == 0] = 1.0
    return perm, signs
