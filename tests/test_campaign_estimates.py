"""lss_engine.campaign.estimates: MSM reweighting of restarted walkers against exact answers.

Two references:

* a synthetic reversible 4-state Markov chain with known π, MFPTs and
  eigenvalues, sampled as many short walkers that all start in the least
  populated state (the adaptive-sampling situation: the pooled frames are far
  from equilibrium);
* real OpenMM Brownian dynamics on the Prinz four-well toy, walkers seeded
  mostly in one well, against the analytic Boltzmann free energy
  :math:`-\\ln \\int_b e^{-βU}` and the Smoluchowski generator's slowest
  relaxation time.
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy.linalg import eigh_tridiagonal

from lss_engine.campaign.estimates import (MarkovEstimate, frame_weights, majority_states,
                                           markov_estimate, set_fractions)
from lss_engine.errors import LssError
from lss_engine.kinetics.fes import FreeEnergyProfile, fes_rmse, free_energy_1d

# --------------------------------------------------------------- exact chain
#: Stationary distribution of the test chain.
PI4 = np.array([0.1, 0.2, 0.3, 0.4])


def _chain() -> np.ndarray:
    r"""Reversible linear chain 0-1-2-3 built from symmetric fluxes :math:`π_i T_{ij}`."""
    flux = np.zeros((4, 4))
    flux[0, 1] = flux[1, 0] = 0.01
    flux[1, 2] = flux[2, 1] = 0.005
    flux[2, 3] = flux[3, 2] = 0.01
    T = flux / PI4[:, None]
    T[np.diag_indices(4)] = 1.0 - T.sum(axis=1)
    return T


T4 = _chain()


def sample_walkers(T: np.ndarray, n_walkers: int, n_steps: int, start: int, seed: int) -> list[np.ndarray]:
    """``n_walkers`` independent trajectories of ``T``, every one started in ``start``."""
    rng = np.random.default_rng(seed)
    cum = np.cumsum(T, axis=1)
    cum[:, -1] = 1.0
    x = np.empty((n_walkers, n_steps), dtype=np.int64)
    x[:, 0] = start
    u = rng.random((n_walkers, n_steps))
    for t in range(1, n_steps):
        x[:, t] = (u[:, t, None] > cum[x[:, t - 1]]).sum(axis=1)
    return list(x)


def exact_mfpt(T: np.ndarray, source: int, target: int) -> float:
    r"""Hitting time (steps): :math:`(I - T_{\bar B\bar B}) m = 1`, :math:`m_B = 0`."""
    rest = [i for i in range(len(T)) if i != target]
    m = np.zeros(len(T))
    m[rest] = np.linalg.solve(np.eye(len(rest)) - T[np.ix_(rest, rest)], np.ones(len(rest)))
    return float(m[source])


def exact_timescales(T: np.ndarray, lag: int) -> np.ndarray:
    r""":math:`-τ/\ln λ_k(T^τ)` = :math:`-1/\ln λ_k(T)` (steps), k = 1, 2, 3."""
    ev = np.sort(np.linalg.eigvals(np.linalg.matrix_power(T, lag)).real)[::-1][1:]
    return -lag / np.log(ev)


@pytest.fixture(scope="module")
def chain_run():
    """2000 walkers x 40 steps from state 0 (π_0 = 0.1), latent = state + N(0, 0.01²)."""
    dtrajs = sample_walkers(T4, 2000, 40, start=0, seed=3)
    rng = np.random.default_rng(4)
    latent = [d[:, None] + 0.01 * rng.standard_normal((len(d), 1)) for d in dtrajs]
    return dtrajs, latent


def _state_of_cluster(est: MarkovEstimate) -> np.ndarray:
    state = np.rint(est.clustering.centers[:, 0]).astype(int)
    assert sorted(state) == [0, 1, 2, 3], "k-means did not find the four states"
    return state


@pytest.mark.parametrize("lag", [1, 3])
def test_chain_stationary_mfpt_timescales_exact(chain_run, lag):
    """π, MFPTs and implied timescales of walkers all started in one state match the exact chain.

    The walkers (40 steps) are short compared with the slowest relaxation
    (54 steps), so the raw frame histogram is far from π (0.41 of the frames
    are in state 0, π_0 = 0.1); the reversible MLE on the same frames is
    unbiased for a Markov chain, so its error is sampling error only.
    Tolerance: 4 bootstrap standard errors (walkers resampled, n_boot = 100);
    over 8 independent data sets the largest |z| seen was 2.1.  The bootstrap
    SEs are themselves asserted small (a few % of the values), so the checks
    are not vacuous, and the raw histogram misses π by more than 10 SE.
    """
    dtrajs, latent = chain_run
    est = markov_estimate(latent, lag, 0.5, n_clusters=4, seed=0, n_boot=100)
    state = _state_of_cluster(est)
    pi_hat = np.zeros(4)
    pi_hat[state] = est.stationary
    se = np.zeros(4)
    se[state] = est.stationary_se
    assert np.all(se < 0.05) and np.all(se > 0)
    assert np.all(np.abs(pi_hat - PI4) <= 4 * se), (pi_hat, se)
    raw = np.bincount(np.concatenate(dtrajs), minlength=4) / sum(len(d) for d in dtrajs)
    assert np.max(np.abs(raw - PI4) / se) > 10, raw

    # frame weights reproduce π per state and sum to one
    w = np.concatenate(est.weights)
    s = np.concatenate(dtrajs)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.bincount(s, weights=w, minlength=4), pi_hat, rtol=1e-10)
    pops = est.populations({f"s{i}": [d == i for d in dtrajs] for i in range(4)})
    np.testing.assert_allclose([pops[f"s{i}"] for i in range(4)], pi_hat, rtol=1e-10)

    # MFPTs (ps, dt = 0.5 ps per step) in both directions
    for a, b in [(0, 3), (3, 0), (1, 2)]:
        src, tgt = [d == a for d in dtrajs], [d == b for d in dtrajs]
        m, m_se = est.mfpt(src, tgt), est.mfpt_se(src, tgt)
        exact = 0.5 * exact_mfpt(T4, a, b)
        assert 0 < m_se < 0.15 * exact
        assert abs(m - exact) <= 4 * m_se, (a, b, m, m_se, exact)

    # implied timescales (ps)
    ts_exact = 0.5 * exact_timescales(T4, lag)
    ts, ts_se = est.timescales_ps[:3], est.timescales_se_ps[:3]
    assert np.all(ts_se < 0.1 * ts_exact)
    assert np.all(np.abs(ts - ts_exact) <= 4 * ts_se), (ts, ts_se, ts_exact)
    assert np.isnan(est.timescales_ps[3:]).all()   # only 3 exist for 4 states

    assert est.method == f"reversible MSM on 4 latent clusters, lag {lag} frames ({0.5 * lag:g} ps)"
    d = json.loads(json.dumps(est.to_dict(), allow_nan=False))
    assert d["n_bootstrap"] == 100 and len(d["stationary"]) == 4 and d["active_fraction"] == 1.0


def test_frame_weights_and_set_mapping():
    """w_t = π_i/N_i, zero outside the active set; majority mapping of frame sets (exact arithmetic)."""
    labels = [np.array([0, 0, 1]), np.array([1, 2, 2, 2])]
    pi = np.array([0.5, 0.5, 0.0])      # state 2 outside the active set
    w = frame_weights(labels, pi)
    np.testing.assert_allclose(w[0], [0.25, 0.25, 0.25])
    np.testing.assert_allclose(w[1], [0.25, 0.0, 0.0, 0.0])
    masks = [np.array([True, False, True]), np.array([True, True, True, False])]
    np.testing.assert_allclose(set_fractions(labels, masks, 3), [0.5, 1.0, 2 / 3])
    np.testing.assert_array_equal(majority_states(labels, masks, 3), [1, 2])
    with pytest.raises(LssError):
        set_fractions(labels, [np.ones(3, bool), np.ones(3, bool)], 3)


def test_estimate_identities_and_errors():
    """Population = Σ_t w_t 1[A] for any frame set; bad inputs raise; 2-D profiles work."""
    dtrajs = sample_walkers(T4, 200, 30, start=3, seed=5)
    rng = np.random.default_rng(6)
    latent = [np.c_[d + 0.01 * rng.standard_normal(len(d)), rng.standard_normal(len(d))]
              for d in dtrajs]
    est = markov_estimate(latent, 1, 1.0, n_clusters=8, seed=1, n_boot=0,
                          observables={"x": [lat[:, 0] for lat in latent]}, fes_bins=12)
    masks = [rng.random(len(d)) < 0.3 for d in dtrajs]
    direct = float(sum((w * m).sum() for w, m in zip(est.weights, masks)))
    assert est.populations({"A": masks})["A"] == pytest.approx(direct, rel=1e-12)
    assert np.isnan(est.populations_se({"A": masks})["A"])
    assert np.isnan(est.timescales_se_ps).all()
    assert isinstance(est.fes["x"], FreeEnergyProfile) and est.fes["x"].free_energy.shape == (12,)
    fes2 = est.free_energy(latent, bins=6)
    assert fes2.free_energy.shape == (6, 6)
    both = [d <= 3 for d in dtrajs]
    with pytest.raises(LssError):
        est.mfpt(both, both)
    with pytest.raises(LssError):
        est.free_energy([lat[:-1, 0] for lat in latent])
    with pytest.raises(LssError):
        markov_estimate(latent, 0, 1.0)
    json.dumps(est.to_dict(), allow_nan=False)


def test_mfpt_se_is_infinite_when_bootstrap_samples_lose_the_path():
    """Two walkers of 400 frames hopping between states 0 and 1; one excursion to state 2 (frames 100-104 of
    the first).  With fewer than 10 walkers the bootstrap draws 10 pieces of 80 frames; the piece holding the
    excursion is missing from a sample with probability 0.9^10 ≈ 0.35, so among 20 samples some lose state 2
    (all keep it with probability 0.65^20 ≈ 2e-4; the seed is fixed).  In those samples there is no path to
    state 2: the SE of the MFPT into it is infinite, not the spread of the samples that kept the one
    excursion (which only rescale its counts).  MFPT 0 → 1, present in every sample, keeps a finite SE."""
    rng = np.random.default_rng(11)
    hop = np.array([[0.9, 0.1], [0.1, 0.9]])
    dtrajs = [sample_walkers(hop, 1, 400, start=0, seed=s)[0] for s in (12, 13)]
    dtrajs[0][100:105] = 2
    latent = [d[:, None] + 0.01 * rng.standard_normal((len(d), 1)) for d in dtrajs]
    est = markov_estimate(latent, 1, 1.0, n_clusters=3, seed=0, n_boot=20)
    into2 = ([d <= 1 for d in dtrajs], [d == 2 for d in dtrajs])
    assert np.isfinite(est.mfpt(*into2)) and est.mfpt_se(*into2) == np.inf
    zero_one = ([d == 0 for d in dtrajs], [d == 1 for d in dtrajs])
    assert 0 < est.mfpt_se(*zero_one) < np.inf


# --------------------------------------------------------- OpenMM four-well
FOUR_WELL_LEFT = -0.739   # leftmost minimum (see lss_engine.systems.four_well)


@pytest.fixture(scope="module")
def four_well_walkers():
    """600 Brownian walkers of 0.5 ps (frames every 10 steps = 10 fs) on the Prinz four-well.

    480 start in the leftmost well, 120 uniformly on [-1, 1]: a campaign's
    biased restarts.  The slowest relaxation is 0.83 ps, longer than a walker.
    About 0.7 s of MD on the Reference platform (reduced units: kT = 1,
    D = 1 nm²/ps, β = 1, time step 1 fs).
    """
    from openmm import unit

    from lss_engine.systems import get_system

    system = get_system("four-well")
    sim = system.make_simulation(platform="Reference", seed=11, minimize=False)
    rng = np.random.default_rng(12)
    starts = np.concatenate([np.full(480, FOUR_WELL_LEFT), rng.uniform(-1.0, 1.0, 120)])
    stride, n_frames = 10, 50
    trajs = []
    for x0 in starts:
        sim.context.setPositions(np.array([[x0, 0.0, 0.0]]) * unit.nanometer)
        x = np.empty(n_frames)
        for k in range(n_frames):
            sim.step(stride)
            pos = sim.context.getState(getPositions=True).getPositions(asNumpy=True)
            x[k] = system.reduced_coordinates(pos.value_in_unit(unit.nanometer))[0]
        trajs.append(x)
    dt = stride * system.timestep.value_in_unit(unit.picosecond)
    return system, trajs, dt


def boltzmann_fes(system, edges: np.ndarray, n_sub: int = 400) -> np.ndarray:
    r"""Exact :math:`F_b = -\ln \bigl(Δ_b^{-1}\int_b e^{-βU(x)}dx\bigr)` (kT, min 0), midpoint rule."""
    beta = system.reduced_units["beta"]
    F = np.empty(len(edges) - 1)
    for b, (lo, hi) in enumerate(itertools.pairwise(edges)):
        x = lo + (np.arange(n_sub) + 0.5) * (hi - lo) / n_sub
        F[b] = -np.log(np.mean(np.exp(-beta * system.reduced_potential(x[:, None]))))
    return F - F.min()


def generator_timescales(system, lo: float = -1.3, hi: float = 1.3, n: int = 2601) -> np.ndarray:
    r"""Relaxation times of the Smoluchowski generator (D = 1) on a grid.

    Rates :math:`i \to i\pm1` are :math:`h^{-2} e^{-β(U_{i\pm1}-U_i)/2}`;
    symmetrised with :math:`π^{1/2}` the matrix is tridiagonal with
    off-diagonal :math:`h^{-2}`.  Returns :math:`-1/λ_k`, k = 1, 2, 3.
    """
    g = np.linspace(lo, hi, n)
    h = g[1] - g[0]
    u = system.reduced_units["beta"] * system.reduced_potential(g[:, None])
    up = np.exp(-(u[1:] - u[:-1]) / 2) / h ** 2
    down = np.exp(-(u[:-1] - u[1:]) / 2) / h ** 2
    diag = -(np.r_[up, 0.0] + np.r_[0.0, down])
    ev = eigh_tridiagonal(diag, np.full(n - 1, 1.0 / h ** 2), eigvals_only=True)[::-1]
    return -1.0 / ev[1:4]


@pytest.fixture(scope="module")
def four_well_estimate(four_well_walkers):
    """The MSM estimate of the walkers: 100 clusters, τ = 5 frames = 0.05 ps, FES of x on 40 bins."""
    _, trajs, dt = four_well_walkers
    edges = np.linspace(-1.0, 1.0, 41)
    est = markov_estimate([x[:, None] for x in trajs], 5, dt, n_clusters=100, seed=0, n_boot=0,
                          observables={"x": trajs}, fes_bins=edges)
    return est, edges


def test_openmm_four_well_fes_msm_beats_raw(four_well_walkers, four_well_estimate):
    """MSM-weighted FES along x matches the Boltzmann FES; the raw walker histogram does not.

    40 bins on [-1, 1] (F up to 3.2 kT), compared with
    :func:`~lss_engine.kinetics.fes.fes_rmse` (best constant offset) over the
    bins populated in both profiles (here all of them).  Over 14
    independent walker sets (other seeds) the MSM RMSE was 0.11-0.27 kT
    (statistical: the π of the three other wells comes from few barrier
    crossings) and the raw one 0.93-1.02 kT (the walkers remember the left
    well).  Tolerances: MSM < 0.4 kT (1.5 x the worst seen), raw > 0.7 kT,
    MSM < raw / 2.5.
    """
    system, trajs, _ = four_well_walkers
    est, edges = four_well_estimate
    F_true = boltzmann_fes(system, edges)
    F_msm = est.fes["x"]
    F_raw = free_energy_1d(trajs, edges)
    both = F_msm.populated & F_raw.populated
    assert both.sum() >= 35
    rmse_msm = fes_rmse(F_msm, F_true, both)
    rmse_raw = fes_rmse(F_raw, F_true, both)
    assert rmse_msm < 0.4, (rmse_msm, rmse_raw)
    assert rmse_raw > 0.7, (rmse_msm, rmse_raw)
    assert rmse_msm < rmse_raw / 2.5
    assert est.active_fraction > 0.99
    np.testing.assert_allclose(sum(w.sum() for w in est.weights), 1.0, rtol=1e-12)


def test_openmm_four_well_slowest_timescale(four_well_walkers, four_well_estimate):
    """The MSM's slowest implied timescale matches the generator's 0.83 ps within 25 %.

    Over 14 independent walker sets (other seeds) the MSM gave 0.87-1.14 x
    the reference (bootstrap SEs of about 8 %); MSM discretisation (100
    clusters, τ = 0.05 ps) and the Euler-Maruyama step (1 fs) add biases of a
    few % at most.
    """
    system = four_well_walkers[0]
    est = four_well_estimate[0]
    t_ref = generator_timescales(system)[0]
    assert t_ref == pytest.approx(0.834, abs=0.01)
    assert est.timescales_ps[0] == pytest.approx(t_ref, rel=0.25)


# ------------------------------------------------------------------- TRAM
#: Bias (kT) of each ensemble on the four states: 0 unbiased, 1 and 2 two "explorers".
BIAS4 = np.array([[0.0, 0.0, 0.0, 0.0], [1.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 1.0]])


def _biased_chain(T: np.ndarray, b: np.ndarray) -> np.ndarray:
    r"""The chain under a static bias :math:`b`: :math:`T^b_{ij} = T_{ij} e^{(b_i - b_j)/2}` (i ≠ j).

    Its fluxes :math:`π_i e^{-b_i} T^b_{ij} = π_i T_{ij} e^{-(b_i + b_j)/2}`
    are symmetric, so it is reversible with respect to the biased
    equilibrium :math:`π_i e^{-b_i}`: what TRAM assumes of every ensemble.
    """
    Tb = T * np.exp((b[:, None] - b[None, :]) / 2)
    np.fill_diagonal(Tb, 0.0)
    np.fill_diagonal(Tb, 1.0 - Tb.sum(axis=1))
    assert (np.diag(Tb) >= 0).all()
    return Tb


@pytest.fixture(scope="module")
def tram_run():
    """1000 unbiased walkers x 40 steps from state 0, and one 20 000-step walker under each of two biases."""
    unbiased = sample_walkers(T4, 1000, 40, start=0, seed=0)
    explorers = [sample_walkers(_biased_chain(T4, BIAS4[k]), 1, 20_000, start=k, seed=50 + 7 * k)[0] for k in (1, 2)]
    dtrajs = unbiased + explorers
    rng = np.random.default_rng(100)
    latent = [d[:, None] + 0.01 * rng.standard_normal((len(d), 1)) for d in dtrajs]
    run = np.concatenate([np.zeros(40_000, int), np.ones(20_000, int), np.full(20_000, 2)])
    return dtrajs, latent, BIAS4[:, np.concatenate(dtrajs)], run


@pytest.mark.parametrize("lag", [1, 3])
def test_tram_estimate_recovers_the_exact_chain_from_unbiased_walkers_and_biased_explorers(tram_run, lag):
    """TRAM (deeptime) over short unbiased walkers and two biased ensembles: π, MFPTs and t1 of the exact chain.

    The explorers' frames enter π through their biases, and the unbiased
    transition matrix (TRAM's, from the unbiased counts under that π) gives
    the kinetics.  Tolerances: relative 0.25 (π), 0.2 (MFPTs), 0.15 (t1);
    over four independent data sets of this size the largest errors were
    0.13, 0.10 and 0.05 (they shrank from 0.42, 0.31, 0.18 with 6.7× less
    data: sampling error, not bias).  The frame weights sum to 1 and the
    populations are the weights' sums.
    """
    from lss_engine.campaign.estimates import tram_estimate

    dtrajs, latent, bias_kn, run = tram_run
    est = tram_estimate(latent, bias_kn, run, lag, 1.0, kT=1.0, n_clusters=4, seed=0, n_boot=0)
    assert est.method.startswith("TRAM on 4 latent clusters over 3 ensembles")
    state = _state_of_cluster(est)
    pi = np.zeros(4)
    pi[state] = est.stationary
    np.testing.assert_allclose(pi, PI4, rtol=0.25)
    w = np.concatenate(est.weights)
    assert w.sum() == pytest.approx(1.0) and len(w) == 80_000 and (w > 0).all()
    masks = {f"s{i}": [d == i for d in dtrajs] for i in range(4)}
    pops = est.populations(masks)
    np.testing.assert_allclose([pops[f"s{i}"] for i in range(4)], pi, rtol=1e-9)
    for a, b in [(0, 3), (3, 0)]:
        assert est.mfpt(masks[f"s{a}"], masks[f"s{b}"]) == pytest.approx(exact_mfpt(T4, a, b), rel=0.2)
    assert est.timescales_ps[0] == pytest.approx(exact_timescales(T4, 1)[0], rel=0.15)


def test_tram_estimate_needs_an_unbiased_ensemble(tram_run):
    """Without a row of zero bias there is no unbiased transition matrix to take the kinetics from."""
    from lss_engine.campaign.estimates import tram_estimate

    _, latent, bias_kn, run = tram_run
    with pytest.raises(LssError, match="unbiased ensemble"):
        tram_estimate(latent, bias_kn + 0.1, run, 1, 1.0, kT=1.0, n_clusters=4)


def test_tram_estimate_bootstrap_errors_cover_the_exact_chain():
    """TRAM's bootstrap (walkers resampled within unbiased/explorers, TRAM refitted) gives errors that cover the chain.

    300 unbiased walkers x 40 steps from state 0 and two biased ensembles of
    6 000 steps (a third of the other TRAM test's data, so the errors are
    visible).  π within 4.5 bootstrap SE of the exact chain, MFPTs 0→3 and
    3→0 and t1 within 4 SE; the SEs are positive and below half the values;
    populations_se of a state's frames equals stationary_se.

    Calibration over 8 other independent data sets of this size (n_boot =
    20): the bootstrap SE of π was 0.67–1.03× the spread of the estimates,
    and 2.3×, 1.05× and 1.9× for MFPT 0→3, 3→0 and t1 (conservative: with
    two explorers, a sample that draws one twice loses the other's
    ensemble).  π also carries a finite-sample bias (π_0 −7.6 % on average,
    0.8 SE): rms z 1.4–1.75 for π, 0.7–1.2 for the kinetics, largest |z|
    4.05 (π) in 56 checks, hence 4.5 SE for π.
    """
    from lss_engine.campaign.estimates import tram_estimate

    unbiased = sample_walkers(T4, 300, 40, start=0, seed=11)
    explorers = [sample_walkers(_biased_chain(T4, BIAS4[k]), 1, 6_000, start=k, seed=60 + k)[0] for k in (1, 2)]
    dtrajs = unbiased + explorers
    rng = np.random.default_rng(12)
    latent = [d[:, None] + 0.01 * rng.standard_normal((len(d), 1)) for d in dtrajs]
    run = np.concatenate([np.zeros(12_000, int), np.ones(6_000, int), np.full(6_000, 2)])
    est = tram_estimate(latent, BIAS4[:, np.concatenate(dtrajs)], run, 1, 1.0, kT=1.0, n_clusters=4, seed=0,
                        n_boot=20)
    assert len(est.bootstrap) == len(est.bootstrap_stationary) >= 18
    state = _state_of_cluster(est)
    pi, se = np.zeros(4), np.zeros(4)
    pi[state], se[state] = est.stationary, est.stationary_se
    assert np.all(se > 0) and np.all(se < 0.5 * PI4)
    assert np.all(np.abs(pi - PI4) <= 4.5 * se), (pi, se)
    masks = [[d == i for d in dtrajs] for i in range(4)]
    pop_se = est.populations_se({f"s{i}": masks[i] for i in range(4)})
    np.testing.assert_allclose([pop_se[f"s{i}"] for i in range(4)], se, rtol=1e-9)
    for a, b in [(0, 3), (3, 0)]:
        m, m_se = est.mfpt(masks[a], masks[b]), est.mfpt_se(masks[a], masks[b])
        exact = exact_mfpt(T4, a, b)
        assert 0 < m_se < 0.5 * exact
        assert abs(m - exact) <= 4 * m_se, (a, b, m, m_se, exact)
    t1, t1_se = est.timescales_ps[0], est.timescales_se_ps[0]
    assert 0 < t1_se and abs(t1 - exact_timescales(T4, 1)[0]) <= 4 * t1_se
    assert json.loads(json.dumps(est.to_dict(), allow_nan=False))["n_bootstrap"] == len(est.bootstrap)
