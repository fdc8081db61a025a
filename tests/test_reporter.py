"""ZarrReporter on real OpenMM simulations of alanine dipeptide."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import mdtraj as md
import numpy as np
import pytest
from openmm import unit
from openmm.app import DCDReporter

from lss_engine.errors import NonFiniteError, StoreError
from lss_engine.reporters import ZarrReporter
from lss_engine.store import TrajectoryStore


def test_frames_match_openmm_dcd_and_mdtraj(ala2_simulation, tmp_path):
    sim = ala2_simulation
    rep = ZarrReporter(tmp_path / "a.zarr", 20, featurizer="backbone-torsions,heavy-atom-distances",
                       atoms="heavy", flush_interval=30)
    sim.reporters.append(rep)
    sim.reporters.append(DCDReporter(str(tmp_path / "a.dcd"), 20))
    sim.step(20 * 45)
    # 45 frames reported, flush every 30: readers see 30 until the reporter flushes
    assert TrajectoryStore(tmp_path / "a.zarr").n_frames == 30
    rep.close()
    store = TrajectoryStore(tmp_path / "a.zarr")
    assert store.n_frames == 45
    np.testing.assert_array_equal(store.steps(), np.arange(1, 46) * 20)
    np.testing.assert_allclose(store.times(), store.steps() * 0.002, rtol=1e-12)
    assert store.temperature_K == pytest.approx(450.0)
    assert store.frame_interval_ps == pytest.approx(0.04)

    heavy = [a.index for a in sim.topology.atoms() if a.element.symbol != "H"]
    np.testing.assert_array_equal(store.atom_indices, heavy)
    dcd = md.load(str(tmp_path / "a.dcd"), top=md.Topology.from_openmm(sim.topology))
    np.testing.assert_allclose(store.positions(), dcd.xyz[:, heavy], atol=2e-6)

    traj = store.to_mdtraj()
    phi = md.compute_phi(traj)[1][:, 0]
    psi = md.compute_psi(traj)[1][:, 0]
    torsions = store.observable("backbone_torsions")
    np.testing.assert_allclose(torsions[:, 0], phi, atol=1e-5)
    np.testing.assert_allclose(torsions[:, 1], psi, atol=1e-5)
    pairs = np.array([(i, j) for i in range(len(heavy)) for j in range(i + 1, len(heavy))])
    np.testing.assert_allclose(store.observable("heavy_atom_distances"), md.compute_distances(traj, pairs), atol=1e-5)
    assert store.feature_spec == rep.featurizer.spec()


def test_append_continues_without_duplicates(ala2_simulation, tmp_path):
    sim = ala2_simulation
    path = tmp_path / "b.zarr"
    with ZarrReporter(path, 10, featurizer="backbone-torsions", atoms="none", flush_interval=7) as rep:
        sim.reporters.append(rep)
        sim.step(250)
    sim.reporters.clear()
    with ZarrReporter(path, 10, featurizer="backbone-torsions", atoms="none", append=True) as rep:
        sim.reporters.append(rep)
        sim.step(150)
    store = TrajectoryStore(path)
    np.testing.assert_array_equal(store.steps(), np.arange(1, 41) * 10)
    assert store.n_atoms_system == 22 and len(store.atom_indices) == 0


def test_restart_from_checkpoint_drops_later_frames(ala2_system, tmp_path):
    path = tmp_path / "c.zarr"
    sim = ala2_system.make_simulation(platform="Reference", seed=1)
    with ZarrReporter(path, 10, featurizer="backbone-torsions", atoms="heavy", flush_interval=5) as rep:
        sim.reporters.append(rep)
        sim.step(300)
        checkpoint = sim.context.getState(getPositions=True, getVelocities=True)
        sim.saveState(str(tmp_path / "state.xml"))
        sim.step(200)  # frames 310..500 are stored, then the run "crashes"
    first = TrajectoryStore(path)
    assert first.steps()[-1] == 500
    kept = first.positions(0, 30)

    restart = ala2_system.make_simulation(platform="Reference", seed=2, minimize=False)
    restart.loadState(str(tmp_path / "state.xml"))
    assert restart.currentStep == 300
    with ZarrReporter(path, 10, featurizer="backbone-torsions", atoms="heavy", append=True) as rep:
        restart.reporters.append(rep)
        restart.step(100)
    store = TrajectoryStore(path)
    steps = store.steps()
    np.testing.assert_array_equal(steps, np.arange(1, 41) * 10)  # 10..400, each once
    np.testing.assert_array_equal(store.positions(0, 30), kept)
    np.testing.assert_allclose(store.positions(29, 30)[0],
                               checkpoint.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[store.atom_indices],
                               atol=1e-6)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(featurizer="heavy-atom-distances"), "feature spec differs"),
        (dict(atoms="ca"), "saves"),
        (dict(interval=20), "report interval"),
    ],
)
def test_append_refuses_mismatch(ala2_simulation, tmp_path, change, message):
    sim = ala2_simulation
    path = tmp_path / "d.zarr"
    with ZarrReporter(path, 10, featurizer="backbone-torsions", atoms="heavy") as rep:
        sim.reporters.append(rep)
        sim.step(50)
    sim.reporters.clear()
    kwargs = dict(featurizer="backbone-torsions", atoms="heavy")
    interval = change.pop("interval", 10)
    kwargs.update(change)
    rep = ZarrReporter(path, interval, append=True, **kwargs)
    sim.reporters.append(rep)
    with pytest.raises(StoreError, match=message):
        sim.step(10)
    assert TrajectoryStore(path).n_frames == 5  # nothing already written is lost


def test_append_refuses_other_timestep(ala2_system, tmp_path):
    path = tmp_path / "e.zarr"
    sim = ala2_system.make_simulation(platform="Reference", seed=1)
    with ZarrReporter(path, 10, featurizer="backbone-torsions") as rep:
        sim.reporters.append(rep)
        sim.step(30)
    other = ala2_system.make_simulation(platform="Reference", seed=1)
    other.integrator.setStepSize(0.001)
    other.reporters.append(ZarrReporter(path, 10, featurizer="backbone-torsions", append=True))
    with pytest.raises(StoreError, match="time step"):
        other.step(10)


@pytest.mark.parametrize("value", [np.nan, 1e39])
def test_non_finite_positions_name_the_step(ala2_simulation, tmp_path, value):
    """NaN, and a coordinate finite in float64 but past float32 (the store's dtype: it would be stored as inf)."""
    sim = ala2_simulation
    rep = ZarrReporter(tmp_path / "f.zarr", 10, featurizer="backbone-torsions", flush_interval=100)
    sim.reporters.append(rep)
    sim.step(70)
    positions = sim.context.getState(getPositions=True).getPositions(asNumpy=True)
    bad = positions.value_in_unit(unit.nanometer).copy()
    bad[3, 1] = value
    sim.context.setPositions(bad)
    state = sim.context.getState(getPositions=True)
    with pytest.raises(NonFiniteError, match="step 70"):
        rep.report(sim, state)
    assert TrajectoryStore(tmp_path / "f.zarr").n_frames == 7


def test_context_manager_closes(ala2_simulation, tmp_path):
    sim = ala2_simulation
    with ZarrReporter(tmp_path / "g.zarr", 10, featurizer=None, atoms="heavy") as rep:
        sim.reporters.append(rep)
        sim.step(30)
    assert rep.frames_committed == 3
    with pytest.raises(StoreError, match="closed"):
        sim.step(10)


_CHILD = textwrap.dedent(
    """
    import sys
    from lss_engine.reporters import ZarrReporter
    from lss_engine.systems import get_system

    class StepPrinter:  # tells the parent which frames were handed to the ZarrReporter
        def describeNextReport(self, simulation):
            return {"steps": 10 - simulation.currentStep % 10, "periodic": None, "include": []}
        def report(self, simulation, state):
            print(simulation.currentStep, flush=True)

    sim = get_system("alanine-dipeptide", temperature=450).make_simulation(platform="Reference", seed=5)
    sim.reporters.append(ZarrReporter(sys.argv[1], 10, featurizer="backbone-torsions,heavy-atom-distances",
                                      atoms="heavy", flush_interval=int(sys.argv[2])))
    sim.reporters.append(StepPrinter())
    sim.step(int(sys.argv[3]))
    """
)


def test_sigkill_loses_at_most_flush_interval(tmp_path):
    path = tmp_path / "killed.zarr"
    flush = 25
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), str(flush), "100000000"],
                             stdout=subprocess.PIPE, text=True)
    try:
        reported = 0
        deadline = time.time() + 120
        while reported < 20_000 and time.time() < deadline:  # 2,000 frames, ~80 flushes
            line = child.stdout.readline()
            if not line:
                break
            reported = int(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)
    rest = child.stdout.read().split()
    child.wait()
    last_reported = int(rest[-1]) if rest else reported
    assert reported >= 2000
    store = TrajectoryStore(path)
    frames_reported = last_reported // 10
    assert store.n_frames >= frames_reported - flush
    features = store.features()
    assert features.shape == (store.n_frames, store.n_features)
    assert np.isfinite(features).all() and np.isfinite(store.positions()).all()
    np.testing.assert_array_equal(store.steps(), np.arange(1, store.n_frames + 1) * 10)
    assert store.verify() == []  # every committed chunk is there and its checksum holds
    # a killed store can be continued
    sim = __import__("lss_engine.systems", fromlist=["get_system"]).get_system(
        "alanine-dipeptide", temperature=450).make_simulation(platform="Reference", seed=6)
    sim.currentStep = int(store.steps()[-1])
    with ZarrReporter(path, 10, featurizer="backbone-torsions,heavy-atom-distances", atoms="heavy",
                      append=True) as rep:
        sim.reporters.append(rep)
        sim.step(100)
    assert TrajectoryStore(path).n_frames == store.n_frames + 10


def test_flush_at_interpreter_exit(tmp_path):
    path = tmp_path / "exit.zarr"
    subprocess.run([sys.executable, "-c", _CHILD, str(path), "1000", "370"], check=True, capture_output=True)
    assert TrajectoryStore(path).n_frames == 37


def test_integrator_temperature_of_custom_integrators():
    """Stores record the temperature of MTSLangevinIntegrator (a CustomIntegrator with a ``kT`` global) too:
    kT / R back to kelvin is exact up to float rounding."""
    import openmm
    from openmm import unit

    from lss_engine.reporters.zarr_reporter import integrator_temperature

    mts = openmm.MTSLangevinIntegrator(450 * unit.kelvin, 1 / unit.picosecond, 0.004 * unit.picoseconds,
                                       [(0, 2), (1, 1)])
    assert integrator_temperature(mts) == pytest.approx(450.0, rel=1e-12)
    assert integrator_temperature(openmm.LangevinMiddleIntegrator(300, 1, 0.002)) == 300.0
    assert integrator_temperature(openmm.VerletIntegrator(0.001)) is None
