"""LatentReporter: latent coordinates, bias energy and bias parameters recorded during real MD.

Every run here is real OpenMM MD (Reference platform) of the 450 K alanine
dipeptide with the real SRV of the ``ala2_model`` fixture (2 latent
coordinates), its latent bias force built by
:func:`~lss_engine.bias.latent_bias_force`.  The references are
independent of the reporter: the :class:`~lss_engine.encoder.Encoder`
Python path (numpy features of the spec's featurizer → float32 network) on
the positions a :class:`~lss_engine.reporters.ZarrReporter` recorded
alongside, and the bias energy in closed form (numpy) from the recorded
latent and parameters.
"""
from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import openmm
import pytest
from openmm import app, unit

from lss_engine.bias import (
    FlatBottomWalls,
    GaussianSum,
    HarmonicRestraint,
    latent_bias_force,
    latent_training_range,
)
from lss_engine.encoder import Encoder
from lss_engine.errors import LssError, StoreError
from lss_engine.features import featurizer_from_spec
from lss_engine.reporters import LatentReporter, ZarrReporter, read_latent_store
from lss_engine.store import TrajectoryStore

INTERVAL = 10
#: the umbrella windows of the biased run: (last step, centre, stiffness); κ_2 = 0 in the last
WINDOWS = [(200, [0.4, -0.3], [30.0, 20.0]), (400, [-0.2, 0.5], [60.0, 40.0]), (500, [0.1, 0.1], [25.0, 0.0])]
GAUSSIANS = {"centres": [[0.0, 0.0], [0.5, -0.5]], "widths": [0.4, 0.3], "heights": [3.0, 2.0]}


# --------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def start(ala2_system) -> np.ndarray:
    """A minimised, briefly equilibrated 450 K conformation (22, 3) nm."""
    sim = ala2_system.make_simulation(platform="Reference", seed=5)
    sim.step(100)
    return np.asarray(sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))


def python_latent(encoder: Encoder, xyz: np.ndarray) -> np.ndarray:
    """The Encoder's Python path on positions ``(n, 22, 3)``: numpy features → ``Encoder.latent``."""
    return encoder.latent(featurizer_from_spec(encoder.feature_spec).compute(np.asarray(xyz, dtype=np.float64)))


def simulation(ala2_system, start: np.ndarray, force=None, seed: int = 5) -> app.Simulation:
    system = copy.deepcopy(ala2_system.system)  # before the TorchForce: a System holding one cannot be copied
    if force is not None:
        system.addForce(force)
    sim = app.Simulation(ala2_system.topology, system, ala2_system.make_integrator(seed),
                         openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(start * unit.nanometer)
    sim.context.setVelocitiesToTemperature(450 * unit.kelvin, seed)
    return sim


def closed_form_bias(s: np.ndarray, centre: np.ndarray, kappa: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                     k_wall: float) -> np.ndarray:
    """½ Σ κ (s − s0)² + ½ κ_w Σ [max(0, s − h)² + max(0, l − s)²] + Σ_j h_j exp(−½ Σ ((s − c_j)/σ)²), numpy."""
    restraint = 0.5 * np.sum(kappa * (s - centre) ** 2, axis=1)
    walls = 0.5 * k_wall * np.sum(np.maximum(0, s - upper) ** 2 + np.maximum(0, lower - s) ** 2, axis=1)
    c, w, h = (np.asarray(GAUSSIANS[k], dtype=np.float64) for k in ("centres", "widths", "heights"))
    hills = np.sum(h * np.exp(-0.5 * np.sum(((s[:, None, :] - c) / w) ** 2, axis=2)), axis=1)
    return restraint + walls + hills


@pytest.fixture(scope="module")
def biased_run(ala2_model, ala2_system, start, tmp_path_factory):
    """Three umbrella windows switched with ``setParameter`` mid-run; a ZarrReporter records positions alongside."""
    root = tmp_path_factory.mktemp("latent")
    force, bias = latent_bias_force(ala2_model, restraint=HarmonicRestraint(*WINDOWS[0][1:]), walls="auto",
                                    gaussians=GaussianSum(**GAUSSIANS), force_group=9)
    sim = simulation(ala2_system, start, force)
    latent = LatentReporter(root / "latent.zarr", INTERVAL, bias, flush_interval=7)
    positions = ZarrReporter(root / "positions.zarr", INTERVAL, atoms="all", flush_interval=64)
    sim.reporters += [latent, positions]
    done = 0
    for end, centre, kappa in WINDOWS:
        bias.set_centre(sim.context, centre)
        bias.set_stiffness(sim.context, kappa)
        sim.step(end - done)
        done = end
    latent.close()
    positions.close()
    return {"latent": root / "latent.zarr", "positions": root / "positions.zarr", "bias": bias, "reporter": latent}


# --------------------------------------------------------------------------
# the biased run


def test_latent_equals_the_encoder_on_the_stored_positions(biased_run, encoder):
    """Read back from the force (κ > 0) or encoded (κ_2 = 0): both equal the Encoder's Python path to 1e-5."""
    record = read_latent_store(biased_run["latent"])
    md = TrajectoryStore(biased_run["positions"])
    assert len(record.steps) == len(md) == 50
    np.testing.assert_array_equal(record.steps, md.steps())
    np.testing.assert_array_equal(record.steps, np.arange(1, 51) * INTERVAL)
    reference = python_latent(encoder, md.positions())
    np.testing.assert_allclose(record.latent, reference, rtol=0, atol=1e-5)
    # the frames of the first two windows were read back from the force, the last window's were encoded
    reporter = biased_run["reporter"]
    assert (reporter.n_read_back, reporter.n_encoded) == (40, 10)
    assert np.ptp(record.latent, axis=0).min() > 0.1  # the latent moved: the check is not of one point


def test_bias_energy_is_the_formula_of_the_recorded_latent_and_parameters(biased_run, ala2_model):
    """Recorded energy (the bias group's, from OpenMM) == restraint + walls + Gaussians in closed form."""
    record = read_latent_store(biased_run["latent"])
    lo, hi = latent_training_range(ala2_model)
    walls = FlatBottomWalls.from_range(lo, hi)  # walls="auto"
    lower, upper = walls.lower.numpy(), walls.upper.numpy()
    centre = np.stack([record.parameter("lss_s0_0"), record.parameter("lss_s0_1")], axis=1)
    kappa = np.stack([record.parameter("lss_kappa_0"), record.parameter("lss_kappa_1")], axis=1)
    expected = closed_form_bias(record.latent, centre, kappa, lower, upper, FlatBottomWalls.DEFAULT_STIFFNESS)
    assert np.all(record.bias_energy > 0)
    np.testing.assert_allclose(record.bias_energy, expected, rtol=1e-5, atol=1e-5)
    # the store alone rebuilds the bias: its terms, fixed values included, give the same energies
    np.testing.assert_allclose(record.bias_energy_of(record.latent, record.parameters), record.bias_energy,
                               rtol=1e-5, atol=1e-5)
    terms = record.setup["terms"]
    assert [t["type"] for t in terms] == ["HarmonicRestraint", "FlatBottomWalls", "GaussianSum"]
    np.testing.assert_allclose(terms[1]["lower"], lower)
    np.testing.assert_allclose(terms[2]["heights"], GAUSSIANS["heights"])
    with pytest.raises(LssError, match="change during the run"):
        record.bias_energy_of(record.latent)  # three windows: no single bias


def test_window_switch_shows_in_the_recorded_parameters_at_the_right_frames(biased_run):
    """setParameter after step 200 (and 400): frames up to step 200 carry window 1, from 210 on window 2, ..."""
    record = read_latent_store(biased_run["latent"])
    assert record.parameter_names == ("lss_s0_0", "lss_s0_1", "lss_kappa_0", "lss_kappa_1")
    first = 0
    for end, centre, kappa in WINDOWS:
        frames = (record.steps > first) & (record.steps <= end)
        assert frames.sum() == (end - first) // INTERVAL
        expected = np.array(centre + kappa, dtype=np.float32).astype(np.float64)  # stored as float32
        np.testing.assert_array_equal(record.parameters[frames], np.broadcast_to(expected, (frames.sum(), 4)))
        first = end


def test_store_layout_read_through_trajectory_store(biased_run, ala2_system):
    """Observables, columns, units, step/time and parameters as documented; provenance holds the setup."""
    store = TrajectoryStore(biased_run["latent"])
    assert len(store) == 50
    assert sorted(store.observable_names) == ["bias_energy", "bias_parameters", "latent"]
    assert store.feature_names == ["bias_energy", "lss_s0_0", "lss_s0_1", "lss_kappa_0", "lss_kappa_1",
                                   "psi1", "psi2"]
    assert store.feature_units == ["kJ/mol", "1", "1", "kJ/mol", "kJ/mol", "1", "1"]
    assert store.report_interval == INTERVAL
    assert store.timestep_ps == pytest.approx(ala2_system.make_integrator(1).getStepSize().value_in_unit(unit.picosecond))
    assert store.temperature_K == pytest.approx(450.0)
    assert len(store.atom_indices) == 0 and store.n_atoms_system == 22
    np.testing.assert_allclose(store.times(), store.steps() * store.timestep_ps, rtol=1e-12)
    assert store.observable("latent").shape == (50, 2) and store.observable("bias_energy").shape == (50, 1)
    setup = store.provenance["latent_reporter"]
    assert setup["mode"] == "bias" and setup["n_dim"] == 2 and setup["force_group"] == 9
    assert setup["latent_names"] == ["psi1", "psi2"] and len(setup["encoder_sha256"]) == 64
    assert store.verify() == []


def test_flush_boundary_commits_whole_flushes(ala2_model, ala2_system, start, tmp_path):
    """Readers see only committed frames: every flush_interval frames, then the rest at close."""
    force, bias = latent_bias_force(ala2_model, restraint=HarmonicRestraint([0.0, 0.0], 10.0), force_group=9)
    sim = simulation(ala2_system, start, force)
    path = tmp_path / "latent.zarr"
    with LatentReporter(path, 5, bias, flush_interval=4) as reporter:
        sim.reporters.append(reporter)
        sim.step(15)  # 3 frames, all buffered
        assert reporter.frames_committed == 0 and len(TrajectoryStore(path)) == 0
        sim.step(15)  # 6 frames: one flush of 4
        assert reporter.frames_committed == 4
        store = TrajectoryStore(path)
        assert len(store) == 4
        np.testing.assert_array_equal(store.steps(), [5, 10, 15, 20])
        assert np.isfinite(store.observable("latent")).all()
    assert len(TrajectoryStore(path)) == 6
    with pytest.raises(StoreError, match="closed"):
        reporter.report(sim, sim.context.getState())


# --------------------------------------------------------------------------
# unbiased use, append, checks


def test_unbiased_mode_records_the_encoder_latent(ala2_model, ala2_system, start, encoder, tmp_path):
    """encoder= without bias: the latent of the positions, bias energy 0, no parameters."""
    sim = simulation(ala2_system, start, seed=8)
    latent = LatentReporter(tmp_path / "latent.zarr", INTERVAL, encoder=ala2_model, flush_interval=6)
    positions = ZarrReporter(tmp_path / "positions.zarr", INTERVAL, atoms="all")
    sim.reporters += [latent, positions]
    sim.step(200)
    latent.close()
    positions.close()
    record = read_latent_store(tmp_path / "latent.zarr")
    md = TrajectoryStore(tmp_path / "positions.zarr")
    np.testing.assert_array_equal(record.steps, md.steps())
    np.testing.assert_allclose(record.latent, python_latent(encoder, md.positions()), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(record.bias_energy, np.zeros(20))
    assert record.parameter_names == () and record.parameters.shape == (20, 0)
    assert sorted(TrajectoryStore(tmp_path / "latent.zarr").observable_names) == ["bias_energy", "latent"]
    assert record.setup["mode"] == "none" and record.terms() == []
    np.testing.assert_array_equal(record.bias_energy_of(record.latent), np.zeros(20))
    assert latent.n_encoded == 20 and latent.n_read_back == 0


def test_walls_only_bias_uses_the_encoder(ala2_model, ala2_system, start, encoder, tmp_path):
    """No restraint, so nothing to read back: the latent is encoded and the energy is the walls'."""
    walls = FlatBottomWalls([-0.2, -0.2], [0.2, 0.2], stiffness=50.0)  # narrow: the walls act
    force, bias = latent_bias_force(ala2_model, walls=walls, force_group=9)
    with pytest.raises(LssError, match="read-back"):
        LatentReporter(tmp_path / "x.zarr", INTERVAL, bias, latent_source="read-back")
    sim = simulation(ala2_system, start, force)
    with LatentReporter(tmp_path / "latent.zarr", INTERVAL, bias) as reporter:
        positions = ZarrReporter(tmp_path / "positions.zarr", INTERVAL, atoms="all")
        sim.reporters += [reporter, positions]
        sim.step(100)
        positions.close()
    record = read_latent_store(tmp_path / "latent.zarr")
    assert reporter.n_encoded == 10 and record.parameter_names == ()
    np.testing.assert_allclose(record.latent, python_latent(encoder, TrajectoryStore(tmp_path / "positions.zarr")
                                                            .positions()), rtol=0, atol=1e-5)
    s = record.latent
    expected = 0.5 * 50.0 * np.sum(np.maximum(0, s - 0.2) ** 2 + np.maximum(0, -0.2 - s) ** 2, axis=1)
    assert np.all(expected > 0)
    np.testing.assert_allclose(record.bias_energy, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(record.bias_energy_of(s), record.bias_energy, rtol=1e-5, atol=1e-6)


def test_append_continues_and_refuses_another_setup(ala2_model, ala2_system, start, tmp_path):
    """append=True continues after the last frame (a restart drops later frames); another setup is refused."""
    restraint = HarmonicRestraint([0.0, 0.0], 10.0)
    force, bias = latent_bias_force(ala2_model, restraint=restraint, walls="auto", force_group=9)
    sim = simulation(ala2_system, start, force)
    path = tmp_path / "latent.zarr"
    with LatentReporter(path, INTERVAL, bias, flush_interval=4) as first:
        sim.reporters.append(first)
        sim.step(100)
    checkpoint = sim.context.getState(getPositions=True, getVelocities=True, getParameters=True)
    sim.reporters.clear()
    with LatentReporter(path, INTERVAL, bias, append=True, flush_interval=4) as second:
        sim.reporters.append(second)
        sim.step(60)
    np.testing.assert_array_equal(read_latent_store(path).steps, np.arange(1, 17) * INTERVAL)
    # restart from the checkpoint at step 100: frames after it are dropped, then recorded again
    sim.reporters.clear()
    sim.context.setState(checkpoint)
    sim.currentStep = 100
    bias.set_centre(sim.context, [0.5, 0.5])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with LatentReporter(path, INTERVAL, bias, append=True) as third:
            sim.reporters.append(third)
            sim.step(30)
    assert not [w for w in caught if "missing" in str(w.message)]  # no gap: the restart continues at step 100
    record = read_latent_store(path)
    np.testing.assert_array_equal(record.steps, np.arange(1, 14) * INTERVAL)
    np.testing.assert_allclose(record.parameter("lss_s0_0"), [0.0] * 10 + [0.5] * 3)
    sim.reporters.clear()

    def refused(match: str, *args, **kwargs) -> None:
        reporter = LatentReporter(path, *args, append=True, **kwargs)
        with pytest.raises(StoreError, match=match):
            reporter.describeNextReport(sim)
        assert len(TrajectoryStore(path)) == 13  # untouched

    refused("report interval", 2 * INTERVAL, bias)
    refused("setup differs.*mode", INTERVAL, encoder=ala2_model)
    # other walls: another bias, another thermodynamic state
    other_force, other = latent_bias_force(ala2_model, restraint=restraint,
                                           walls=FlatBottomWalls([-3.0, -3.0], [3.0, 3.0]), force_group=9)
    sim_other = simulation(ala2_system, start, other_force)
    reporter = LatentReporter(path, INTERVAL, other, append=True)
    with pytest.raises(StoreError, match="setup differs.*terms"):
        reporter.describeNextReport(sim_other)
    # another encoder (one latent coordinate of the same model)
    one_force, one = latent_bias_force(ala2_model, restraint=HarmonicRestraint([0.0], 10.0), dim=1, force_group=9)
    sim_one = simulation(ala2_system, start, one_force)
    reporter = LatentReporter(path, INTERVAL, one, append=True)
    with pytest.raises(StoreError, match="setup differs"):
        reporter.describeNextReport(sim_one)
    assert len(TrajectoryStore(path)) == 13


def test_reporter_checks_that_the_bias_fits_the_simulation(ala2_model, ala2_system, start, tmp_path):
    force, bias = latent_bias_force(ala2_model, restraint=HarmonicRestraint([0.0, 0.0], 10.0), force_group=0)
    sim = simulation(ala2_system, start, force)  # group 0 also holds the molecule's forces
    with pytest.raises(LssError, match="group 0.*alone"):
        LatentReporter(tmp_path / "a.zarr", INTERVAL, bias).describeNextReport(sim)
    _, absent = latent_bias_force(ala2_model, restraint=HarmonicRestraint([0.0, 0.0], 10.0), force_group=9)
    plain = simulation(ala2_system, start)
    with pytest.raises(LssError, match="group 9, which holds no force"):
        LatentReporter(tmp_path / "b.zarr", INTERVAL, absent).describeNextReport(plain)
    with pytest.raises(LssError, match="exactly one"):
        LatentReporter(tmp_path / "c.zarr", INTERVAL, bias, encoder=ala2_model)
    with pytest.raises(LssError, match="exactly one"):
        LatentReporter(tmp_path / "c.zarr", INTERVAL)
    assert not any((tmp_path / n).exists() for n in ("a.zarr", "b.zarr", "c.zarr"))


def test_reporting_does_not_change_the_trajectory(ala2_model, ala2_system, start, tmp_path):
    """The reporter's own getState of the bias group leaves the dynamics bit for bit as without it."""
    force, bias = latent_bias_force(ala2_model, restraint=HarmonicRestraint([0.3, 0.3], 40.0), force_group=9)
    sim = simulation(ala2_system, start, force, seed=21)
    initial = sim.context.getState(getPositions=True, getVelocities=True)

    def run(reporter: LatentReporter | None) -> np.ndarray:
        sim.context.reinitialize()  # the integrator's random stream starts again from its seed
        sim.context.setState(initial)
        sim.reporters[:] = [] if reporter is None else [reporter]
        sim.step(70)
        return sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value

    without = run(None)
    with LatentReporter(tmp_path / "latent.zarr", 7, bias, flush_interval=3) as reporter:
        with_reporter = run(reporter)
    assert reporter.frames_committed == 10 and reporter.n_read_back == 10
    np.testing.assert_array_equal(with_reporter, without)


def test_non_finite_positions_raise_after_the_earlier_frames_are_committed(ala2_model, ala2_system, start, tmp_path):
    from lss_engine.errors import NonFiniteError

    sim = simulation(ala2_system, start, seed=4)
    path = tmp_path / "latent.zarr"
    reporter = LatentReporter(path, INTERVAL, encoder=ala2_model, flush_interval=10)
    sim.reporters.append(reporter)
    sim.step(30)
    assert reporter.frames_committed == 0
    bad = start.copy()
    bad[3, 0] = np.nan
    sim.context.setPositions(bad * unit.nanometer)
    with pytest.raises(NonFiniteError, match="step 30; 3 earlier frames are committed"):
        reporter.report(sim, sim.context.getState(getPositions=True))
    np.testing.assert_array_equal(TrajectoryStore(path).steps(), [10, 20, 30])
    reporter.close()


def test_catch_up_records_a_report_step_the_simulation_skipped(ala2_model, ala2_system, start, tmp_path):
    """A run stopped between an integration step and its report (Ctrl-C) records that frame with catch_up."""
    force, bias = latent_bias_force(ala2_model, restraint=HarmonicRestraint([0.0, 0.0], 10.0), force_group=9)
    sim = simulation(ala2_system, start, force)
    with LatentReporter(tmp_path / "latent.zarr", INTERVAL, bias) as reporter:
        sim.reporters.append(reporter)
        sim.step(20)
        sim.integrator.step(INTERVAL)  # integrated (the Context counts the step), not reported
        assert sim.currentStep == 30
        reporter.catch_up(sim)
        reporter.catch_up(sim)  # once only
    np.testing.assert_array_equal(read_latent_store(tmp_path / "latent.zarr").steps, [10, 20, 30])


def test_lss_reweight_weighs_windows_by_mbar_on_the_closed_form_biases(ala2_model, ala2_system, start, tmp_path,
                                                                       capsys, biased_run):
    """``lss reweight`` on two fixed-bias runs equals MBAR on a bias matrix built independently of the stores'
    terms, the closed form ½Σκ(s − s0)² at the pooled recorded latent (float32 stores: 1e-6 in log weights);
    a run whose window changes mid-run (``biased_run``) is refused with one line."""
    from lss_engine.bias import mbar_weights, run_labels
    from lss_engine.cli import main

    windows = [([0.3, -0.2], [40.0, 0.0]), ([-0.3, 0.4], [40.0, 0.0])]
    stores = []
    for k, (centre, kappa) in enumerate(windows):
        force, bias = latent_bias_force(ala2_model, restraint=HarmonicRestraint(centre, kappa), force_group=9)
        sim = simulation(ala2_system, start, force, seed=11 + k)
        stores.append(tmp_path / f"w{k}.zarr")
        with LatentReporter(stores[-1], INTERVAL, bias, latent_source="encoder") as reporter:
            sim.reporters.append(reporter)
            sim.step(300)
    assert main(["reweight", *map(str, stores), "--coordinate", "1", "--bins", "10", "--out",
                 str(tmp_path / "out")]) == 0
    assert "lss reweight: 2 runs, 60 frames" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    records = [read_latent_store(s) for s in stores]
    s = np.concatenate([r.latent.astype(float) for r in records])
    kT = metrics["kT_kJ_mol"]
    assert kT == pytest.approx(450.0 * 0.0083144626, rel=1e-6)
    bias_kn = np.stack([0.5 * (np.asarray(k) * (s - np.asarray(c)) ** 2).sum(1) for c, k in windows])
    expected = mbar_weights(bias_kn, run_labels([len(r.latent) for r in records]), kT=kT)
    np.testing.assert_allclose(metrics["reweighting"]["f_k"], expected.f_k, atol=1e-6)
    assert (tmp_path / "out" / "fes.png").is_file()
    assert main(["reweight", str(biased_run["latent"]), str(stores[0])]) == 1
    assert "change during the run" in capsys.readouterr().err
