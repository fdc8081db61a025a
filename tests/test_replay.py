"""LatentSimulation: OpenMM's own reporters record frames replayed from real alanine dipeptide MD."""
from __future__ import annotations

import os
import signal
import struct

import mdtraj as md
import numpy as np
import pytest
import openmm
from openmm import app, unit

from lss_engine.errors import LssError, NonFiniteError, StoreError
from lss_engine.replay import ArrayFrameSource, FrameSource, LatentSimulation
from lss_engine.reporters import ZarrReporter
from lss_engine.store import open_store

N_FRAMES = 50
MD_STEPS_PER_FRAME = 10
LAG_PS = 0.02  # 10 MD steps of 2 fs


@pytest.fixture(scope="module")
def md_run(ala2_system):
    """Start positions and 50 frames (every 10 steps) of 450 K alanine dipeptide MD, in nm."""
    sim = ala2_system.make_simulation(platform="Reference", seed=11)
    start = sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    frames = []
    for _ in range(N_FRAMES):
        sim.step(MD_STEPS_PER_FRAME)
        frames.append(sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return ala2_system.topology, np.asarray(start), np.asarray(frames)


def replay(md_run, **kwargs) -> LatentSimulation:
    topology, start, frames = md_run
    return LatentSimulation(topology, ArrayFrameSource(frames, initial=start), LAG_PS, **kwargs)


def mdtop(topology) -> md.Topology:
    return md.Topology.from_openmm(topology)


def dcd_header(path) -> dict:
    """NSET, ISTART, NSAVC, last step and time step (ps) from a DCD header as OpenMM's DCDFile writes it."""
    raw = open(path, "rb").read(48)
    nset, istart, nsavc, last = struct.unpack("<4i", raw[8:24])
    (dt_akma,) = struct.unpack("<f", raw[44:48])
    return {"frames": nset, "first_step": istart, "interval": nsavc, "last_step": last, "dt_ps": dt_akma * 0.04888821}


@pytest.mark.parametrize("interval", [1, 3])
def test_dcd_records_source_frames_at_report_steps(md_run, tmp_path, interval):
    topology, _, frames = md_run
    sim = replay(md_run)
    path = tmp_path / "replay.dcd"
    sim.reporters.append(app.DCDReporter(str(path), interval))
    sim.step(N_FRAMES)
    del sim.reporters[:]  # DCDReporter closes its file when collected

    traj = md.load(str(path), top=mdtop(topology))
    expected = frames[interval - 1::interval]  # frame i is at step i + 1
    assert traj.n_frames == N_FRAMES // interval
    np.testing.assert_allclose(traj.xyz, expected, atol=2e-6)
    header = dcd_header(path)
    assert header["frames"] == N_FRAMES // interval
    assert (header["first_step"], header["interval"]) == (interval, interval)
    assert header["last_step"] == interval * (N_FRAMES // interval)
    assert header["dt_ps"] == pytest.approx(LAG_PS, rel=1e-6)
    assert sim.currentStep == N_FRAMES
    assert sim.context.getState().getTime().value_in_unit(unit.picosecond) == pytest.approx(N_FRAMES * LAG_PS)


def test_xtc_and_pdb_reporters(md_run, tmp_path):
    topology, _, frames = md_run
    sim = replay(md_run)
    sim.reporters.append(app.XTCReporter(str(tmp_path / "r.xtc"), 2))
    sim.reporters.append(app.PDBReporter(str(tmp_path / "r.pdb"), 5))
    sim.step(N_FRAMES)
    sim.reporters.clear()  # PDBReporter writes its footer and closes when collected

    xtc = md.load(str(tmp_path / "r.xtc"), top=mdtop(topology))
    np.testing.assert_allclose(xtc.xyz, frames[1::2], atol=6e-4)  # xtc precision: 0.001 nm
    np.testing.assert_allclose(xtc.time, np.arange(1, N_FRAMES // 2 + 1) * 2 * LAG_PS, rtol=1e-5)
    pdb = md.load(str(tmp_path / "r.pdb"))
    assert pdb.n_frames == N_FRAMES // 5 and pdb.n_atoms == topology.getNumAtoms()
    np.testing.assert_allclose(pdb.xyz, frames[4::5], atol=6e-5)  # PDB: 0.001 Angstrom


def test_state_data_reporter_clock_columns(md_run, tmp_path):
    sim = replay(md_run)
    path = tmp_path / "log.csv"
    sim.reporters.append(app.StateDataReporter(str(path), 5, step=True, time=True, speed=True, progress=True,
                                               elapsedTime=True, remainingTime=True, totalSteps=N_FRAMES))
    sim.step(N_FRAMES)
    sim.reporters.clear()
    lines = path.read_text().splitlines()
    assert lines[0].startswith('#"Progress (%)","Step","Time (ps)","Speed (ns/day)"')
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == N_FRAMES // 5
    steps = np.array([int(r[1]) for r in rows])
    np.testing.assert_array_equal(steps, np.arange(5, N_FRAMES + 1, 5))
    np.testing.assert_allclose([float(r[2]) for r in rows], steps * LAG_PS, rtol=1e-12)
    assert rows[-1][0] == "100.0%"
    assert all(float(r[4]) >= 0 for r in rows)  # elapsed seconds
    assert rows[-1][5] == "0:00"  # nothing remains


@pytest.mark.parametrize("flags, named", [(dict(potentialEnergy=True), "potentialEnergy"),
                                          (dict(temperature=True), "temperature"),
                                          (dict(density=True), "density")])
def test_energy_columns_raise_before_anything_is_written(md_run, tmp_path, flags, named):
    sim = replay(md_run)
    sim.reporters.append(app.DCDReporter(str(tmp_path / "a.dcd"), 1))
    sim.reporters.append(app.StateDataReporter(str(tmp_path / "log.csv"), 3, step=True, **flags))
    with pytest.raises(LssError, match=rf"StateDataReporter asks for {named}.*step, time, speed") as info:
        sim.step(10)
    assert "\n" not in str(info.value)
    sim.reporters.clear()
    assert (tmp_path / "log.csv").read_text() == ""
    assert os.path.getsize(tmp_path / "a.dcd") == 0  # DCDReporter writes its header with the first frame
    assert sim.currentStep == 0 and sim.source.frame_index == -1


class Recorder:
    """Records (currentStep, time) at each report; answers in OpenMM's old tuple form or the dict form."""

    def __init__(self, interval, tuple_form=False, include=("positions",)):
        self.interval, self.tuple_form, self.include, self.calls = interval, tuple_form, include, []

    def describeNextReport(self, simulation):
        steps = self.interval - simulation.currentStep % self.interval if self.interval else 0
        if self.tuple_form:
            return (steps, *(name in self.include for name in ("positions", "velocities", "forces", "energy")), None)
        return {"steps": steps, "periodic": None, "include": list(self.include)}

    def report(self, simulation, state):
        self.calls.append((simulation.currentStep, round(state.getTime().value_in_unit(unit.picosecond), 9)))


def test_reports_at_the_steps_openmm_simulation_uses(md_run):
    def schedule(sim):
        reporters = [Recorder(3), Recorder(4, include=()), Recorder(5, tuple_form=True), Recorder(0)]
        sim.reporters.extend(reporters)
        sim.step(7)
        sim.currentStep = 20  # settable as in OpenMM: the time is not changed
        sim.step(9)
        return [[step for step, _ in r.calls] for r in reporters], reporters[0].calls

    topology, start, _ = md_run
    free = openmm.System()  # a real openmm.app.Simulation: no forces, so any step size is stable
    for atom in topology.atoms():
        free.addParticle(atom.element.mass)
    md_sim = app.Simulation(topology, free, openmm.VerletIntegrator(LAG_PS),
                            openmm.Platform.getPlatformByName("Reference"))
    md_sim.context.setPositions(start)
    expected, md_calls = schedule(md_sim)
    got, calls = schedule(replay(md_run))
    assert got == expected
    assert got[3] == []  # a reporter answering steps 0 never reports
    np.testing.assert_allclose([t for _, t in calls], [t for _, t in md_calls], rtol=1e-6)


def test_tuple_form_asking_for_forces_is_refused(md_run):
    sim = replay(md_run)
    sim.reporters.append(Recorder(2, tuple_form=True, include=("positions", "forces")))
    with pytest.raises(LssError, match="Recorder asks for forces"):
        sim.step(4)


def test_current_step_and_time_stay_consistent(md_run):
    sim = replay(md_run, start_step=100, start_time_ps=7.0)
    assert sim.currentStep == 100
    sim.step(3)
    assert sim.currentStep == 103
    assert sim.context.getState().getTime().value_in_unit(unit.picosecond) == pytest.approx(7.0 + 3 * LAG_PS)
    sim.context.setTime(1.0)  # an outside setTime is respected, as OpenMM would
    sim.step(2)
    assert sim.context.getState().getTime().value_in_unit(unit.picosecond) == pytest.approx(1.0 + 2 * LAG_PS)
    positions = sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    np.testing.assert_array_equal(positions, md_run[2][4])
    assert sim.integrator.getStepSize().value_in_unit(unit.picosecond) == pytest.approx(LAG_PS)
    assert isinstance(sim.source, FrameSource)


def test_zarr_reporter_and_store_replay_round_trip(md_run, tmp_path):
    topology, start, frames = md_run
    sim = replay(md_run)
    first = tmp_path / "synthetic.zarr"
    with ZarrReporter(first, 2, featurizer="backbone-torsions", atoms="heavy", flush_interval=8) as rep:
        sim.reporters.append(rep)
        sim.step(N_FRAMES)
    store = open_store(first)
    heavy = [a.index for a in topology.atoms() if a.element.symbol != "H"]
    np.testing.assert_array_equal(store.atom_indices, heavy)
    np.testing.assert_array_equal(store.steps(), np.arange(2, N_FRAMES + 1, 2))
    np.testing.assert_allclose(store.times(), store.steps() * LAG_PS, rtol=1e-12)
    assert store.timestep_ps == pytest.approx(LAG_PS)
    np.testing.assert_allclose(store.positions(), frames[1::2][:, heavy], atol=1e-6)
    traj = md.Trajectory(frames[1::2], mdtop(topology))
    np.testing.assert_allclose(store.observable("backbone_torsions")[:, 0], md.compute_phi(traj)[1][:, 0], atol=1e-5)

    # replay the store itself: every frame, at its stored time, into a DCD and a second store
    again = LatentSimulation.from_store(first)
    assert again.currentStep == 0 and again.topology.getNumAtoms() == len(heavy)
    again_path = tmp_path / "again.zarr"
    with ZarrReporter(again_path, 1, featurizer=None, atoms=None) as rep:
        again.reporters.append(rep)
        again.reporters.append(app.DCDReporter(str(tmp_path / "again.dcd"), 1))
        again.step(again.source.frames_left)
    copy = open_store(again_path)
    np.testing.assert_array_equal(copy.positions(), store.positions())
    np.testing.assert_allclose(copy.times(), store.times(), rtol=1e-12)
    np.testing.assert_array_equal(copy.steps(), store.steps() // 2)  # a replay step is one stored frame
    assert copy.frame_interval_ps == pytest.approx(store.frame_interval_ps)
    dcd = md.load(str(tmp_path / "again.dcd"), top=mdtop(again.topology))
    np.testing.assert_allclose(dcd.xyz, store.positions(), atol=2e-6)
    with pytest.raises(LssError, match="cannot advance 1 steps"):
        again.step(1)

    features_only = tmp_path / "features.zarr"
    with ZarrReporter(features_only, 5, featurizer="backbone-torsions", atoms="none") as rep:
        fresh = replay(md_run)
        fresh.reporters.append(rep)
        fresh.step(10)
    with pytest.raises(StoreError, match="saves no positions"):
        LatentSimulation.from_store(features_only)


def test_periodic_box_is_recorded_and_molecules_stay_whole(md_run, tmp_path):
    topology, start, frames = md_run
    frames = frames + np.array([2.24, -1.7, 0.9])  # centres outside the box, molecules across cell faces
    boxes = np.array([np.diag([1.2, 1.3, 1.4]) * (1 + 0.01 * i) for i in range(N_FRAMES)])
    sim = LatentSimulation(topology, ArrayFrameSource(frames, boxes, initial=start), LAG_PS)
    assert topology.getPeriodicBoxVectors() is None  # the caller's topology is not changed
    assert sim.system.usesPeriodicBoundaryConditions()
    sim.reporters.append(app.DCDReporter(str(tmp_path / "wrapped.dcd"), 1))  # OpenMM's default: wrap
    sim.reporters.append(app.DCDReporter(str(tmp_path / "raw.dcd"), 1, enforcePeriodicBox=False))
    sim.step(N_FRAMES)
    sim.reporters.clear()
    top = mdtop(sim.topology)
    raw = md.load(str(tmp_path / "raw.dcd"), top=top)
    wrapped = md.load(str(tmp_path / "wrapped.dcd"), top=top)
    np.testing.assert_allclose(raw.xyz, frames, atol=2e-6)
    np.testing.assert_allclose(raw.unitcell_lengths, boxes.diagonal(axis1=1, axis2=2), rtol=1e-5)
    shift = wrapped.xyz - frames  # one whole-box translation per frame, the same for every atom
    np.testing.assert_allclose(shift, np.broadcast_to(shift[:, :1], shift.shape), atol=1e-5)
    cells = shift[:, 0] / boxes.diagonal(axis1=1, axis2=2)
    np.testing.assert_allclose(cells, np.round(cells), atol=1e-4)
    assert np.abs(cells).max() > 0.5  # the box is small enough that wrapping happened
    atom_cells = np.floor(frames / boxes.diagonal(axis1=1, axis2=2)[:, None])
    assert (np.ptp(atom_cells, axis=1) > 0).any()  # wrapping atom by atom would have split molecules

    vacuum = replay(md_run)
    assert not vacuum.system.usesPeriodicBoundaryConditions()
    assert vacuum.topology.getPeriodicBoxVectors() is None


class InterruptingSource(ArrayFrameSource):
    def __init__(self, *args, interrupt_at, **kwargs):
        super().__init__(*args, **kwargs)
        self.interrupt_at, self.calls = interrupt_at, 0

    def advance(self, n_steps):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return super().advance(n_steps)


class SigintInReport:
    """Sends Ctrl-C to this process while it reports: the frame is still written whole."""

    def __init__(self, at_step):
        self.at_step, self.finished = at_step, []

    def describeNextReport(self, simulation):
        return {"steps": 1, "periodic": None, "include": ["positions"]}

    def report(self, simulation, state):
        if simulation.currentStep == self.at_step:
            os.kill(os.getpid(), signal.SIGINT)
        self.finished.append(simulation.currentStep)


def test_keyboard_interrupt_keeps_written_frames(md_run, tmp_path):
    topology, start, frames = md_run
    sim = LatentSimulation(topology, InterruptingSource(frames, initial=start, interrupt_at=5), LAG_PS)
    rep = ZarrReporter(tmp_path / "i.zarr", 1, atoms="heavy", flush_interval=100)
    sim.reporters += [rep, app.DCDReporter(str(tmp_path / "i.dcd"), 1)]
    with pytest.raises(KeyboardInterrupt):
        sim.step(N_FRAMES, progress=True)
    assert sim.currentStep == 4
    assert open_store(tmp_path / "i.zarr").n_frames == 4  # flushed on the interrupt
    np.testing.assert_allclose(md.load(str(tmp_path / "i.dcd"), top=mdtop(topology)).xyz, frames[:4], atol=2e-6)

    signaller = SigintInReport(at_step=2)
    sim = replay(md_run)
    sim.reporters += [signaller, app.DCDReporter(str(tmp_path / "s.dcd"), 1)]
    # Python's own Ctrl-C handler, also where the suite runs as a background job (SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            sim.step(10)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert signaller.finished == [1, 2] and sim.currentStep == 2
    np.testing.assert_allclose(md.load(str(tmp_path / "s.dcd"), top=mdtop(topology)).xyz, frames[:2], atol=2e-6)
    rep.close()


def test_bad_frames_are_refused(md_run):
    topology, start, frames = md_run
    bad = frames[:3].copy()
    bad[1, 4, 2] = np.nan
    sim = LatentSimulation(topology, ArrayFrameSource(bad, initial=start), LAG_PS)
    recorder = Recorder(1)
    sim.reporters.append(recorder)
    with pytest.raises(NonFiniteError, match="step 2"):
        sim.step(3)
    assert [s for s, _ in recorder.calls] == [1]
    with pytest.raises(LssError, match=r"shaped \(n_frames, n_atoms, 3\)"):
        ArrayFrameSource(np.zeros((4, 3)))
    with pytest.raises(LssError, match="22 atoms"):
        LatentSimulation(topology, ArrayFrameSource(np.zeros((2, 5, 3))), LAG_PS)
    with pytest.raises(LssError, match="not a frame source"):
        LatentSimulation(topology, frames, LAG_PS)


def test_array_source_accepts_mdtraj_and_quantities(md_run):
    topology, _, frames = md_run
    traj = md.Trajectory(frames[:5], mdtop(topology))
    source = ArrayFrameSource(traj)
    np.testing.assert_allclose(source.advance(2), frames[2], atol=1e-6)
    assert source.frames_left == 2
    quantity = ArrayFrameSource(frames[:3] * 10 * unit.angstrom)
    np.testing.assert_allclose(quantity.advance(1), frames[1], atol=1e-12)


def test_the_old_module_name_is_an_alias():
    import importlib

    import lss_engine.replay as replay_module

    with pytest.warns(DeprecationWarning, match="lss_engine.replay"):
        old = importlib.reload(importlib.import_module("lss_engine.integrator"))
    assert old.LatentSimulation is replay_module.LatentSimulation
    assert old.FrameSource is replay_module.FrameSource and old.ArrayFrameSource is replay_module.ArrayFrameSource
