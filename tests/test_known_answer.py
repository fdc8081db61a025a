r"""Known-answer test of the assembled simulator: an Ornstein-Uhlenbeck process through encoder, propagator, decoder.

One particle in the harmonic well :math:`U = \tfrac12 (k_x x^2 + k_\perp (y^2 + z^2))`, real OpenMM
``BrownianIntegrator`` dynamics recorded by a real ``ZarrReporter`` (kT = 1 kJ/mol, m = 1 amu,
γ = 1/ps, Δt = 0.01 ps, a frame every 10 steps).  OpenMM's Brownian step
:math:`x_{n+1} = x_n + \Delta t F/(m\gamma) + \sqrt{2 kT \Delta t/(m\gamma)}\,R` is, for a linear
force, *exactly* an AR(1) process, :math:`x_{n+1} = a x_n + s R` with :math:`a = 1 - k\Delta t/(m\gamma)`,
:math:`s^2 = 2 kT \Delta t/(m\gamma)`, so

* the stationary variance of x is :math:`s^2/(1 - a^2)` (1.005 nm² for :math:`k_x` = 1 kJ/mol/nm²),
* its autocorrelation after :math:`m` steps is :math:`a^m`; at the propagator's lag of
  5 frames = 50 steps :math:`\rho_1 = 0.99^{50} = 0.605`, after two lags 0.366.

y and z (:math:`k_\perp` = 10) decorrelate within a frame or two, so x is the one slow
coordinate: a 1-D SRV encodes it, the MDN propagates it at the lag, and the decoder
(alignment ``none``: a lone particle) turns it back into positions.  The generated
trajectory's x must have the exact variance and autocorrelations.

Tolerances.  Sampling error: 10 walkers × 2000 steps give the one-lag autocorrelation to
about :math:`\sqrt{(1+\rho^2)/((1-\rho^2) N)} \approx 0.01` and the variance to about
:math:`\sqrt{2\tau_\mathrm{int}/N} \approx 2\,\%` (:math:`\tau_\mathrm{int} \approx 4` steps); the
training MD (20000 frames) limits what the networks can learn to a few per cent more.  The
tiny, briefly trained networks (a few seconds of training) add model error: the decoder's
GAN noise adds spread around :math:`x(\psi)`, which widens the variance and lowers the
correlations.  So the test allows 25 % on the variance and 0.1 on each autocorrelation.
A wiring error is far outside: decoding the wrong coordinate (y: variance 0.1), skipping the
latent whitening or the decoder's normalisation (variance off by the scales, here factors
of ≥ 2 in both directions), a propagator step that is not one lag (ρ₁ = 0.37 or 0.78 for
a factor 2), or walkers whose frames are shuffled or not propagated (ρ₁ ≈ 0 or 1).
The generated store's frame interval must be the lag (0.5 ps).
"""
from __future__ import annotations

import numpy as np
import pytest

KX, KPERP = 1.0, 10.0  # kJ/mol/nm² at kT = 1 kJ/mol
DT, EVERY, LAG = 0.01, 10, 5  # ps, steps per frame, frames per lag
A = 1.0 - KX * DT  # AR(1) coefficient per step (m = 1 amu, γ = 1/ps)
EXACT_VAR = 2 * DT / (1 - A ** 2)
EXACT_RHO = [A ** (EVERY * LAG * k) for k in (1, 2)]


@pytest.fixture(scope="module")
def ou_store(tmp_path_factory):
    import openmm
    from openmm import app, unit

    from lss_engine.reporters import ZarrReporter
    from lss_engine.systems import TOY_TEMPERATURE_K

    system = openmm.System()
    system.addParticle(1.0)
    force = openmm.CustomExternalForce("0.5*(kx*x^2 + kp*(y^2 + z^2))")
    force.addGlobalParameter("kx", KX)
    force.addGlobalParameter("kp", KPERP)
    force.addParticle(0, [])
    system.addForce(force)
    topology = app.Topology()
    topology.addAtom("P1", None, topology.addResidue("TOY", topology.addChain("A")))
    integrator = openmm.BrownianIntegrator(TOY_TEMPERATURE_K * unit.kelvin, 1.0 / unit.picosecond,
                                           DT * unit.picosecond)
    integrator.setRandomNumberSeed(11)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(np.zeros((1, 3)) * unit.nanometer)
    sim.step(2000)  # 20 relaxation times
    path = tmp_path_factory.mktemp("ou") / "ou.zarr"
    with ZarrReporter(path, EVERY, featurizer="positions", atoms="all", flush_interval=10000) as rep:
        sim.reporters.append(rep)
        sim.step(20000 * EVERY)
    return path


def _autocorrelation(series: list[np.ndarray], k: int, mean: float) -> float:
    num = sum(float(np.dot(s[:-k] - mean, s[k:] - mean)) for s in series)
    den = sum(float(np.dot(s - mean, s - mean)) for s in series) * (1 - k / len(series[0]))
    return num / den


def test_the_md_is_the_exact_ar1_process(ou_store):
    """The training data itself (guards the test's own arithmetic): MD variance and lag correlations."""
    from lss_engine.store import open_store

    x = open_store(ou_store).positions()[:, 0, 0].astype(np.float64)
    assert abs(x.var() / EXACT_VAR - 1) < 0.15
    for k, rho in zip((LAG, 2 * LAG), EXACT_RHO):
        assert abs(_autocorrelation([x], k, float(x.mean())) - rho) < 0.05


def test_simulator_reproduces_the_exact_variance_and_autocorrelation(ou_store, tmp_path):
    from lss_engine.pipeline import (DecoderSettings, EncoderSettings, PropagatorSettings, train_decoder,
                                     train_encoder, train_propagator)
    from lss_engine.simulator import LatentSpaceSimulator
    from lss_engine.store import open_store

    model = tmp_path / "model"
    train_encoder([ou_store], EncoderSettings(kind="srv", lag=LAG, dim=1, hidden=(32,), epochs=8, restarts=1,
                                              batch_size=500, lr=3e-3, progress=False, device="cpu"),
                  model, analyze=False)
    train_propagator(model, [ou_store], PropagatorSettings(n_components=4, hidden=(32,), epochs=8, batch_size=500,
                                                           progress=False, device="cpu"))
    meta = train_decoder(model, [ou_store], DecoderSettings(hidden=(64, 64), noise_dim=4, n_critic=2, epochs=10,
                                                            batch_size=64, lr=1e-3, progress=False, device="cpu"))
    assert meta["alignment"] == "none"
    sim = LatentSpaceSimulator.load(model)
    assert sim.alignment == "none" and sim.lag_ps == pytest.approx(LAG * EVERY * DT)
    paths = sim.generate(2000, n_walkers=10, out=tmp_path / "x.zarr", seed=3, progress=False)
    stores = [open_store(p) for p in paths]
    assert stores[0].frame_interval_ps == pytest.approx(LAG * EVERY * DT)
    xs = [s.positions()[:, 0, 0].astype(np.float64) for s in stores]
    pooled = np.concatenate(xs)
    mean, var = float(pooled.mean()), float(pooled.var())
    rho = [_autocorrelation(xs, k, mean) for k in (1, 2)]
    print(f"OU through the LSS: mean {mean:.3f} (exact 0), variance {var:.3f} (exact {EXACT_VAR:.3f}), "
          f"autocorrelation after 1 and 2 lags {rho[0]:.3f}, {rho[1]:.3f} (exact {EXACT_RHO[0]:.3f}, "
          f"{EXACT_RHO[1]:.3f})")
    assert abs(mean) < 0.25 * np.sqrt(EXACT_VAR)
    assert abs(var / EXACT_VAR - 1) < 0.25
    assert abs(rho[0] - EXACT_RHO[0]) < 0.1
    assert abs(rho[1] - EXACT_RHO[1]) < 0.1
