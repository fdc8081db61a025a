"""``lss_engine.md.run_md`` as a library: real OpenMM runs into stores, checkpoints, resume."""
from __future__ import annotations

import numpy as np
import openmm
import pytest
from openmm import app, unit

from lss_engine.errors import LssError, OutputExistsError
from lss_engine.md import MDRun, checkpoint_path, run_md, to_steps
from lss_engine.store import TrajectoryStore
from lss_engine.systems import get_system


def test_run_then_resume_appends_to_the_requested_length(tmp_path):
    system = get_system("four-well")
    out = tmp_path / "toy.zarr"
    first = run_md(system, out, steps=600, report_interval=10, featurizer="auto", seed=1, flush_interval=20,
                   progress=False)
    assert first.complete and first.step == 600 and first.steps_run == 600 and first.frames == 60
    checkpoint = checkpoint_path(out)
    assert checkpoint == tmp_path / "toy.zarr.state.xml"
    state = openmm.XmlSerializer.deserialize(checkpoint.read_text())  # OpenMM state XML, not a pickle
    assert state.getTime().value_in_unit(unit.picosecond) == pytest.approx(600 * system.timestep._value)
    assert not list(tmp_path.glob("*.partial"))

    second = run_md(system, out, steps=1500, report_interval=10, featurizer="auto", seed=1, flush_interval=20,
                    resume=True, progress=False)
    assert second.step == 1500 and second.steps_run == 900 and second.frames == 150
    store = TrajectoryStore(out)
    np.testing.assert_array_equal(store.steps(), np.arange(1, 151) * 10)
    np.testing.assert_allclose(store.times(), np.arange(1, 151) * 10 * system.timestep._value)
    assert store.observable_names == ["positions"]
    # continuity: the resumed run starts where the checkpoint left off (a Brownian step is small)
    x = store.features()
    jump = np.abs(x[60] - x[59]).max()
    assert jump < 10 * np.abs(np.diff(x[:60], axis=0)).max()

    # resuming a complete run does nothing
    again = run_md(system, out, steps=1500, report_interval=10, featurizer="auto", resume=True, progress=False)
    assert again.steps_run == 0 and again.frames == 150


def test_resume_from_an_earlier_checkpoint_drops_the_later_frames(tmp_path):
    """A checkpoint older than the store's last frames (a crash between commit and checkpoint): no frame twice."""
    system = get_system("double-well")
    out = tmp_path / "dw.zarr"
    run_md(system, out, steps=200, report_interval=10, seed=2, flush_interval=10, progress=False)
    saved = checkpoint_path(out).read_bytes()  # the state at step 200
    run_md(system, out, steps=400, report_interval=10, seed=2, flush_interval=10, resume=True, progress=False)
    assert TrajectoryStore(out).n_frames == 40
    checkpoint_path(out).write_bytes(saved)  # roll the checkpoint back to step 200
    result = run_md(system, out, steps=300, report_interval=10, seed=2, flush_interval=10, resume=True,
                    progress=False)
    assert result.step == 300 and result.frames == 30
    np.testing.assert_array_equal(TrajectoryStore(out).steps(), np.arange(1, 31) * 10)


def test_an_openmm_simulation_with_units_and_extra_reporters(tmp_path, ala2_system):
    sim = ala2_system.make_simulation(platform="Reference", seed=5)
    rows = tmp_path / "state.csv"
    out = tmp_path / "ala2.zarr"
    result = run_md(sim, out, steps=0.2 * unit.picosecond, report_interval=0.02 * unit.picosecond,
                    featurizer="backbone-torsions", atoms="heavy", flush_interval=4, progress=False,
                    reporters=[app.StateDataReporter(str(rows), 10, step=True)])
    assert result.step == 100 and result.frames == 10 and result.n_features == 2
    store = TrajectoryStore(out)
    np.testing.assert_array_equal(store.steps(), np.arange(1, 11) * 10)
    assert len(store.atom_indices) == 10
    assert len(rows.read_text().splitlines()) == 11  # header + one row per 10 steps
    assert sim.reporters == []  # run_md leaves the caller's simulation without its reporters


def test_existing_outputs_and_bad_arguments_fail_before_any_md(tmp_path):
    system = get_system("double-well")
    out = tmp_path / "keep.zarr"
    run_md(system, out, steps=100, report_interval=10, progress=False)
    with pytest.raises(OutputExistsError, match="exists") as info:
        run_md(system, out, steps=100, report_interval=10, progress=False)
    assert "--" not in str(info.value) and "=True" not in str(info.value)  # neutral: no flag of any interface
    assert TrajectoryStore(out).n_frames == 10
    replaced = run_md(system, out, steps=50, report_interval=10, overwrite=True, progress=False)
    assert replaced.frames == 5 and TrajectoryStore(out).n_frames == 5
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(LssError, match="refusing to overwrite"):
        run_md(system, precious, steps=50, report_interval=10, overwrite=True, progress=False)
    assert (precious / "notes.txt").read_text() == "keep me"
    with pytest.raises(LssError, match="no checkpoint"):
        run_md(system, tmp_path / "new.zarr", steps=50, report_interval=10, resume=True, progress=False)
    with pytest.raises(LssError, match="whole number"):
        MDRun(system, tmp_path / "new.zarr", steps=50, report_interval="0.3fs")
    with pytest.raises(LssError, match="bogus"):
        MDRun(system, tmp_path / "new.zarr", steps=50, report_interval=10, featurizer="bogus")
    assert not (tmp_path / "new.zarr").exists()


def test_to_steps():
    assert to_steps(7, 0.002) == 7 and to_steps("7steps", 0.002) == 7 and to_steps("7", 0.002) == 7
    assert to_steps("1ps", 0.002) == 500 and to_steps(1 * unit.picosecond, 2 * unit.femtosecond) == 500
    assert to_steps("0.0101ps", 0.002, exact=False) == 5
    with pytest.raises(LssError, match="whole number"):
        to_steps("0.003ps", 0.002)
    with pytest.raises(LssError):
        to_steps(1.5, 0.002)
