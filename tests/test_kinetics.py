"""lss_engine.kinetics against independent references (numpy-generated data only).

References: deeptime's MSM estimators; exact transition matrices of sampled
chains; analytic densities, autocorrelations and rates; hand-made
trajectories with exactly known states, passages and transition counts.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import erf

from lss_engine.errors import LssError
from lss_engine import kinetics as kin


# ------------------------------------------------------------------ helpers
def sample_chain(T: np.ndarray, n_steps: int, n_traj: int, seed: int) -> list[np.ndarray]:
    """``n_traj`` trajectories of a Markov chain, started from its stationary distribution."""
    rng = np.random.default_rng(seed)
    cum = np.cumsum(T, axis=1)
    cum[:, -1] = 1.0
    pi = kin.stationary_distribution(T)
    x = np.empty((n_traj, n_steps), dtype=np.int64)
    x[:, 0] = rng.choice(len(T), size=n_traj, p=pi)
    u = rng.random((n_traj, n_steps))
    for t in range(1, n_steps):
        x[:, t] = (u[:, t, None] > cum[x[:, t - 1]]).sum(axis=1)
    return list(x)


def random_reversible_T(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    W = rng.random((n, n)) ** 3
    W = W + W.T + np.diag(rng.random(n) * n)
    return W / W.sum(axis=1, keepdims=True)


def exact_timescales(T: np.ndarray, lag: int = 1, dt: float = 1.0) -> np.ndarray:
    ev = np.sort(np.abs(np.linalg.eigvals(T)))[::-1][1:]
    return -lag * dt / np.log(ev ** lag)


def to_json(result) -> str:
    return json.dumps(result.to_dict(), allow_nan=False)


# Four states, two metastable pairs {0, 1} | {2, 3}.
T4 = np.array([[0.90, 0.10, 0.00, 0.00],
               [0.10, 0.89, 0.01, 0.00],
               [0.00, 0.01, 0.89, 0.10],
               [0.00, 0.00, 0.10, 0.90]])


@pytest.fixture(scope="module")
def chain4():
    return sample_chain(T4, 5000, 20, seed=11)


# ------------------------------------------------------------------ MSM
def test_count_matrix_sliding_window_never_crosses_trajectories():
    d = [np.array([0, 0, 1, 1, 0]), np.array([1, 0, -1, 0])]
    C = kin.count_matrix(d, 1)
    # traj 1: 00 01 11 10 ; traj 2: 10 (0,-1 skipped) (-1,0 skipped)
    np.testing.assert_array_equal(C, [[1, 1], [2, 1]])
    C2 = kin.count_matrix(d, 2)
    # traj 1: (0,1) (0,1) (1,0); traj 2: (1,-1) skipped, (0,0)
    np.testing.assert_array_equal(C2, [[1, 2], [1, 0]])
    assert kin.count_matrix(d, 1, n_states=3).shape == (3, 3)
    with pytest.raises(LssError):
        kin.count_matrix(d, 1, n_states=1)


def test_reversible_mle_matches_deeptime():
    from deeptime.markov.msm import MaximumLikelihoodMSM

    T = random_reversible_T(6, seed=3)
    d = sample_chain(T, 3000, 10, seed=4)
    # state 6 is only left, never entered: outside the largest strongly connected set
    d.append(np.array([6, 6, 6, 0, 1, 2, 3, 4, 5, 0]))
    ours = kin.estimate_msm(d, 2, reversible=True)
    ref = MaximumLikelihoodMSM(reversible=True, maxerr=1e-14).fit_from_discrete_timeseries(
        d, lagtime=2).fetch_model()
    np.testing.assert_array_equal(ours.active_set, ref.count_model.state_symbols)
    np.testing.assert_array_equal(ours.count_matrix, ref.count_model.count_matrix)
    np.testing.assert_allclose(ours.transition_matrix, ref.transition_matrix, atol=1e-8)
    np.testing.assert_allclose(ours.stationary_distribution, ref.stationary_distribution, atol=1e-8)
    np.testing.assert_allclose(ours.timescales(5), ref.timescales(5), rtol=1e-6)  # both in frames (dt = 1)
    assert kin.is_reversible(ours.transition_matrix, ours.stationary_distribution)
    to_json(ours)


def test_nonreversible_msm_matches_deeptime():
    from deeptime.markov.msm import MaximumLikelihoodMSM

    T = random_reversible_T(5, seed=5)
    d = sample_chain(T, 2000, 5, seed=6)
    ours = kin.estimate_msm(d, 3, reversible=False)
    ref = MaximumLikelihoodMSM(reversible=False).fit_from_discrete_timeseries(d, lagtime=3).fetch_model()
    np.testing.assert_allclose(ours.transition_matrix, ref.transition_matrix, atol=1e-12)
    np.testing.assert_allclose(ours.stationary_distribution, ref.stationary_distribution, atol=1e-10)
    np.testing.assert_allclose(np.abs(ours.eigenvalues()), np.abs(ref.eigenvalues()), atol=1e-10)


def test_long_chain_recovers_exact_transition_matrix(chain4):
    for reversible in (True, False):
        msm = kin.estimate_msm(chain4, 1, reversible=reversible, dt=0.5)
        np.testing.assert_allclose(msm.transition_matrix, T4, atol=0.01)
        np.testing.assert_allclose(msm.stationary_distribution, 0.25, atol=0.05)
        assert msm.lag_time == 0.5
    exact = kin.stationary_distribution(T4)
    np.testing.assert_allclose(exact, 0.25, atol=1e-12)


def test_koopman_of_one_hot_memberships_is_the_count_estimate(chain4):
    onehot = [np.eye(4)[d] for d in chain4]
    K = kin.koopman_from_features(onehot, 2)
    np.testing.assert_allclose(K, kin.transition_matrix_nonreversible(kin.count_matrix(chain4, 2)),
                               atol=1e-12)
    Kr = kin.koopman_from_features(onehot, 2, reversible=True)
    C = kin.count_matrix(chain4, 2)
    S = 0.5 * (C + C.T)
    np.testing.assert_allclose(Kr, S / S.sum(axis=1, keepdims=True), atol=1e-12)


def test_fuzzy_memberships_with_invertible_emissions_keep_the_spectrum(chain4):
    """χ(t) = E[x_t] with square invertible E gives K = E⁻¹ T̂ E: the same eigenvalues."""
    E = np.array([[0.7, 0.1, 0.1, 0.1], [0.2, 0.6, 0.1, 0.1], [0.1, 0.1, 0.6, 0.2], [0.05, 0.05, 0.1, 0.8]])
    fuzzy = [E[d] for d in chain4]
    lags = [1, 2, 5]
    its_f = kin.implied_timescales(fuzzy, lags, kind="fuzzy", dt=2.0)
    its_d = kin.implied_timescales(chain4, lags, kind="discrete", reversible=False, dt=2.0)
    assert its_f.timescales.shape == (3, 3)
    np.testing.assert_allclose(its_f.timescales, its_d.timescales, rtol=1e-8)
    np.testing.assert_allclose(its_f.lag_times, [2.0, 4.0, 10.0])
    K = kin.koopman_from_features(fuzzy, 1)
    np.testing.assert_allclose(K.sum(axis=1), 1.0, atol=1e-12)


def test_implied_timescales_of_sampled_chain_match_exact(chain4):
    its = kin.implied_timescales(chain4, [1, 2, 4, 8], k=3, dt=0.5, n_bootstrap=10, seed=1)
    exact = exact_timescales(T4, dt=0.5)
    assert its.timescales.shape == (4, 3) and its.errors.shape == (4, 3)
    assert np.all(its.errors > 0)
    rel = np.abs(its.timescales - exact) / exact
    assert rel.max() < 0.12, rel
    # within a few bootstrap standard deviations
    assert np.all(np.abs(its.timescales - exact) < 5 * its.errors + 1e-9)
    # lags given as times
    its_t = kin.implied_timescales(chain4, ["0.5ps", 1.0], k=3, dt=0.5)
    np.testing.assert_allclose(its_t.timescales, its.timescales[:2])
    to_json(its)


def test_msm_timescales_of_exact_counts_are_exact():
    """A count matrix proportional to diag(π) T gives T back exactly (reversible MLE)."""
    pi = kin.stationary_distribution(T4)
    C = 1e6 * pi[:, None] * T4
    T = kin.transition_matrix_reversible(C)
    np.testing.assert_allclose(T, T4, atol=1e-10)
    ts = kin.timescales_from_eigenvalues(kin.eigenvalues(T)[1:], lag=1, dt=1.0)
    np.testing.assert_allclose(ts, exact_timescales(T4), rtol=1e-8)


def test_pcca_finds_the_metastable_pairs(chain4):
    msm = kin.estimate_msm(chain4, 1)
    p = kin.pcca(msm.transition_matrix, 2)
    sets = sorted(tuple(s) for s in p.sets)
    assert sets == [(0, 1), (2, 3)]
    np.testing.assert_allclose(p.memberships.sum(axis=1), 1.0, atol=1e-10)
    macro = kin.map_microstates(chain4[:2], p.assignments, msm.active_set)
    assert set(np.unique(macro[0])) <= {0, 1}
    assert np.all((macro[0] == p.assignments[0]) == np.isin(chain4[0], p.sets[p.assignments[0]]))


# ------------------------------------------------------------------ CK test
def test_ck_test_passes_for_a_markov_chain_and_fails_for_a_hidden_lumping():
    # 0 <-> 1 fast, 1 <-> 2 slow; lumping {1, 2} hides which side of the slow barrier we are on
    T = np.array([[0.95, 0.05, 0.0], [0.05, 0.945, 0.005], [0.0, 0.005, 0.995]])
    d = sample_chain(T, 5000, 20, seed=2)
    good = kin.ck_test(d, 5, 8, dt=0.1)
    lumped = kin.ck_test([np.array([0, 1, 1])[x] for x in d], 5, 8, dt=0.1)
    assert good.predicted.shape == good.estimated.shape == (8, 3, 3)
    assert lumped.predicted.shape == (8, 2, 2)
    assert good.max_deviation < 0.03
    assert lumped.max_deviation > 0.07
    assert lumped.max_deviation > 5 * good.max_deviation
    np.testing.assert_allclose(good.lag_times, 0.5 * np.arange(1, 9))
    # rows are probability distributions
    np.testing.assert_allclose(good.predicted.sum(axis=2), 1.0, atol=1e-10)
    np.testing.assert_allclose(good.estimated.sum(axis=2), 1.0, atol=1e-10)
    # exact Markov prediction at k = 1 equals the estimate
    np.testing.assert_allclose(good.predicted[0], good.estimated[0], atol=1e-12)
    to_json(good)


def test_ck_test_sets_and_fuzzy_inputs(chain4):
    ck_sets = kin.ck_test(chain4, 2, 4, sets=[[0, 1], [2, 3]], n_bootstrap=5, seed=0)
    assert ck_sets.predicted.shape == (4, 2, 2)
    assert ck_sets.estimated_errors.shape == (4, 2, 2)
    assert ck_sets.max_deviation < 0.02
    onehot = [np.eye(4)[d] for d in chain4]
    ck_f = kin.ck_test(onehot, 2, 3, kind="fuzzy")
    ck_d = kin.ck_test(chain4, 2, 3, reversible=False)
    # one-hot Koopman = row-normalised counts; per-state CK probabilities = T entries
    np.testing.assert_allclose(ck_f.estimated, ck_d.estimated, atol=1e-10)
    np.testing.assert_allclose(ck_f.predicted, ck_d.predicted, atol=1e-10)


# ------------------------------------------------------------------ FES
def _binned_gaussian_mixture_F(edges: np.ndarray) -> np.ndarray:
    def cdf(x, mu, s):
        return 0.5 * (1 + erf((x - mu) / (s * np.sqrt(2))))

    mass = 0.7 * np.diff(cdf(edges, -1.0, 0.5)) + 0.3 * np.diff(cdf(edges, 1.5, 0.7))
    return -np.log(mass / np.diff(edges))


def test_free_energy_1d_matches_analytic_within_block_errors():
    rng = np.random.default_rng(7)
    n = 200_000
    comp = rng.random(n) < 0.7
    x = np.where(comp, rng.normal(-1.0, 0.5, n), rng.normal(1.5, 0.7, n))
    fes = kin.free_energy_1d(list(np.array_split(x, 4)), bins=40, range=(-2.5, 3.5))
    F_true = _binned_gaussian_mixture_F(fes.edges[0])
    assert fes.free_energy.shape == (40,) and np.nanmin(fes.free_energy) == 0.0
    rmse, offset = kin.fes_rmse(fes.free_energy, F_true, return_offset=True)
    z = (fes.free_energy - F_true - offset) / fes.errors
    well = fes.counts > 100
    # 5 blocks: z follows Student's t with 4 degrees of freedom (95 % within 2.776)
    assert np.mean(np.abs(z[well]) < 2.776) > 0.8, z
    assert np.median(np.abs(z[well])) < 1.5 and np.abs(z[well]).max() < 12
    # the block errors have the binomial size sqrt((1 - q) / (N q)) of iid samples
    q = fes.counts / n
    ratio = np.median(fes.errors[well] / np.sqrt((1 - q[well]) / (n * q[well])))
    assert 0.6 < ratio < 1.4, ratio
    assert rmse < 0.05
    # weights: uniform samples reweighted by p(x) give the same profile
    u = rng.uniform(-2.5, 3.5, n)
    w = 0.7 * np.exp(-0.5 * ((u + 1) / 0.5) ** 2) / 0.5 + 0.3 * np.exp(-0.5 * ((u - 1.5) / 0.7) ** 2) / 0.7
    fes_w = kin.free_energy_1d(u, bins=40, range=(-2.5, 3.5), weights=w)
    assert kin.fes_rmse(fes_w, F_true) < 0.05
    to_json(fes)


def test_free_energy_2d_and_unpopulated_bins():
    rng = np.random.default_rng(8)
    x = rng.normal(0, 1, 100_000)
    y = rng.normal(0, 0.5, 100_000)
    fes = kin.free_energy_2d(x, y, bins=(20, 10), range=[(-6, 6), (-1.5, 1.5)], n_blocks=5)
    assert fes.free_energy.shape == (20, 10) and fes.ndim == 2
    cx, cy = fes.centers
    # -ln p = x²/2 + 2y² + const (bin centres; bins are small enough for 0.15 kT)
    F_true = 0.5 * cx[:, None] ** 2 + 2.0 * cy[None, :] ** 2
    mask = fes.counts > 500
    assert kin.fes_rmse(fes, F_true, mask) < 0.15
    # |x| > 5 is (practically) never sampled: NaN free energy and error
    far = np.abs(cx) > 5.2
    assert np.all(np.isnan(fes.free_energy[far])) and np.all(np.isnan(fes.errors[far]))
    assert np.all(np.isfinite(fes.errors[mask]))


def test_fes_rmse_aligns_the_additive_constant():
    a = np.array([0.0, 1.0, 2.0, np.nan, 4.0])
    b = a + 3.0
    assert kin.fes_rmse(a, b) == pytest.approx(0.0, abs=1e-12)
    c = np.array([0.0, 1.0, 2.0, 5.0, 4.5])
    # bins 0..2 and 4 shared; differences (0,0,0,-0.5) minus mean -0.125
    expected = np.sqrt(np.mean((np.array([0, 0, 0, -0.5]) + 0.125) ** 2))
    assert kin.fes_rmse(a, c) == pytest.approx(expected)
    mask = np.array([True, True, True, True, False])
    assert kin.fes_rmse(a, c, mask) == pytest.approx(0.0)
    assert np.isnan(kin.fes_rmse(a, c, np.zeros(5, bool)))


# ------------------------------------------------------------------ ACF
def ar1(n_steps: int, n_traj: int, phi: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((n_traj, n_steps))
    x[:, 0] = rng.normal(size=n_traj)
    noise = rng.normal(size=(n_traj, n_steps)) * np.sqrt(1 - phi ** 2)
    for t in range(1, n_steps):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    return x


def test_autocorrelation_and_relaxation_time_of_ar1():
    dt, tau = 0.5, 10.0  # ps; 20 frames
    phi = np.exp(-dt / tau)
    x = ar1(20_000, 5, phi, seed=9)
    trajs = [np.stack([xi, 3.0 + 2.0 * xi[::-1]], axis=1) for xi in x]  # 2 columns, same τ
    res = kin.relaxation_times(trajs, dt=dt, max_lag=120)
    s = res.lag_times
    analytic = np.exp(-s / tau)
    assert res.acf.shape == (121, 2)
    dev = np.abs(res.acf - analytic[:, None])
    assert dev.max() < 0.06
    # block SEs (Student t, 4 degrees of freedom) describe the deviations
    assert np.all(np.median(dev[1:] / res.acf_errors[1:], axis=0) < 3)
    for j in range(2):
        assert res.tau_fit_errors[j] > 0 and res.tau_integrated_errors[j] > 0
        assert abs(res.tau_fit[j] - tau) < 4 * res.tau_fit_errors[j], (res.tau_fit, res.tau_fit_errors)
        assert abs(res.tau_integrated[j] - tau) < 4 * res.tau_integrated_errors[j]
        assert abs(res.tau_fit[j] - tau) < 0.1 * tau
    np.testing.assert_allclose(res.tau_fit_errors, np.std(res.tau_fit_blocks, axis=0, ddof=1) / np.sqrt(5))
    to_json(res)


def test_autocorrelation_fft_matches_direct_sum():
    rng = np.random.default_rng(10)
    trajs = [rng.normal(size=50), rng.normal(size=30)]
    C = kin.autocorrelation(trajs, 10)
    mean = np.concatenate(trajs).mean()
    num = np.zeros(11)
    cnt = np.zeros(11)
    for t in trajs:
        y = t - mean
        for s in range(11):
            num[s] += np.sum(y[:len(y) - s] * y[s:])
            cnt[s] += len(y) - s
    direct = num / cnt
    np.testing.assert_allclose(C, direct / direct[0], atol=1e-12)
    assert C.shape == (11,)
    # exact exponential: fit and integral recover τ
    s = np.arange(200)
    assert kin.fit_exponential_time(np.exp(-s * 0.1 / 2.0), 0.1) == pytest.approx(2.0, rel=1e-6)
    assert kin.integrated_time(np.exp(-s * 0.1 / 2.0), 0.1) == pytest.approx(2.0, rel=1e-3)


# ------------------------------------------------------------------ MFPT
def two_state_trajectory(a: float, b: float, n_visits: int, seed: int) -> np.ndarray:
    """Exact 2-state chain: leave A with probability a per step, B with b (geometric dwells)."""
    rng = np.random.default_rng(seed)
    dwell_a = rng.geometric(a, n_visits)
    dwell_b = rng.geometric(b, n_visits)
    lengths = np.ravel(np.column_stack([dwell_a, dwell_b]))
    return np.repeat(np.tile([0, 1], n_visits), lengths)


def test_mfpt_of_two_state_chain_matches_rates_and_msm():
    a, b, dt = 0.01, 0.04, 2.0
    traj = two_state_trajectory(a, b, 1500, seed=12)
    k_ab, k_ba = a / dt, b / dt  # rates per ps
    ab = kin.first_passage_times(traj, 0, 1, dt=dt)
    ba = kin.first_passage_times(traj, 1, 0, dt=dt)
    # the first A visit starts the trajectory (entry unseen); the last B visit never ends
    assert ab.n == 1499 and ba.n == 1499 and ba.n_censored == 1
    assert abs(ab.mean - 1 / k_ab) < 4 * ab.sem
    assert abs(ba.mean - 1 / k_ba) < 4 * ba.sem
    lo, hi = ab.interval()
    assert lo < 1 / k_ab < hi
    # MSM MFPT: exact T gives exactly 1/k; the estimated MSM agrees with the trajectory estimate
    T = np.array([[1 - a, a], [b, 1 - b]])
    assert kin.mfpt_msm(T, 0, 1, dt=dt) == pytest.approx(1 / k_ab, rel=1e-12)
    assert kin.mfpt_msm(T, 1, 0, dt=dt) == pytest.approx(1 / k_ba, rel=1e-12)
    msm = kin.estimate_msm(traj, 1, dt=dt)
    assert abs(msm.mfpt(0, 1) - ab.mean) < 3 * ab.sem
    assert abs(msm.mfpt(1, 0) - ba.mean) < 3 * ba.sem
    # transition counts at the shortest commitment: T_A / N_AB is the MFPT for two states
    tc = kin.transition_counts(traj, [dt], dt=dt)
    assert tc.mean_transition_times()[0, 0, 1] == pytest.approx(ab.mean, rel=0.02)
    to_json(ab)


def test_mfpt_three_state_chain_matches_linear_solve():
    T = np.array([[0.97, 0.03, 0.0], [0.02, 0.96, 0.02], [0.0, 0.01, 0.99]])
    d = sample_chain(T, 20_000, 10, seed=13)
    fpt = kin.first_passage_times(d, 0, 2, dt=1.0)
    exact = kin.mfpt_msm(T, 0, 2)
    assert fpt.n > 100
    assert abs(fpt.mean - exact) < 4 * fpt.sem
    # set-valued source: π-weighted average of the hitting times
    m0, m1 = kin.mfpt_msm(T, 0, 2), kin.mfpt_msm(T, 1, 2)
    pi = kin.stationary_distribution(T)
    assert kin.mfpt_msm(T, [0, 1], 2) == pytest.approx((pi[0] * m0 + pi[1] * m1) / (pi[0] + pi[1]))


def test_first_passage_definition_on_hand_made_trajectory():
    # A = 0, B = 1, 2 = elsewhere
    lab = np.array([0, 0, 2, 1, 1, 2, 0, 2, 0, 1, 0, 0])
    fpt = kin.first_passage_times(lab, 0, 1, dt=0.5)
    # start at the trajectory start is excluded; 6 -> 9 counted; 10 -> end censored
    np.testing.assert_allclose(fpt.times, [1.5])
    assert fpt.n_censored == 1
    fpt_all = kin.first_passage_times(lab, 0, 1, dt=0.5, include_initial=True)
    np.testing.assert_allclose(fpt_all.times, [1.5, 1.5])
    # two trajectories are never joined
    fpt2 = kin.first_passage_times([lab[:5], lab[5:]], 0, 1, dt=0.5)
    np.testing.assert_allclose(fpt2.times, [1.5])
    with pytest.raises(LssError):
        kin.first_passage_times(lab, [0, 1], 1)


def test_chi_square_interval_coverage():
    rng = np.random.default_rng(14)
    tau = 3.0
    for n in (1, 5, 30):
        means = rng.exponential(tau, size=(3000, n)).mean(axis=1)
        hits = 0
        for m in means:
            lo, hi = kin.mfpt_confidence_interval(m, n)
            hits += lo <= tau <= hi
        assert 0.935 < hits / len(means) < 0.965, (n, hits)
    lo, hi = kin.mfpt_confidence_interval(10.0, 1)
    assert lo == pytest.approx(20.0 / 7.377758908227871) and hi == pytest.approx(20.0 / 0.0506356159685)
    assert all(np.isnan(kin.mfpt_confidence_interval(1.0, 0)))


# ------------------------------------------------------------------ states
def test_coring_on_hand_made_phi_trajectory():
    states = kin.alanine_dipeptide_states()
    assert [s.name for s in states] == ["C7eq", "C7ax"]
    phi = np.array([-2.0, 0.0, 1.0, 2.0, 3.0, 0.3, -1.0, 0.5, 1.79])
    raw = kin.assign_states(phi, states, core=False)[0]
    np.testing.assert_array_equal(raw, [0, -1, 1, -1, 0, -1, -1, -1, 1])  # bounds are open
    cored = kin.assign_states(phi, states)[0]
    np.testing.assert_array_equal(cored, [0, 0, 1, 1, 0, 0, 0, 0, 1])
    # frames before the first core visit stay unassigned; trajectories are cored separately
    out = kin.assign_states([np.array([0.0, 1.0, 0.0]), np.array([0.0, -2.0])], states)
    np.testing.assert_array_equal(out[0], [-1, 1, 1])
    np.testing.assert_array_equal(out[1], [-1, 0])
    # boxes on two columns; phi in column 1
    box = kin.MetastableState("corner", {0: (0, None), 1: (None, 0)})
    xy = np.array([[1.0, -1.5], [1.0, 1.0], [-1.0, -1.5]])
    np.testing.assert_array_equal(box.contains(xy), [True, False, False])
    st = kin.alanine_dipeptide_states(phi_column=1)
    np.testing.assert_array_equal(kin.assign_states(xy, st, core=False)[0], [0, 1, 0])
    json.dumps(box.to_dict(), allow_nan=False)


def test_states_from_memberships_with_threshold_and_coring():
    m = np.array([[0.9, 0.1], [0.55, 0.45], [0.2, 0.8], [0.5, 0.5], [0.95, 0.05]])
    np.testing.assert_array_equal(kin.states_from_memberships(m)[0], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(kin.states_from_memberships(m, threshold=0.7)[0], [0, 0, 1, 1, 0])
    np.testing.assert_array_equal(kin.states_from_memberships(m, threshold=0.7, core=False)[0],
                                  [0, -1, 1, -1, 0])


def test_transition_counts_vs_commitment_time_on_hand_made_trajectory():
    # visits: A×3, B×1, A×2, B×4, A×2 (A = 0, B = 1)
    lab = np.array([0, 0, 0, 1, 0, 0, 1, 1, 1, 1, 0, 0])
    tc = kin.transition_counts(lab, [0.0, 1.0, 2.0, 3.0, 5.0], dt=1.0, state_names=["A", "B"])
    assert tc.counts.shape == (5, 2, 2)
    # t_c <= 1 frame: every visit; 2: B×1 dropped; 3: also the A×2 visits dropped; 5: none committed
    np.testing.assert_array_equal(tc.counts[:, 0, 1], [2, 2, 1, 1, 0])
    np.testing.assert_array_equal(tc.counts[:, 1, 0], [2, 2, 1, 0, 0])
    np.testing.assert_array_equal(np.diagonal(tc.counts, axis1=1, axis2=2), 0)
    np.testing.assert_allclose(tc.residence_times[:, 0], [7, 7, 8, 6, 0])
    np.testing.assert_allclose(tc.residence_times[:, 1], [5, 5, 4, 6, 0])
    tau = tc.mean_transition_times()
    np.testing.assert_allclose(tau[:, 0, 1], [3.5, 3.5, 8, 6, np.nan])
    assert np.all(np.isnan(tau[:, 0, 0]))
    assert tc.total_time == 12.0
    # times are in ps: same trajectory at dt = 0.5 ps, commitment 1.0 ps = 2 frames
    tc_half = kin.transition_counts(lab, [1.0], dt=0.5)
    np.testing.assert_array_equal(tc_half.counts[0], tc.counts[2])
    np.testing.assert_allclose(tc_half.residence_times[0], 0.5 * tc.residence_times[2])
    # unassigned leading frames and a second trajectory: no transition across trajectories
    tc2 = kin.transition_counts([np.array([-1, -1, 0, 0, 1, 1]), np.array([1, 1, 0])], [1.0])
    np.testing.assert_array_equal(tc2.counts[0], [[0, 1], [1, 0]])
    np.testing.assert_allclose(tc2.residence_times[0], [2 + 1, 2 + 2])
    ci = tc.intervals()
    assert ci.shape == (5, 2, 2, 2) and np.all(ci[0, 0, 1] > 0)
    to_json(tc)


# ------------------------------------------------------------------ plots
def test_every_plot_writes_a_png(tmp_path, chain4):
    from lss_engine.kinetics import plots

    its = kin.implied_timescales(chain4, [1, 2, 4], k=2, n_bootstrap=3, seed=0)
    ck = kin.ck_test(chain4, 2, 3, sets=[[0, 1], [2, 3]])
    rng = np.random.default_rng(15)
    fes1 = kin.free_energy_1d(rng.normal(size=5000), bins=20)
    fes2 = kin.free_energy_2d(rng.normal(size=5000), rng.normal(size=5000), bins=15)
    rt = kin.relaxation_times(list(ar1(2000, 2, 0.9, seed=1)), dt=1.0, max_lag=40)
    lab = two_state_trajectory(0.05, 0.1, 100, seed=2)
    tc = kin.transition_counts(lab, [1, 2, 5, 10], state_names=["A", "B"])
    fpts = [kin.first_passage_times(lab, 0, 1), kin.first_passage_times(lab, 1, 0)]
    figures = {
        "its": plots.plot_implied_timescales(its),
        "ck": plots.plot_ck_test(ck, set_names=["left", "right"]),
        "fes1": plots.plot_free_energy([fes1, fes1], labels=["MD", "LSS"], xlabel="φ"),
        "fes2": plots.plot_free_energy(fes2),
        "acf": plots.plot_autocorrelation([rt, rt], labels=["MD", "LSS"]),
        "tc": plots.plot_transition_counts([tc, tc], labels=["MD", "LSS"]),
        "mfpt": plots.plot_first_passage_times(fpts, reference=[20.0, 10.0]),
    }
    for name, fig in figures.items():
        path = plots.save_figure(fig, tmp_path / "figs" / f"{name}.png")
        assert path.exists() and path.stat().st_size > 1000, name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
