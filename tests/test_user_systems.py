"""Users' own systems (System XML + PDB, optionally a State XML), system specs and ``lss simulate --system-xml``.

Everything runs real OpenMM on the Reference platform with alanine dipeptide
(22 atoms) or a handful of particles, so each test takes about a second.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import openmm
import pytest
from openmm import app, unit

from lss_engine import systems
from lss_engine.cli import main
from lss_engine.errors import LssError
from lss_engine.md import _walker_system
from lss_engine.store import TrajectoryStore


def _energy(test_system: systems.TestSystem, positions_nm: np.ndarray) -> float:
    """Potential energy (kJ/mol) of ``test_system`` at ``positions_nm``, Reference platform."""
    context = openmm.Context(test_system.system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions_nm * unit.nanometer)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def _nm(quantity) -> np.ndarray:
    return np.asarray(quantity.value_in_unit(unit.nanometer))


def _write_pdb(path, topology, positions) -> None:
    with open(path, "w") as fh:
        app.PDBFile.writeFile(topology, positions, fh)


@pytest.fixture(scope="module")
def builtin():
    return systems.get_system("alanine-dipeptide")


@pytest.fixture()
def ala_files(tmp_path, builtin):
    """Alanine dipeptide's System as XML and its positions as PDB, in ``tmp_path``."""
    system_xml, pdb = tmp_path / "ala2.xml", tmp_path / "ala2.pdb"
    system_xml.write_text(openmm.XmlSerializer.serialize(builtin.system))
    _write_pdb(pdb, builtin.topology, builtin.positions)
    return system_xml, pdb


def _one_line_error(call) -> str:
    with pytest.raises(LssError) as err:
        call()
    message = str(err.value)
    assert message and "\n" not in message, message
    return message


# --------------------------------------------------------------------------
# from_xml


def test_from_xml_has_the_builtin_energy(ala_files, builtin):
    """The XML system is the built-in one: same energy at the same positions.

    XmlSerializer writes doubles with full precision and both contexts get the
    very same positions (read back from the PDB, 1e-4 nm precision), so the
    Reference platform's double-precision energies agree to rounding: a
    relative 1e-9 leaves room only for summation order.
    """
    system_xml, pdb = ala_files
    ts = systems.from_xml(system_xml, pdb)
    assert ts.name == "ala2" and ts.default_platform == "Reference" and ts.reduced_units is None
    assert ts.positions.unit == unit.nanometer and ts.positions.shape == (22, 3)
    assert ts.velocities is None
    np.testing.assert_allclose(_nm(ts.positions), _nm(builtin.positions), atol=6e-5)  # PDB: 0.001 Å
    assert _energy(ts, _nm(ts.positions)) == pytest.approx(_energy(builtin, _nm(ts.positions)), rel=1e-9)
    params = json.loads(json.dumps(ts.parameters))
    assert params["system_xml"] == str(system_xml.resolve()) and params["pdb"] == str(pdb.resolve())
    assert params["state_xml"] is None
    assert params["sha256"] == {"system_xml": hashlib.sha256(system_xml.read_bytes()).hexdigest(),
                                "pdb": hashlib.sha256(pdb.read_bytes()).hexdigest()}
    assert (params["temperature"], params["timestep"], params["friction"], params["integrator"]) == \
        (300.0, 0.002, 1.0, "langevin")
    sim = ts.make_simulation(seed=1, minimize=False)
    sim.step(10)
    assert np.isfinite(sim.context.getState(getEnergy=True).getPotentialEnergy()._value)


def test_state_xml_gives_positions_and_velocities(ala_files, builtin, tmp_path):
    """A State XML's positions and velocities are taken exactly (both are
    written at full double precision), and ``make_simulation`` uses its
    velocities instead of drawing new ones; energy as the built-in at those
    positions (rel 1e-9, as above)."""
    system_xml, pdb = ala_files
    sim = builtin.make_simulation(seed=5, minimize=False)
    sim.step(20)  # positions that differ from the PDB's
    state = sim.context.getState(getPositions=True, getVelocities=True)
    state_xml = tmp_path / "state.xml"
    state_xml.write_text(openmm.XmlSerializer.serialize(state))
    ts = systems.from_xml(system_xml, pdb, state_xml=state_xml, temperature=310, timestep="1fs", friction=2.0)
    expected = _nm(state.getPositions(asNumpy=True))
    np.testing.assert_array_equal(_nm(ts.positions), expected)
    assert ts.temperature == 310 * unit.kelvin and ts.timestep == 0.001 * unit.picosecond
    assert ts.parameters["state_xml"] == str(state_xml.resolve()) and "state_xml" in ts.parameters["sha256"]
    assert _energy(ts, expected) == pytest.approx(_energy(builtin, expected), rel=1e-9)
    velocities = ts.make_simulation(seed=1, minimize=False).context.getState(getVelocities=True)
    np.testing.assert_array_equal(velocities.getVelocities(asNumpy=True)._value,
                                  state.getVelocities(asNumpy=True)._value)


def test_periodic_box_from_pdb_then_from_state(tmp_path):
    """A periodic System gets the PDB's CRYST1 box, and a State XML's box when
    given, as its default box and its topology's (exact: 2.5 nm is exact in the
    PDB's 0.001 Å, the State XML stores doubles)."""
    system = openmm.System()
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    nonbonded.setCutoffDistance(0.9)
    topology = app.Topology()
    chain = topology.addChain()
    for _ in range(4):
        system.addParticle(39.9)
        nonbonded.addParticle(0.0, 0.34, 0.99)
        topology.addAtom("AR", app.element.argon, topology.addResidue("AR", chain))
    system.addForce(nonbonded)
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in 3.0 * np.eye(3)])
    topology.setPeriodicBoxVectors([openmm.Vec3(*row) for row in 2.5 * np.eye(3)] * unit.nanometer)
    positions = np.array([[0.0, 0.0, 0.0], [0.4, 0.0, 0.0], [0.0, 0.4, 0.0], [0.0, 0.0, 0.4]])
    (tmp_path / "ar.xml").write_text(openmm.XmlSerializer.serialize(system))
    _write_pdb(tmp_path / "ar.pdb", topology, positions * unit.nanometer)

    ts = systems.from_xml(tmp_path / "ar.xml", tmp_path / "ar.pdb")
    box = np.array([v.value_in_unit(unit.nanometer) for v in ts.system.getDefaultPeriodicBoxVectors()])
    np.testing.assert_array_equal(box, 2.5 * np.eye(3))
    np.testing.assert_array_equal(_nm(ts.topology.getPeriodicBoxVectors()), 2.5 * np.eye(3))

    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions * unit.nanometer)
    context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in 2.2 * np.eye(3)])
    (tmp_path / "ar_state.xml").write_text(openmm.XmlSerializer.serialize(context.getState(getPositions=True)))
    ts = systems.from_xml(tmp_path / "ar.xml", tmp_path / "ar.pdb", state_xml=tmp_path / "ar_state.xml")
    assert ts.velocities is None  # the State has none: they are drawn
    sim = ts.make_simulation(seed=1, minimize=False)
    np.testing.assert_array_equal(_nm(sim.context.getState().getPeriodicBoxVectors(asNumpy=True)), 2.2 * np.eye(3))
    np.testing.assert_array_equal(_nm(ts.topology.getPeriodicBoxVectors()), 2.2 * np.eye(3))


def test_platform_rule_and_explicit_platform(ala_files):
    system_xml, pdb = ala_files
    assert systems.from_xml(system_xml, pdb, platform="auto").default_platform == "Reference"  # 22 < 100
    assert systems.from_xml(system_xml, pdb, platform="cpu").default_platform == "CPU"
    _one_line_error(lambda: systems.from_xml(system_xml, pdb, platform="Quantum"))


@pytest.mark.parametrize("case", ["missing", "state-as-system", "garbage", "count-mismatch", "state-mismatch",
                                  "state-without-positions", "temperature", "timestep"])
def test_bad_inputs_are_one_line_errors(ala_files, tmp_path, case):
    system_xml, pdb = ala_files
    toy = systems.get_system("four-state")
    context = openmm.Context(toy.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(toy.positions)
    one_atom_state = tmp_path / "one.xml"
    one_atom_state.write_text(openmm.XmlSerializer.serialize(context.getState(getPositions=True)))
    no_positions = tmp_path / "empty_state.xml"
    no_positions.write_text(openmm.XmlSerializer.serialize(context.getState(getEnergy=True)))
    garbage = tmp_path / "garbage.xml"
    garbage.write_text("<System>not really")
    one_atom_pdb = tmp_path / "one.pdb"
    _write_pdb(one_atom_pdb, toy.topology, toy.positions)
    call, expected = {
        "missing": (lambda: systems.from_xml(tmp_path / "nope.xml", pdb), "does not exist"),
        "state-as-system": (lambda: systems.from_xml(one_atom_state, pdb), "holds an OpenMM State, not a System"),
        "garbage": (lambda: systems.from_xml(garbage, pdb), "not OpenMM XML"),
        "count-mismatch": (lambda: systems.from_xml(system_xml, one_atom_pdb), "particle counts differ"),
        "state-mismatch": (lambda: systems.from_xml(system_xml, pdb, state_xml=one_atom_state),
                           "particle counts differ"),
        "state-without-positions": (lambda: systems.from_xml(system_xml, pdb, state_xml=no_positions),
                                    "no positions"),
        "temperature": (lambda: systems.from_xml(system_xml, pdb, temperature=0), "temperature"),
        "timestep": (lambda: systems.from_xml(system_xml, pdb, timestep=-0.001), "timestep"),
    }[case]
    assert expected in _one_line_error(call)


# --------------------------------------------------------------------------
# specs


def _same_system(a: systems.TestSystem, b: systems.TestSystem) -> None:
    """Same System (identical XML), positions, settings and energy (exactly: same inputs, same code)."""
    assert openmm.XmlSerializer.serialize(a.system) == openmm.XmlSerializer.serialize(b.system)
    np.testing.assert_array_equal(_nm(a.positions), _nm(b.positions))
    assert (a.name, a.temperature, a.timestep, a.friction, a.integrator, a.default_platform) == \
        (b.name, b.temperature, b.timestep, b.friction, b.integrator, b.default_platform)
    assert a.parameters == b.parameters
    assert _energy(a, _nm(a.positions)) == _energy(b, _nm(b.positions))


@pytest.mark.parametrize("source", ["builtin", "xml"])
def test_spec_round_trip_rebuilds_the_same_system(ala_files, source):
    """``build_system(system_spec(x))`` through JSON text (as another process
    would get it) rebuilds ``x`` exactly."""
    if source == "builtin":
        original = systems.get_system("four-state", temperature=150.0, friction=2.0)
    else:
        original = systems.from_xml(*ala_files, temperature=350.0)
    spec = systems.system_spec(original)
    assert spec["kind"] == source
    again = systems.build_system(json.loads(json.dumps(spec)))
    _same_system(original, again)
    assert systems.system_spec(again) == spec
    assert _walker_system(spec, {}).parameters == original.parameters  # the walkers' path
    _one_line_error(lambda: _walker_system(spec, {"temperature": 1.0}))


def test_system_key_is_stable_and_tells_specs_apart(ala_files):
    spec = systems.system_spec(systems.get_system("four-state"))
    key = systems.system_key(spec)
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), allow_nan=False)
    assert key == hashlib.sha256(canonical.encode()).hexdigest()[:16]  # no process- or order-dependence
    assert systems.system_key(dict(reversed(list(spec.items())))) == key
    assert systems.system_key(systems.system_spec(systems.get_system("four-state"))) == key
    warmer = systems.system_spec(systems.get_system("four-state", temperature=200.0))
    xml = systems.system_spec(systems.from_xml(*ala_files))
    keys = {key, systems.system_key(warmer), systems.system_key(xml)}
    assert len(keys) == 3


@pytest.mark.parametrize("changed", ["system_xml", "pdb"])
def test_changed_file_is_refused_on_rebuild(ala_files, changed):
    system_xml, pdb = ala_files
    spec = systems.system_spec(systems.from_xml(system_xml, pdb))
    path = system_xml if changed == "system_xml" else pdb
    path.write_text(path.read_text().replace("\n", "\n\n", 1))  # a change that still parses
    message = _one_line_error(lambda: systems.build_system(spec))
    assert "changed since the system spec was made" in message and path.name in message


def test_bad_specs_are_one_line_errors(ala_files):
    spec = systems.system_spec(systems.from_xml(*ala_files))
    for bad in ([], {"kind": "mystery", "name": "x", "parameters": {}},
                {"kind": "builtin", "name": "nosuch", "parameters": {}},
                {"kind": "builtin", "name": "four-state", "parameters": {"wobble": 1}},
                {**spec, "parameters": {k: v for k, v in spec["parameters"].items() if k != "sha256"}}):
        _one_line_error(lambda bad=bad: systems.build_system(bad))
    handmade = systems.get_system("four-state")
    handmade.name = "my-toy"
    _one_line_error(lambda: systems.system_spec(handmade))


# --------------------------------------------------------------------------
# lss simulate --system-xml


def test_cli_simulate_system_xml_writes_the_store(ala_files, tmp_path, capsys):
    """2 ps at a frame every 0.1 ps: 20 frames, alanine's default features."""
    system_xml, pdb = ala_files
    out = tmp_path / "user.zarr"
    code = main(["simulate", "--system-xml", str(system_xml), "--pdb", str(pdb), "--ns", "0.002",
                 "--report-interval", "0.1ps", "--timestep", "0.002", "--friction", "1", "--equilibrate", "0ps",
                 "--seed", "2", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    store = TrajectoryStore(out)
    assert store.n_frames == 20
    assert store.observable_names == ["backbone_torsions", "heavy_atom_distances"]
    assert "ala2 at 300 K on Reference" in capsys.readouterr().out


@pytest.mark.parametrize("argv_tail, expected", [
    (["--system-xml", "{dir}/missing.xml", "--pdb", "{pdb}"], "does not exist"),
    (["--system-xml", "{pdb}", "--pdb", "{pdb}"], "not OpenMM XML"),
    (["--system-xml", "{xml}"], "needs --pdb"),
    (["--pdb", "{pdb}"], "--pdb goes with --system-xml"),
])
def test_cli_bad_user_system_is_one_line(ala_files, tmp_path, capsys, argv_tail, expected):
    system_xml, pdb = ala_files
    tail = [a.format(dir=tmp_path, pdb=pdb, xml=system_xml) for a in argv_tail]
    code = main(["simulate", *tail, "--ns", "0.001", "--out", str(tmp_path / "x.zarr"), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "x.zarr").exists()


def test_cli_system_and_system_xml_exclude_each_other(ala_files, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "--system", "four-state", "--system-xml", str(ala_files[0]), "--out", "x.zarr"])
    assert exit_.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_cli_walkers_rebuild_the_xml_system_from_its_spec(ala_files, tmp_path, capsys):
    """Two walker processes each rebuild the XML system from its spec (files checked by hash)."""
    system_xml, pdb = ala_files
    out = tmp_path / "md.zarr"
    code = main(["simulate", "--system-xml", str(system_xml), "--pdb", str(pdb), "--ns", "0.001",
                 "--report-interval", "0.1ps", "--features", "backbone-torsions", "--equilibrate", "0ps",
                 "--seed", "4", "--walkers", "2", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert [TrajectoryStore(tmp_path / f"md_{k}.zarr").n_frames for k in range(2)] == [10, 10]
