"""Tests of lss_engine.systems with real OpenMM (fast: a few seconds)."""
from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import pytest
from openmm import app, unit

from lss_engine import systems
from lss_engine.errors import LssError

REPO = Path(__file__).resolve().parents[1]
KB = (unit.BOLTZMANN_CONSTANT_kB * unit.AVOGADRO_CONSTANT_NA).value_in_unit(
    unit.kilojoule_per_mole / unit.kelvin)
NAMES = ["alanine-dipeptide", "alanine-dipeptide-implicit", "four-well", "double-well",
         "three-state-linear", "three-state-triangular", "four-state", "folding-5d"]
TOYS = NAMES[2:]


def _energy(ts: systems.TestSystem, xyz: np.ndarray) -> float:
    context = openmm.Context(ts.system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(np.asarray(xyz, dtype=float) * unit.nanometer)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
        unit.kilojoule_per_mole)


def _load_script():
    path = REPO / "scripts" / "make_alanine_dipeptide_pdb.py"
    spec = importlib.util.spec_from_file_location("make_alanine_dipeptide_pdb", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------
# registry, platforms, errors


def test_registry_names():
    assert systems.list_systems() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_system_builds_and_runs(name):
    ts = systems.get_system(name)
    assert ts.name == name
    assert ts.default_platform == "Reference"
    n = ts.topology.getNumAtoms()
    assert ts.system.getNumParticles() == n
    assert np.asarray(ts.positions.value_in_unit(unit.nanometer)).shape == (n, 3)
    json.dumps(ts.parameters)
    json.dumps(ts.reduced_units)
    sim = ts.make_simulation(seed=1234)
    assert sim.context.getPlatform().getName() == ts.default_platform
    energies = []
    for _ in range(3):
        sim.step(100)
        state = sim.context.getState(getEnergy=True, getPositions=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        assert np.all(np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)))
    assert np.all(np.isfinite(energies))
    # the topology writes as PDB and converts to mdtraj
    buffer = io.StringIO()
    app.PDBFile.writeFile(ts.topology, ts.positions, buffer)
    assert buffer.getvalue().count("\n") >= n
    assert mdtraj.Topology.from_openmm(ts.topology).n_atoms == n


@pytest.mark.parametrize("name", NAMES)
def test_parameters_rebuild_the_same_system(name):
    ts = systems.get_system(name)
    again = systems.get_system(name, **json.loads(json.dumps(ts.parameters)))
    assert again.parameters == ts.parameters
    assert again.timestep == ts.timestep and again.temperature == ts.temperature


def test_same_seed_same_trajectory():
    """Same seed, same trajectory (run one after the other: OpenMM's Reference
    platform draws from one process-wide random stream, so interleaved
    simulations are not reproducible)."""
    final = []
    for _ in range(2):
        sim = systems.get_system("four-state").make_simulation(seed=42)
        sim.step(200)
        final.append(sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value)
    np.testing.assert_array_equal(final[0], final[1])


def test_get_system_unknown_name_and_keyword():
    with pytest.raises(LssError) as err:
        systems.get_system("alanine-tripeptide")
    message = str(err.value)
    assert "\n" not in message and "four-well" in message and "alanine-dipeptide" in message
    with pytest.raises(LssError, match="does not take"):
        systems.get_system("four-well", wobble=3)
    assert systems.get_system("Four_Well", a=2.0).parameters["a"] == 2.0


def test_bad_arguments_raise_lsserror():
    for kwargs in ({"temperature": -1.0}, {"timestep": 0}, {"integrator": "verlet"},
                   {"beta": 0.0}):
        with pytest.raises(LssError):
            systems.get_system("double-well", **kwargs)
    with pytest.raises(LssError):
        systems.get_system("three-state-linear", centres=[(0, 0), (1, 1)])


def test_choose_platform():
    ts = systems.get_system("double-well")
    assert systems.choose_platform("auto", ts).getName() == "Reference"
    assert systems.choose_platform("reference").getName() == "Reference"
    assert systems.choose_platform("auto").getName() == "Reference"
    with pytest.raises(LssError) as err:
        systems.choose_platform("Quantum", ts)
    assert "\n" not in str(err.value) and "Reference" in str(err.value)


def test_module_import_does_not_import_torch():
    code = "import sys, lss_engine.systems; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------
# toy potentials: energies against the formulas of the papers


def _gauss(x, y, x0, y0, s=0.8):
    return np.exp(-(x - x0) ** 2 / (2 * s * s)) * np.exp(-(y - y0) ** 2 / (2 * s * s))


def _u_four_well(q, a):
    x = q[0]
    return a * (x ** 8 + 0.8 * np.exp(-80 * x ** 2) + 0.2 * np.exp(-80 * (x - 0.5) ** 2)
                + 0.5 * np.exp(-40 * (x + 0.5) ** 2))


def _u_three_state(q, centres):
    x, y = q
    return 1e-4 * (x ** 6 + y ** 6) - sum(_gauss(x, y, cx, cy) for cx, cy in centres)


def _u_four_state(q):
    x, y = q
    return (1e-4 * (x ** 4 + y ** 4) + _gauss(x, y, 0, 0) - _gauss(x, y, 2, -1)
            - _gauss(x, y, 0.5, 2) - _gauss(x, y, -0.5, -2) - _gauss(x, y, -2, 1))


def _u_folding(q):
    r = np.linalg.norm(q)
    return -2.5 * (r - 3) ** 2 if r < 3 else 0.5 * (r - 3) ** 3 - (r - 3) ** 2


TRI = ((-2.5, -1.78), (0.0, 2.55), (2.5, -1.78))
LIN = ((-2.5, 0.0), (0.0, 0.0), (2.5, 0.0))
ENERGY_CASES = [
    # name, builder kwargs, analytic U(q), beta
    ("four-well", {"a": 2.0}, lambda q: _u_four_well(q, 2.0), 1.0),
    ("four-well", {"beta": 1.7}, lambda q: _u_four_well(q, 4.0), 1.7),
    ("double-well", {}, lambda q: q[0] ** 4 - 6 * q[0] ** 2 + 2 * q[0], 1.0),
    ("three-state-linear", {}, lambda q: _u_three_state(q, LIN), 9.5),
    ("three-state-triangular", {}, lambda q: _u_three_state(q, TRI), 9.0),
    ("three-state-linear", {"centres": TRI, "beta": 2.0}, lambda q: _u_three_state(q, TRI), 2.0),
    ("four-state", {}, _u_four_state, 9.5),
    ("folding-5d", {}, _u_folding, 1.0),
]


@pytest.mark.parametrize("name,kwargs,potential,beta", ENERGY_CASES)
def test_toy_energy_matches_formula(name, kwargs, potential, beta):
    temperature = 300.0
    ts = systems.get_system(name, temperature=temperature, **kwargs)
    kt = KB * temperature
    coords = [tuple(c) for c in ts.reduced_units["coordinates"]]
    n = ts.system.getNumParticles()
    rng = np.random.default_rng(3)
    for _ in range(6):
        xyz = rng.uniform(-1.0, 1.0, size=(n, 3))
        if name == "folding-5d":
            xyz *= rng.choice([1.0, 2.5])       # both branches, r < 3 and r > 3
        elif name != "four-well":
            xyz *= 2.5
        q = np.array([xyz[p, a] for p, a in coords])
        confined = sum(xyz[p, a] ** 2 for p in range(n) for a in range(3) if (p, a) not in coords)
        expected = beta * kt * potential(q) + 0.5 * kt * confined
        assert _energy(ts, xyz) == pytest.approx(expected, rel=1e-6, abs=1e-9)
        assert ts.reduced_potential(q) == pytest.approx(potential(q), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", TOYS)
def test_toy_starts_at_a_minimum(name):
    ts = systems.get_system(name)
    context = openmm.Context(ts.system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(ts.positions)
    forces = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
        unit.kilojoule_per_mole / unit.nanometer)
    assert np.max(np.abs(forces)) < 1e-3
    q = ts.reduced_coordinates(ts.positions.value_in_unit(unit.nanometer))
    assert q.tolist() == pytest.approx(ts.reduced_units["start"])


def test_brownian_mapping_gives_unit_diffusion_and_confined_variance():
    r"""D = kT/(mγ) = 1 nm²/ps and var(y) = kT/k = 1 nm² at any temperature.

    Euler-Maruyama on the confined coordinate is the discrete OU process
    y' = (1 - a) y + sqrt(2 D dt) R with a = k D dt / kT = dt, so
    var = 2 D dt / (1 - (1-a)^2) and MSD(n steps) = 2 var (1 - (1-a)^n).
    """
    dt, every, samples = 0.01, 10, 20000
    ts = systems.get_system("double-well", temperature=300.0, timestep=dt)
    assert ts.integrator == "brownian"
    assert ts.friction.value_in_unit(unit.picosecond ** -1) == pytest.approx(KB * 300.0)
    assert ts.reduced_units["diffusion_nm2_per_ps"] == pytest.approx(1.0)
    sim = ts.make_simulation(seed=2024)
    yz = np.empty((samples, 2))
    for i in range(samples):
        sim.step(every)
        yz[i] = sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value[0, 1:]
    a = dt
    var = 2 * dt / (1 - (1 - a) ** 2)
    msd = 2 * var * (1 - (1 - a) ** every)
    assert np.mean(np.diff(yz, axis=0) ** 2) == pytest.approx(msd, rel=0.03)
    assert np.mean(yz ** 2) == pytest.approx(var, rel=0.10)


def test_langevin_option_for_brownian_toy():
    ts = systems.get_system("four-well", integrator="langevin")
    assert isinstance(ts.make_integrator(1), openmm.LangevinMiddleIntegrator)
    assert ts.friction.value_in_unit(unit.picosecond ** -1) == pytest.approx(1.0)
    assert isinstance(systems.get_system("four-well").make_integrator(1), openmm.BrownianIntegrator)
    assert systems.get_system("four-state").timestep.value_in_unit(unit.picosecond) == 0.01
    assert systems.get_system("four-well").timestep.value_in_unit(unit.picosecond) == 1e-3


def test_mts_integrator_splits_the_slow_groups_from_the_systems_own():
    """``mts = 3``: an ``MTSLangevinIntegrator`` of outer step 3 dt at the system's temperature; every group the
    system's forces use (here 0 and 5) is half-kicked at dt/3, the slow group 30 at the outer step; Brownian
    systems have no such integrator (one-line LssError)."""
    import re

    ts = systems.get_system("four-state")
    ts.system.addForce(openmm.CustomExternalForce("0"))
    ts.system.getForce(ts.system.getNumForces() - 1).setForceGroup(5)
    integrator = ts.make_integrator(1, mts=3, slow_groups=[30])
    assert isinstance(integrator, openmm.MTSLangevinIntegrator)
    assert integrator.getStepSize().value_in_unit(unit.picosecond) == pytest.approx(0.03)
    assert integrator.getGlobalVariableByName("kT") == pytest.approx(
        (unit.MOLAR_GAS_CONSTANT_R * ts.temperature).value_in_unit(unit.kilojoule_per_mole))
    program = " ".join(integrator.getComputationStep(i)[2] for i in range(integrator.getNumComputations()))
    assert sorted(set(re.findall(r"dt/(\d+)\)\*f(\d+)", program))) == [("1", "30"), ("3", "0"), ("3", "5")]
    assert isinstance(ts.make_integrator(1, mts=1, slow_groups=[30]), openmm.LangevinMiddleIntegrator)
    with pytest.raises(LssError, match="needs a Langevin system; four-well uses a Brownian integrator"):
        systems.get_system("four-well").make_integrator(mts=2)
    with pytest.raises(LssError, match="mts must be a positive integer"):
        ts.make_integrator(mts=0)


def test_default_toy_temperature_gives_unit_kt():
    ts = systems.get_system("three-state-linear")
    assert ts.reduced_units["kT_kJ_per_mol"] == pytest.approx(1.0)
    assert ts.temperature.value_in_unit(unit.kelvin) == pytest.approx(120.272, abs=1e-3)


# --------------------------------------------------------------------------
# alanine dipeptide


def test_alanine_dipeptide_dihedral_indices_and_chirality():
    ts = systems.get_system("alanine-dipeptide")
    assert ts.topology.getNumAtoms() == 22
    traj = mdtraj.Trajectory(ts.positions.value_in_unit(unit.nanometer)[None],
                             mdtraj.Topology.from_openmm(ts.topology))
    phi_idx, phi = mdtraj.compute_phi(traj)
    psi_idx, _ = mdtraj.compute_psi(traj)
    assert phi_idx.tolist() == [[4, 6, 8, 14]]
    assert psi_idx.tolist() == [[6, 8, 14, 16]]
    assert phi[0, 0] < 0
    assert ts.timestep.value_in_unit(unit.picosecond) == pytest.approx(0.002)
    assert isinstance(ts.make_integrator(), openmm.LangevinMiddleIntegrator)


def test_shipped_pdb_passes_check():
    path = systems.alanine_dipeptide_pdb_path()
    assert path.is_file() and path.name == "alanine-dipeptide.pdb"
    report = _load_script().check_pdb(path, dynamics=True)
    assert all(line.startswith("[ok]") for line in report)


def test_implicit_solvent_matches_openmm_obc2_forcefield():
    ts = systems.get_system("alanine-dipeptide-implicit")
    assert any(isinstance(f, openmm.GBSAOBCForce) for f in ts.system.getForces())
    reference = app.ForceField("amber99sbildn.xml", "implicit/obc2.xml").createSystem(
        ts.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    energies = []
    for system in (ts.system, reference):
        context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                                 openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(ts.positions)
        energies.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
            unit.kilojoule_per_mole))
    assert energies[0] == pytest.approx(energies[1], abs=0.01)
    vacuum = systems.get_system("alanine-dipeptide")
    assert _energy(vacuum, vacuum.positions.value_in_unit(unit.nanometer)) > energies[0] + 10


def test_restart_noise_is_independent_of_the_velocity_draw():
    """A run seeded with s draws its velocities with s and its Langevin noise with ``integrator_seed(s)``.

    On OpenMM's Reference platform both use one generator, so equal seeds make
    the first step's noise the velocities' own draw: a heat pulse at every
    restart (measured 1.1 ± 0.13 kT more total energy over the first step of
    alanine dipeptide at 450 K, 300 starts).  Here 200 starts of each kind
    from one structure: equal seeds add more than the seeds ``make_simulation``
    uses (difference > 4 SE; with 120 starts it was 1.08 kT, 5.8 SE), and those agree
    with unrelated seeds (within 4 SE).  The integrator seed is a fixed
    function of s (a run is reproduced from one recorded seed), not s itself.
    """
    ts = systems.alanine_dipeptide(temperature=450)
    sim = ts.make_simulation(platform="Reference", seed=7, minimize=False)
    assert sim.integrator.getRandomNumberSeed() == systems.integrator_seed(7) != 7
    assert 0 < systems.integrator_seed(7) < 2 ** 31
    context, integrator = sim.context, sim.integrator
    x0 = context.getState(getPositions=True).getPositions()
    kT = (unit.MOLAR_GAS_CONSTANT_R * 450 * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)

    def first_step_heat(noise_seed) -> tuple[float, float]:
        de = []
        for s in range(1000, 1200):
            integrator.setRandomNumberSeed(noise_seed(s))
            context.reinitialize()
            context.setPositions(x0)
            context.setVelocitiesToTemperature(ts.temperature, s)
            e = context.getState(getEnergy=True)
            e0 = (e.getKineticEnergy() + e.getPotentialEnergy()).value_in_unit(unit.kilojoule_per_mole)
            integrator.step(1)
            e = context.getState(getEnergy=True)
            de.append(((e.getKineticEnergy() + e.getPotentialEnergy()).value_in_unit(unit.kilojoule_per_mole) - e0) / kT)
        return float(np.mean(de)), float(np.std(de, ddof=1) / np.sqrt(len(de)))

    same, same_se = first_step_heat(lambda s: s)
    ours, ours_se = first_step_heat(systems.integrator_seed)
    other, other_se = first_step_heat(lambda s: s + 500_000)
    assert same - ours > 4 * np.hypot(same_se, ours_se), (same, ours)
    assert abs(ours - other) < 4 * np.hypot(ours_se, other_se), (ours, other)
