"""The ``timescales`` ranker's numerics: the first-order variance of the implied timescales, and where it points."""
import numpy as np

from lss_engine.campaign.rankers import RankInput, rank, timescale_variance
from lss_engine.kinetics.msm import count_matrix


def _double_well_chain(n: int = 17, height: float = 4.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Metropolis birth–death chain on U(x) = h (x² − 1)² (kT) over x ∈ [−1.6, 1.6]: (U, T, π)."""
    x = np.linspace(-1.6, 1.6, n)
    U = height * (x ** 2 - 1) ** 2
    T = np.zeros((n, n))
    for i in range(n):
        for j in (i - 1, i + 1):
            if 0 <= j < n:
                T[i, j] = 0.5 * min(1.0, np.exp(-(U[j] - U[i])))
        T[i, i] = 1.0 - T[i].sum()
    pi = np.exp(-U)
    return U, T, pi / pi.sum()


def test_timescale_variance_matches_the_dirichlet_posterior_by_monte_carlo():
    """Σ_i q_ik against the spread of t_k over 20 000 transition matrices drawn row by row from the
    Dirichlet posterior of the counts (the covariance the formula assumes), for the two slow processes
    of a four-state chain with ~2 000 counts per row (symmetric counts, so the reversible estimate is
    C/rowsum and the posterior's mean).  The first-order expansion is off by O(1/n) ≈ 0.1 %,
    the Monte Carlo variance has a relative SE of √(2/20 000) = 1 %: 6 % is 6 SE."""
    C = np.array([[1800., 150., 40., 0.],  # symmetric counts: a reversible chain with two slow processes
                  [150., 1700., 0., 120.],
                  [40., 0., 2400., 60.],
                  [0., 120., 60., 2200.]])
    T = C / C.sum(axis=1, keepdims=True)
    q, n = timescale_variance(C, 2)
    assert np.allclose(n, C.sum(axis=1))
    rng = np.random.default_rng(0)
    draws = np.stack([rng.dirichlet(C[i], size=20000) for i in range(4)], axis=1)  # (m, 4, 4)
    lam = np.sort(np.linalg.eigvals(draws).real, axis=1)[:, ::-1][:, 1:3]
    t = -1.0 / np.log(lam)
    relative = t.var(axis=0) / (-1.0 / np.log(np.sort(np.linalg.eigvals(T).real)[::-1][1:3])) ** 2
    assert np.allclose(q.sum(axis=0), relative, rtol=0.06), (q.sum(axis=0), relative)


def test_timescale_variance_points_beside_the_barrier_and_not_into_the_wells():
    """A symmetric double well (barrier 4 kT): with equilibrium counts the rows that most shrink Var t₂
    sit just beside the barrier top on both sides (the top itself is the eigenvector's node, where a
    row's error moves λ₂ only to second order); the well bottoms score < 1 % of the best.  With
    the same counts in every row (an adaptive campaign's) the slopes still lead (the well bottoms
    score 0.20 of the best: < 0.25)."""
    U, T, pi = _double_well_chain()
    top = int(np.argmax(U[3:-3])) + 3
    for counts, share in ((1e6 * pi[:, None] * T, 0.01), (1e3 * T, 0.25)):
        q, n = timescale_variance(counts, 1)
        gain = q.sum(axis=1) / (n + 2)
        best = np.argsort(-gain)[:2]
        assert set(np.abs(best - top)) <= {1, 2, 3}, (best, top)
        assert np.sign(best[0] - top) != np.sign(best[1] - top)  # one on each side
        wells = np.flatnonzero(U == U.min())
        assert np.all(gain[wells] < share * gain.max())


def test_timescales_ranker_scores_frames_by_their_cell_and_unknown_cells_as_the_best():
    """Frames inherit their cell's score; a cell no unbiased walker has left (outside the connected set)
    scores as the best known cell; without any transition the ranker falls back to 1/N_c."""
    U, T, pi = _double_well_chain(n=9, height=3.0)
    rng = np.random.default_rng(1)
    walk = [4]
    for _ in range(20000):
        walk.append(rng.choice(9, p=T[walk[-1]]))
    walk = np.array(walk)
    labels = np.concatenate([walk, [9, 9, 9]])  # cell 9: three frames of an explorer only
    latent = rng.normal(size=(len(labels), 1))
    centers = np.zeros((10, 1))
    inp = RankInput(latent=latent, labels=labels, centers=centers, candidates=np.arange(len(labels)), rng=rng,
                    dtrajs=[walk], lag=1)
    scores = rank("timescales", inp)
    per_cell = {int(c): np.unique(np.round(scores[labels == c] / scores.max(), 9)) for c in np.unique(labels)}
    assert all(len(v) == 1 for v in per_cell.values())
    q, n = timescale_variance(count_matrix(walk, 1, n_states=10), 1)
    assert np.isnan(q[9]).all() and per_cell[9][0] >= max(v[0] for c, v in per_cell.items() if c != 9)
    inp.dtrajs = [np.zeros(5, int)]
    assert np.allclose(rank("timescales", inp), rank("counts", inp))
