r"""lss_engine.bias.reweight: unbiased weights from biased runs, against exact answers.

References, none of them this module's own code:

* exact samples of umbrella-window densities :math:`p_k(x) ∝ e^{-U(x) - κ(x-c_k)^2/2}`
  of the asymmetric double well :math:`U = x^4 - 6x^2 + 2x` (kT), drawn by
  inverse-CDF sampling on a fine grid, and the exact bin free energies
  :math:`F_b = -\ln \frac{1}{V_b}\int_b e^{-U}` and window free energies
  :math:`f_k = -\ln \int e^{-U - u_k} / \int e^{-U}` by quadrature;
* deeptime's ``TRAM`` called directly (its own MBAR initialisation, no
  warm start), which with one Markov state is MBAR;
* real OpenMM Langevin dynamics of ``lss_engine.systems.double_well`` at
  300 K in harmonic umbrella windows (a ``CustomExternalForce`` on x),
  against the exact Boltzmann FES from the system's ``reduced_potential``.
"""
from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest

from lss_engine.bias.reweight import (
    ReweightedProfile,
    ReweightResult,
    mbar_weights,
    reweighted_fes,
    run_labels,
    tram_weights,
)
from lss_engine.errors import LssError, NonFiniteError
from lss_engine.kinetics.fes import fes_rmse

#: Fine grid for the exact densities and quadratures (spacing 3.2e-5).
GRID = np.linspace(-3.2, 3.2, 200_001)
KAPPA = 15.0                                   # umbrella stiffness, kT/nm²
CENTRES = np.linspace(-2.4, 2.2, 12)           # 12 windows across both wells and the 12.7 kT barrier
EDGES = np.linspace(-2.4, 2.2, 31)             # 30 bins


def U(x: np.ndarray) -> np.ndarray:
    """The double well of ``lss_engine.systems.double_well``, in kT."""
    return x ** 4 - 6 * x ** 2 + 2 * x


def window_bias(x: np.ndarray, centres: np.ndarray, kappa: float = KAPPA) -> np.ndarray:
    """``(K, N)`` reduced harmonic bias :math:`κ(x_n - c_k)^2/2`."""
    return 0.5 * kappa * (x[None, :] - centres[:, None]) ** 2


def sample_windows(centres: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` exact i.i.d. samples of each window's biased density (inverse CDF on :data:`GRID`).

    The CDF is the trapezoid rule on the grid, inverted by linear
    interpolation: the density is exact up to O(h²) ≈ 1e-9 relative.
    """
    out = []
    for c in centres:
        logp = -U(GRID) - 0.5 * KAPPA * (GRID - c) ** 2
        p = np.exp(logp - logp.max())
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]))])
        out.append(np.interp(rng.random(n), cdf / cdf[-1], GRID))
    return np.concatenate(out)


def exact_bin_fes(edges: np.ndarray, potential=U) -> np.ndarray:
    r""":math:`F_b = -\ln \frac{1}{V_b}\int_b e^{-U}` per bin (the histogram's expectation, not U at the centre)."""
    F = []
    for a, b in itertools.pairwise(edges):
        g = np.linspace(a, b, 2001)
        F.append(-np.log(np.trapezoid(np.exp(-potential(g)), g) / (b - a)))
    return np.array(F)


def exact_window_f(centres: np.ndarray) -> np.ndarray:
    r""":math:`f_k = -\ln \langle e^{-u_k} \rangle_0` by quadrature (the unbiased state has f = 0)."""
    z0 = np.trapezoid(np.exp(-U(GRID)), GRID)
    return np.array([-np.log(np.trapezoid(np.exp(-U(GRID) - 0.5 * KAPPA * (GRID - c) ** 2), GRID) / z0)
                     for c in centres])


@pytest.fixture(scope="module")
def umbrella():
    """12 windows × 2000 exact samples, biases in kJ/mol at kT = 2.5 kJ/mol (a unit to convert)."""
    rng = np.random.default_rng(1)
    n = 2000
    x = sample_windows(CENTRES, n, rng)
    runs = run_labels([n] * len(CENTRES))
    kT = 2.5
    return x, runs, kT * window_bias(x, CENTRES), kT


# ------------------------------------------------------------------ analytic
def test_mbar_fes_matches_exact_double_well(umbrella):
    r"""MBAR FES over the double well (12.7 kT barrier) vs the exact bin free energies.

    Tolerance from the sample size: a bin holding :math:`n_b` of the 24 000
    pooled i.i.d. frames has a histogram (Poisson) error of about
    :math:`1/\sqrt{n_b}`, :math:`\sqrt{\operatorname{mean}_b 1/n_b}` ≈ 0.05
    kT here, plus the error of the windows' relative free energies (their
    spread over independent datasets is up to 0.1 kT, see the next test); the
    stratified bootstrap's RMS error is 0.07 - 0.09 kT.  Over seeds 1 - 8 of
    this design the RMSE was 0.043 - 0.082 kT and the bootstrap z-scores had
    an RMS of 0.6 - 1.6 (i.i.d. frames: near 1 expected).  Required: RMSE <
    0.12 kT and < 1.5 × the RMS bootstrap error, z-score RMS in [0.4, 2.0].
    """
    x, runs, bias, kT = umbrella
    res = mbar_weights(bias, runs, kT=kT)
    assert isinstance(res, ReweightResult) and res.method == "mbar"
    assert res.converged and res.iterations < 50
    assert res.weights.shape == (len(x),) and np.isclose(res.weights.sum(), 1.0)
    np.testing.assert_array_equal(res.n_k, np.full(len(CENTRES), 2000))

    prof = reweighted_fes(x, res, EDGES, n_boot=50, resample="blocks", n_blocks=10, seed=0)
    assert isinstance(prof, ReweightedProfile) and prof.n_boot == 50 and prof.n_boot_failed == 0
    exact = exact_bin_fes(EDGES)
    rmse, offset = fes_rmse(prof, exact, return_offset=True)
    assert rmse < 0.12, rmse
    assert rmse < 1.5 * np.sqrt(np.mean(prof.errors ** 2))
    z = (prof.free_energy - exact - offset) / prof.errors
    assert np.all(np.isfinite(z))
    assert 0.4 < np.sqrt(np.mean(z ** 2)) < 2.0
    # the unit factor multiplies F and its errors
    prof1 = reweighted_fes(x, res, EDGES, n_boot=4, resample="blocks", seed=0)
    prof_kj = reweighted_fes(x, res, EDGES, kT=kT, n_boot=4, resample="blocks", seed=0)
    np.testing.assert_allclose(prof1.free_energy, prof.free_energy, rtol=1e-12)
    np.testing.assert_allclose(prof_kj.free_energy, kT * prof1.free_energy, rtol=1e-12)
    np.testing.assert_allclose(prof_kj.errors, kT * prof1.errors, rtol=1e-12)
    json.dumps(prof.to_dict(), allow_nan=False)


def test_window_free_energies_unbiased_over_independent_datasets():
    r"""MBAR's :math:`f_k` (relative to the unbiased state) vs quadrature, over 8 independent datasets.

    The spread of the 8 estimates is the estimator's real sampling error
    (no error model needed): the mean over datasets must lie within
    :math:`4σ_k/\sqrt 8` of the exact value for every window (a bias test),
    and :math:`σ_k` itself stays below 0.25 kT for 12 × 1000 frames so that
    the test is not vacuous (measured up to 0.15 kT: the right-well windows
    carry the error of the two wells' relative weight across 12.7 kT).
    """
    exact = exact_window_f(CENTRES)
    rng = np.random.default_rng(11)
    f = []
    for _ in range(8):
        x = sample_windows(CENTRES, 1000, rng)
        res = mbar_weights(window_bias(x, CENTRES), run_labels([1000] * 12), kT=1.0)
        assert res.converged
        f.append(res.f_k)
    f = np.array(f)
    sigma = f.std(axis=0, ddof=1)
    assert np.all(sigma < 0.25), sigma
    assert np.all(np.abs(f.mean(axis=0) - exact) < 4 * sigma / np.sqrt(8) + 1e-3), (f.mean(axis=0) - exact) / sigma


def test_run_bootstrap_with_exchangeable_runs():
    r"""``resample="runs"`` where the runs are exchangeable draws: 40 windows with random centres.

    Resampling whole runs then mimics repeating the whole study, so the
    bootstrap errors should match the actual deviations from the exact FES.
    40 × 300 = 12 000 i.i.d. frames in 30 bins,
    :math:`\sqrt{\operatorname{mean} 1/n_b}` ≈ 0.06 kT, plus the thin
    coverage random centres leave in places: over seeds 0 - 5 the RMSE was
    0.05 - 0.20 kT and the RMS z-score 0.60 - 1.11.  Required: RMSE < 0.25 kT,
    RMS z-score in [0.4, 1.6].
    """
    rng = np.random.default_rng(0)
    centres = rng.uniform(-2.4, 2.2, 40)
    n = 300
    x = sample_windows(centres, n, rng)
    res = mbar_weights(window_bias(x, centres), run_labels([n] * 40), kT=1.0)
    prof = reweighted_fes(x, res, EDGES, n_boot=40, resample="runs", seed=1)
    exact = exact_bin_fes(EDGES)
    rmse, offset = fes_rmse(prof, exact, return_offset=True)
    assert rmse < 0.25, rmse
    z = (prof.free_energy - exact - offset) / prof.errors
    assert 0.4 < np.sqrt(np.nanmean(z ** 2)) < 1.6


def test_known_answers_and_invariances():
    """Exact identities of the MBAR solution."""
    rng = np.random.default_rng(3)
    # one run: w_n ∝ e^{u_n} exactly, f = -ln <e^{-u}>_0
    u = rng.normal(size=(1, 500))
    res = mbar_weights(u, np.zeros(500, int), kT=1.0)
    w = np.exp(u[0]) / np.exp(u[0]).sum()
    np.testing.assert_allclose(res.weights, w, rtol=1e-12)
    np.testing.assert_allclose(res.f_k, [-np.log(np.sum(w * np.exp(-u[0])))], atol=1e-12)
    # no bias at all: equal weights, f_k = 0, Kish size N
    res = mbar_weights(np.zeros((3, 90)), run_labels([30, 30, 30]), kT=2.0)
    np.testing.assert_allclose(res.weights, 1 / 90, rtol=1e-12)
    np.testing.assert_allclose(res.f_k, 0.0, atol=1e-12)
    assert np.isclose(res.effective_sample_size, 90)
    # a constant added to one run's bias shifts that f_k by it (in kT) and nothing else;
    # shuffling the frames permutes the weights
    x = sample_windows(CENTRES[:4], 200, rng)
    runs = run_labels([200] * 4)
    b = window_bias(x, CENTRES[:4])
    ref = mbar_weights(b, runs, kT=1.0)
    shifted = b.copy()
    shifted[2] += 3.0
    res = mbar_weights(shifted, runs, kT=1.0)
    np.testing.assert_allclose(res.weights, ref.weights, rtol=1e-8)
    np.testing.assert_allclose(res.f_k - ref.f_k, [0, 0, 3.0, 0], atol=1e-8)
    perm = rng.permutation(len(x))
    res = mbar_weights(b[:, perm], runs[perm], kT=1.0)
    np.testing.assert_allclose(res.weights, ref.weights[perm], rtol=1e-8)
    np.testing.assert_allclose(res.f_k, ref.f_k, atol=1e-9)
    # the self-consistent equation holds at the solution
    logD = np.log(np.sum(np.bincount(runs)[:, None] * np.exp(ref.f_k[:, None] - b), axis=0))
    np.testing.assert_allclose(ref.f_k, -np.log(np.sum(np.exp(-b - logD[None, :]), axis=1))
                               + np.log(np.sum(np.exp(-logD))), atol=1e-9)
    assert abs(ref.expectation(x) - np.sum(ref.weights * x)) < 1e-15
    d = ref.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["converged"] and d["n_runs"] == 4 and "weights" not in d
    assert len(ref.to_dict(include_weights=True)["weights"]) == len(x)


def test_not_converged_is_reported():
    x = sample_windows(CENTRES, 100, np.random.default_rng(4))
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = mbar_weights(window_bias(x, CENTRES), run_labels([100] * 12), kT=1.0, maxiter=1, tol=1e-14)
    assert not res.converged and res.iterations == 1


# ------------------------------------------------------------------ deeptime
def _small_windows(seed: int, n: int = 300, centres: np.ndarray = CENTRES[::2]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` exact samples per window (default: 6 windows, spacing 0.84)."""
    x = sample_windows(centres, n, np.random.default_rng(seed))
    return x, run_labels([n] * len(centres)), window_bias(x, centres)


def test_mbar_agrees_with_deeptime_tram_single_markov_state():
    """deeptime's TRAM with one Markov state (its modified counts R^k = N_k) is MBAR: f_k and weights agree."""
    deeptime = pytest.importorskip("deeptime")
    from deeptime.markov.msm import TRAM

    _x, runs, u = _small_windows(5)
    K = u.shape[0]
    dtrajs = [np.zeros(np.sum(runs == k), dtype=np.int32) for k in range(K)]
    biases = [np.ascontiguousarray(u[:, runs == k].T) for k in range(K)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = TRAM(lagtime=1, maxiter=100_000, maxerr=1e-11, init_maxiter=100_000, init_maxerr=1e-11)
        model = est.fit_fetch((dtrajs, biases))
    log_w = np.concatenate(model.compute_sample_weights_log(dtrajs, biases))
    res = mbar_weights(u, runs, kT=1.0, tol=1e-12)
    # deeptime reports the same gauge: the unbiased state's free energy is 0
    np.testing.assert_allclose(res.f_k, model.therm_state_energies, atol=1e-7)
    np.testing.assert_allclose(np.log(res.weights), log_w, atol=1e-7)
    assert deeptime.__version__


def test_tram_weights_agree_with_deeptime_and_exact():
    r"""``tram_weights`` (warm start, connectivity fix) vs deeptime's TRAM from its own initialisation.

    Markov states: 20 bins of x; lag 1.  i.i.d. samples are a Markov chain
    with :math:`T_{ij} = π^k_j` in each window, which satisfies TRAM's
    assumptions, so its FES is as exact as MBAR's: RMSE < 0.45 kT for
    12 × 200 frames in 30 bins (:math:`\sqrt{\operatorname{mean} 1/n_b}` ≈
    0.16 kT; over seeds 6 - 11 the RMSE was 0.13 - 0.30 kT, MBAR and TRAM
    alike).
    """
    pytest.importorskip("deeptime")
    from deeptime.markov.msm import TRAM, TRAMDataset

    x, runs, u = _small_windows(6, n=200, centres=CENTRES)
    K = u.shape[0]
    dtraj = np.clip(np.digitize(x, np.linspace(-2.6, 2.4, 21)) - 1, 0, 19)
    dtraj = np.unique(dtraj, return_inverse=True)[1]
    res = tram_weights(u, runs, dtraj, kT=1.0, lag=1, tol=1e-10)
    assert res.method == "tram" and res.converged and res.lag == 1
    assert np.all(res.weights > 0)                        # the whole range is connected
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = TRAMDataset(dtrajs=[dtraj[runs == k] for k in range(K)],
                         bias_matrices=[np.ascontiguousarray(u[:, runs == k].T) for k in range(K)], lagtime=1)
        ds.restrict_to_largest_connected_set(connectivity="post_hoc_RE")
        model = TRAM(lagtime=1, maxiter=100_000, maxerr=1e-10).fit_fetch(ds)
    ref = np.concatenate(model.compute_sample_weights_log(ds.dtrajs, ds.bias_matrices))
    np.testing.assert_allclose(np.log(res.weights), ref, atol=2e-6)
    np.testing.assert_allclose(res.f_k, model.therm_state_energies, atol=2e-6)
    exact = exact_bin_fes(EDGES)
    assert fes_rmse(reweighted_fes(x, res.weights, EDGES), exact) < 0.45
    assert fes_rmse(reweighted_fes(x, mbar_weights(u, runs, kT=1.0).weights, EDGES), exact) < 0.45

    # each run cut into 3 trajectories: deeptime 0.5.0's own connectivity check takes trajectory k
    # for thermodynamic state k and would drop frames here; tram_weights keeps the connected range
    # and otherwise is deeptime's TRAM on those trajectories (without a restriction: all connected)
    pieces = np.tile([67, 67, 66], K)                    # 200 frames per run
    res3 = tram_weights(u, runs, dtraj, kT=1.0, lag=1, trajectory_lengths=pieces, tol=1e-10)
    assert np.all(res3.weights > 0)
    bounds = np.concatenate([[0], np.cumsum(pieces)])
    segs = [slice(a, b) for a, b in itertools.pairwise(bounds)]
    d3 = [dtraj[s].astype(np.int32) for s in segs]
    b3 = [np.ascontiguousarray(u[:, s].T) for s in segs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model3 = TRAM(lagtime=1, maxiter=100_000, maxerr=1e-10).fit_fetch(
            (d3, b3, [runs[s].astype(np.int32) for s in segs]))
    ref3 = np.concatenate(model3.compute_sample_weights_log(d3, b3))
    np.testing.assert_allclose(np.log(res3.weights), ref3, atol=2e-6)
    # bootstrap re-runs TRAM on resampled trajectories
    prof = reweighted_fes(x, res, EDGES, n_boot=2, resample="blocks", n_blocks=3, seed=0)
    assert prof.method == "tram" and prof.n_boot == 2 and prof.n_boot_failed == 0
    assert np.all(np.isfinite(prof.errors[prof.populated]))


# -------------------------------------------------------------------- OpenMM
def test_openmm_umbrella_windows_double_well():
    r"""Real OpenMM: 16 harmonic umbrella windows on x of the double-well toy at 300 K.

    ``double_well`` (one particle, ``CustomExternalForce``, y and z in a
    separable harmonic confinement, so integrating them out adds only a
    constant and the exact FES along x is :math:`U(x)` in kT) with
    ``LangevinMiddleIntegrator`` (2 fs, γ = 2/ps, whose configurational bias
    at this step is negligible; the toy's default Brownian step of 1e-3
    biased the window variances by ~3 %, visible here) and a
    ``CustomExternalForce`` ``0.5*kumb*(x-x0)^2`` in its own force group;
    ``kumb`` = 40 kT/nm², centres -2.4 ... 2.2, 1500 frames every 20 steps per
    window.  The biases are in kJ/mol and reweighted with kT = k_B · 300 K.

    Tolerance: the frames are correlated, 24 000 of them give a Kish size of
    ~5600 and bootstrap errors of 0.1 - 0.3 kT in the barrier bins (RMS
    0.12 - 0.16 kT).  Over integrator seeds 1 and 6 - 11 of exactly this
    setup the RMSE was 0.07 - 0.15 kT and the RMS z-score (10 blocks of 6 ps
    per window) 0.9 - 1.9; in exploratory runs (γ = 5/ps, other strides) one
    seed reached 0.24 kT.  Required: RMSE < 0.35 kT, RMS z-score < 2.5.
    """
    import openmm
    from openmm import unit

    from lss_engine.systems import KB_KJ_PER_MOL_K, double_well

    T = 300.0
    kT = KB_KJ_PER_MOL_K * T
    ts = double_well(temperature=T, integrator="langevin", friction=2.0, timestep=0.002)
    force = openmm.CustomExternalForce("0.5*kumb*(x-x0)^2")
    force.addGlobalParameter("kumb", 40.0 * kT)
    force.addGlobalParameter("x0", 0.0)
    force.addParticle(0, [])
    force.setForceGroup(1)
    ts.system.addForce(force)
    integrator = ts.make_integrator(seed=1)
    context = openmm.Context(ts.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    centres = np.linspace(-2.4, 2.2, 16)
    n_frames, stride = 1500, 20
    xs = []
    for c in centres:
        context.setParameter("x0", float(c))
        context.setPositions(np.array([[c, 0.0, 0.0]]) * unit.nanometer)
        context.setVelocitiesToTemperature(T, 1)
        integrator.step(500)
        x = np.empty(n_frames)
        for i in range(n_frames):
            integrator.step(stride)
            x[i] = context.getState(getPositions=True).getPositions(asNumpy=True)[0, 0].value_in_unit(unit.nanometer)
        xs.append(x)
    x = np.concatenate(xs)
    runs = run_labels([n_frames] * len(centres))
    bias = 0.5 * 40.0 * kT * (x[None, :] - centres[:, None]) ** 2      # kJ/mol
    # the bias energies are what OpenMM applied: its force group 1 at a few frames under every window
    context.setParameter("kumb", 40.0 * kT)
    for n in (0, 7000, len(x) - 1):
        context.setPositions(np.array([[x[n], 0.0, 0.0]]) * unit.nanometer)
        for k in (0, 5, 15):
            context.setParameter("x0", float(centres[k]))
            e = context.getState(getEnergy=True, groups={1}).getPotentialEnergy().value_in_unit(
                unit.kilojoule_per_mole)
            assert abs(e - bias[k, n]) < 1e-9 * max(1.0, abs(e))

    res = mbar_weights(bias, runs, kT=kT)
    assert res.converged
    edges = np.linspace(-2.4, 2.2, 24)
    prof = reweighted_fes(x, res, edges, n_boot=40, resample="blocks", n_blocks=10, seed=0)
    exact = exact_bin_fes(edges, lambda g: ts.reduced_potential(g[:, None]))
    rmse, offset = fes_rmse(prof, exact, return_offset=True)
    assert rmse < 0.35, rmse
    z = (prof.free_energy - exact - offset) / prof.errors
    assert np.sqrt(np.mean(z ** 2)) < 2.5


# ---------------------------------------------------------------- bad input
def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert msg and "\n" not in msg
    return msg


def test_bad_input_is_one_line_lss_error():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(3, 30))
    runs = run_labels([10, 10, 10])
    with pytest.raises(LssError) as e:                 # deeptime's (N, K) orientation
        mbar_weights(u.T, runs, kT=1.0)
    assert "bias_kn.T" in _one_line(e)
    with pytest.raises(LssError) as e:
        mbar_weights(u[:, :20], runs, kT=1.0)
    assert "30 frames" in _one_line(e)
    with pytest.raises(LssError) as e:                 # run 1 has no frames
        mbar_weights(u, np.repeat([0, 2], 15), kT=1.0)
    assert "run 1 has no frames" in _one_line(e)
    with pytest.raises(LssError) as e:
        mbar_weights(u, np.full(30, 3), kT=1.0)
    _one_line(e)
    with pytest.raises(LssError) as e:
        mbar_weights(u, runs, kT=0.0)
    _one_line(e)
    with pytest.raises(LssError) as e:
        mbar_weights(u[:, :0], runs[:0], kT=1.0)
    _one_line(e)
    bad = u.copy()
    bad[1, 4] = np.nan
    with pytest.raises(NonFiniteError) as e:
        mbar_weights(bad, runs, kT=1.0)
    assert "run 1, frame 4" in _one_line(e)
    with pytest.raises(LssError) as e:
        run_labels([3, -1])
    _one_line(e)

    res = mbar_weights(u, runs, kT=1.0)
    with pytest.raises(LssError) as e:
        reweighted_fes(rng.normal(size=29), res, 10)
    _one_line(e)
    with pytest.raises(NonFiniteError) as e:
        reweighted_fes(np.full(30, np.nan), res, 10)
    _one_line(e)
    with pytest.raises(LssError) as e:
        reweighted_fes(rng.normal(size=30), res, 10, resample="frames")
    _one_line(e)
    with pytest.raises(NonFiniteError) as e:
        reweighted_fes(rng.normal(size=30), np.full(30, np.nan), 10)
    _one_line(e)

    with pytest.raises(LssError) as e:
        tram_weights(u, runs, np.zeros(29, int), kT=1.0)
    _one_line(e)
    with pytest.raises(LssError) as e:                 # trajectories of 10 frames, lag 10
        tram_weights(u, runs, np.zeros(30, int), kT=1.0, lag=10)
    assert "lag 10" in _one_line(e)
    with pytest.raises(LssError) as e:
        tram_weights(u, runs, np.zeros(30, int), kT=1.0, trajectory_lengths=[15, 15])
    assert "mixes" in _one_line(e)
