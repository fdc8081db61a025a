r"""Ready-to-simulate OpenMM test systems: alanine dipeptide and toy potentials.

Every builder returns a :class:`TestSystem` holding what an
``openmm.app.Simulation`` needs; :func:`get_system` looks builders up by name
(the CLI's ``--system``).  Units are OpenMM's: nm, ps, kJ/mol, amu, K.

Molecules
---------
``alanine-dipeptide``
    ACE-ALA-NME, amber99sb-ildn, vacuum, NoCutoff, HBonds constraints,
    ``LangevinMiddleIntegrator(300 K, 1/ps, 2 fs)``; Reference platform (about
    25x faster than CPU for 22 atoms).  φ = atoms 4-6-8-14, ψ = 6-8-14-16.
``alanine-dipeptide-implicit``
    The same plus OBC2 implicit solvent (Amber ``igb=5``: mbondi2 radii and
    OBC2 screening, as OpenMM's ``AmberPrmtopFile`` builds it, as the native
    ``GBSAOBCForce``); Reference platform.

Toy potentials and their reduced units
--------------------------------------
The toys put one particle of mass m = 1 amu in a ``CustomExternalForce``
(``folding-5d``: two particles in a ``CustomCompoundBondForce``).  Reduced units map onto OpenMM's as

* length: 1 = 1 nm;
* energy: 1 = kT = k_B T, so OpenMM's energy is
  :math:`U_\mathrm{openmm} = \beta\,kT\,U(\mathbf x)` with the reduced inverse
  temperature :math:`\beta` of the LSTM paper (1 for the others);
* time: 1 = 1 ps, with D = 1 nm²/ps for Brownian dynamics.  OpenMM's
  ``BrownianIntegrator`` steps
  :math:`\Delta x = F\,\Delta t/(m\gamma) + \sqrt{2kT\Delta t/(m\gamma)}\,R`,
  so :math:`D = kT/(m\gamma)` and the builders set :math:`\gamma = kT/(mD)`.

The toys' default temperature is :data:`TOY_TEMPERATURE_K` = 1 kJ/mol / k_B
≈ 120.27 K, at which kT = 1 kJ/mol, so kJ/mol, nm, ps and amu *are* the
reduced units (kT = m = D = γ_Brownian = 1).  Another temperature rescales
the energy unit (Brownian dynamics keep D = 1; with Langevin the reduced mass
becomes 1 amu·nm²/ps² / kT).  Coordinates a potential does not use are confined
by the separable term :math:`\tfrac12 k (y^2+z^2)` with k = 1 kT/nm²
(``confinement``), which leaves the potential's own coordinates untouched and
gives the confined ones variance kT/k = 1 nm².  ``TestSystem.reduced_units``
records the mapping, and ``TestSystem.reduced_potential`` evaluates
:math:`U(\mathbf x)` (without β and without the confinement) with numpy.

Users' own systems
------------------
:func:`from_xml` builds a :class:`TestSystem` from an OpenMM ``System``
serialized as XML (``XmlSerializer``; never a pickle), a PDB file for the
topology and positions, optionally an OpenMM ``State`` XML for positions, box
and velocities, and the integrator settings.

Specs: rebuilding a system in another process
---------------------------------------------
:func:`system_spec` gives a JSON-able dict from which :func:`build_system`
rebuilds the same system (a walker process, a campaign worker):
``{"kind": "builtin", "name", "parameters"}`` for the registry's systems
(``parameters``: the builder's keyword arguments), ``{"kind": "xml", "name",
"parameters"}`` for :func:`from_xml` systems (absolute paths, integrator
settings and the SHA-256 of each input file: a changed file is refused).
:func:`system_key` is a short stable hash of a spec (a cache key).
"""
from __future__ import annotations

import hashlib
import importlib.resources
import inspect
import io
import json
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import openmm
from openmm import app, unit

from ._helpers import canonical_json, derive_seed, first_line, jsonable, positive_float, positive_int
from .errors import LssError
from .units import parse_time_ps

__all__ = [
    "ALANINE_PHI_INDICES",
    "ALANINE_PSI_INDICES",
    "THREE_STATE_LINEAR_CENTRES",
    "THREE_STATE_TRIANGULAR_CENTRES",
    "TestSystem",
    "TOY_TEMPERATURE_K",
    "alanine_dipeptide",
    "alanine_dipeptide_implicit",
    "alanine_dipeptide_pdb_path",
    "build_system",
    "choose_platform",
    "double_well",
    "folding_5d",
    "four_state",
    "four_well",
    "from_xml",
    "make_system",
    "get_system",
    "integrator_seed",
    "list_systems",
    "system_key",
    "system_spec",
    "three_state_linear",
    "three_state_triangular",
]

#: Boltzmann constant in kJ/mol/K (OpenMM's value).
KB_KJ_PER_MOL_K: float = (unit.BOLTZMANN_CONSTANT_kB * unit.AVOGADRO_CONSTANT_NA).value_in_unit(
    unit.kilojoule_per_mole / unit.kelvin)
#: Default toy temperature (K): kT = 1 kJ/mol.
TOY_TEMPERATURE_K: float = 1.0 / KB_KJ_PER_MOL_K

#: φ and ψ atom indices of the shipped alanine dipeptide.
ALANINE_PHI_INDICES: tuple[int, int, int, int] = (4, 6, 8, 14)
ALANINE_PSI_INDICES: tuple[int, int, int, int] = (6, 8, 14, 16)

_INTEGRATORS = ("brownian", "langevin")
_AXES = "xyz"


@dataclass
class TestSystem:
    """An OpenMM system with everything needed to simulate it.

    Attributes
    ----------
    name
        Registry name (see :func:`list_systems`), or a user system's name
        (:func:`from_xml`).
    topology
        ``openmm.app.Topology``.
    system
        ``openmm.System``.
    positions
        Starting positions, ``Quantity`` of an (n_atoms, 3) array in nm.
    temperature
        Thermostat temperature, ``Quantity`` in K.
    timestep
        Integrator step, ``Quantity`` in ps.
    default_platform
        ``"Reference"`` or ``"CPU"``: the faster one for this system.
    description
        One paragraph for humans.
    reduced_units
        For toys: how kT = 1, D = 1 and the time step map onto OpenMM units,
        and which particle coordinates the potential uses (JSON-serialisable);
        ``None`` for molecules.
    parameters
        The builder's keyword arguments after defaults (JSON-serialisable).
    integrator
        ``"langevin"`` (``LangevinMiddleIntegrator``) or ``"brownian"``
        (``BrownianIntegrator``).
    friction
        Langevin collision rate or Brownian friction γ, ``Quantity`` in 1/ps.
    reduced_potential
        Toys only: ``U(coords)`` with numpy, ``coords`` shaped (..., d) in the
        order of ``reduced_units["coordinates"]``; returns the reduced energy
        without β and without the confinement term.
    velocities
        Starting velocities, ``Quantity`` of an (n_atoms, 3) array in nm/ps,
        or ``None`` (drawn at ``temperature``).  Only :func:`from_xml` with a
        State XML that holds velocities sets them.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    name: str
    topology: app.Topology
    system: openmm.System
    positions: unit.Quantity
    temperature: unit.Quantity
    timestep: unit.Quantity
    default_platform: str
    description: str
    reduced_units: dict | None
    parameters: dict
    integrator: str = "langevin"
    friction: unit.Quantity = field(default_factory=lambda: 1.0 / unit.picosecond)
    reduced_potential: Callable[[np.ndarray], np.ndarray] | None = field(
        default=None, repr=False, compare=False)
    velocities: unit.Quantity | None = field(default=None, repr=False, compare=False)

    def make_integrator(self, seed: int | None = None, *, mts: int = 1,
                        slow_groups: Sequence[int] = ()) -> openmm.Integrator:
        """A fresh integrator for this system.

        Parameters
        ----------
        seed
            Passed to ``setRandomNumberSeed``; ``None`` keeps OpenMM's default
            (0: a new seed each time).  OpenMM also treats 0 as "random".
        mts, slow_groups
            ``mts > 1``: a multiple-time-step ``MTSLangevinIntegrator`` (same
            temperature and friction; r-RESPA splitting) whose outer step is
            ``mts`` × :attr:`timestep`.  The force groups ``slow_groups`` are
            evaluated once per outer step; every other force group the
            system's forces use is evaluated ``mts`` times (every
            :attr:`timestep`).  Langevin systems only (there is no
            multiple-time-step Brownian integrator).

        Notes
        -----
        OpenMM's Reference platform draws from one process-wide random
        stream: a seeded run is reproducible when simulations in the same
        process are not stepped interleaved.
        """
        mts = positive_int(mts, "mts")
        if mts > 1:
            if self.integrator == "brownian":
                raise LssError(f"mts = {mts} needs a Langevin system; {self.name} uses a Brownian integrator "
                               f"(there is no multiple-time-step Brownian integrator)")
            slow = sorted({int(g) for g in slow_groups})
            fast = sorted({f.getForceGroup() for f in self.system.getForces()} - set(slow))
            integrator = openmm.MTSLangevinIntegrator(self.temperature, self.friction, mts * self.timestep,
                                                      [(g, mts) for g in fast] + [(g, 1) for g in slow])
        elif self.integrator == "brownian":
            integrator = openmm.BrownianIntegrator(self.temperature, self.friction, self.timestep)
        else:
            integrator = openmm.LangevinMiddleIntegrator(self.temperature, self.friction,
                                                         self.timestep)
        if seed is not None:
            integrator.setRandomNumberSeed(int(seed))
        return integrator

    def make_simulation(self, platform: str = "auto", seed: int | None = None,
                        minimize: bool = True, *, mts: int = 1, slow_groups: Sequence[int] = ()) -> app.Simulation:
        """An ``openmm.app.Simulation`` ready to ``step``.

        Sets the positions, minimises the energy if ``minimize`` (toys start
        at a minimum, so it is harmless there), and, when the integrator has
        velocities, sets :attr:`velocities` if the system has them (a State
        XML's), else draws them at ``temperature`` with ``seed``.

        Minimisation is the caller's explicit choice: restarts (a resumed
        run, a campaign's new walker from a saved frame or state) must pass
        ``minimize=False``.

        Parameters
        ----------
        platform
            ``"auto"`` (the system's :attr:`default_platform`) or an OpenMM
            platform name; see :func:`choose_platform`.
        seed
            Velocity seed; the integrator's is :func:`integrator_seed` of it
            (independent noise); ``None`` for random.
        minimize
            Run ``Simulation.minimizeEnergy()`` first.
        mts, slow_groups
            A multiple-time-step integrator (see :meth:`make_integrator`).
        """
        simulation = app.Simulation(self.topology, self.system,
                                    self.make_integrator(None if seed is None else integrator_seed(seed),
                                                         mts=mts, slow_groups=slow_groups),
                                    choose_platform(platform, self))
        simulation.context.setPositions(self.positions)
        if minimize:
            simulation.minimizeEnergy()
        if self.integrator != "brownian":
            if self.velocities is not None:
                simulation.context.setVelocities(self.velocities)
            elif seed is None:
                simulation.context.setVelocitiesToTemperature(self.temperature)
            else:
                simulation.context.setVelocitiesToTemperature(self.temperature, int(seed))
        return simulation

    def reduced_coordinates(self, positions_nm: np.ndarray) -> np.ndarray:
        """The potential's coordinates from positions in nm.

        ``positions_nm`` is shaped (..., n_atoms, 3); returns (..., d) in the
        order of ``reduced_units["coordinates"]`` (lengths are already reduced:
        1 nm = 1).
        """
        if self.reduced_units is None:
            raise LssError(f"{self.name} is not a toy system; it has no reduced coordinates")
        pos = np.asarray(positions_nm)
        return np.stack([pos[..., p, a] for p, a in self.reduced_units["coordinates"]], axis=-1)


# ----------------------------------------------------------------------------
# platforms and data


def _platform_names() -> list[str]:
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


def choose_platform(name: str = "auto", test_system: TestSystem | None = None) -> openmm.Platform:
    """Resolve a platform name.

    Parameters
    ----------
    name
        ``"auto"`` picks ``test_system.default_platform`` (``"Reference"``
        without a system); otherwise an OpenMM platform name, case-insensitive
        (``"cpu"``, ``"CUDA"``, ...).
    test_system
        System whose default ``"auto"`` should use.

    Raises
    ------
    LssError
        If the platform does not exist or is not available here.
    """
    available = _platform_names()
    wanted = str(name)
    if wanted.lower() == "auto":
        wanted = test_system.default_platform if test_system is not None else "Reference"
    for candidate in available:
        if candidate.lower() == wanted.lower():
            return openmm.Platform.getPlatformByName(candidate)
    raise LssError(f"OpenMM platform {name!r} is not available; available: "
                   f"{', '.join(available)} (or 'auto')")


def alanine_dipeptide_pdb_path() -> pathlib.Path:
    """Path of the shipped ``alanine-dipeptide.pdb`` (package data).

    Made by ``scripts/make_alanine_dipeptide_pdb.py``: amber99sb-ildn
    minimised C7eq structure, φ = atoms 4-6-8-14, ψ = 6-8-14-16.
    """
    path = pathlib.Path(str(importlib.resources.files("lss_engine").joinpath(
        "resources", "alanine-dipeptide.pdb")))
    if not path.is_file():
        raise LssError(f"package data file {path} is missing; reinstall lss_engine")
    return path


# ----------------------------------------------------------------------------
# argument helpers


def _kelvin(value: Any) -> float:
    if hasattr(value, "value_in_unit"):
        value = value.value_in_unit(unit.kelvin)
    return positive_float(value, "temperature (K)")


def integrator_seed(velocity_seed: int) -> int:
    r"""The integrator's random-number seed of a run whose velocities are drawn with ``velocity_seed``.

    OpenMM's Reference platform draws the Langevin noise with the same
    generator (SFMT, polar Box–Muller) as ``setVelocitiesToTemperature``, so
    with one seed for both the first step's noise *is* the initial
    velocities' draw: the step adds :math:`\sqrt{1 - e^{-2γΔt}}\,σ_v`
    along :math:`v_0` instead of an independent kick, a heat pulse at every
    restart.  Measured on alanine dipeptide at 450 K (300 starts from one
    structure each): the first step added 1.1 ± 0.13 kT more total energy
    with equal seeds than with independent ones (3.46 ± 0.10 vs
    2.36 ± 0.09 kT).  This seed is a fixed function of ``velocity_seed``
    (a run is reproduced from its one recorded seed) and an independent
    stream (:func:`lss_engine._helpers.derive_seed`); in OpenMM's positive
    31-bit range (0 would mean "random").
    """
    return derive_seed(int(velocity_seed), 0x6E6F6973) % (2 ** 31 - 1) + 1


def _timestep_ps(value: Any) -> float:
    return positive_float(parse_time_ps(value), "timestep")


def _integrator_name(value: str) -> str:
    name = str(value).lower()
    if name not in _INTEGRATORS:
        raise LssError(f"integrator must be one of {', '.join(_INTEGRATORS)}, got {value!r}")
    return name


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _check_json(params: dict) -> dict:
    json.dumps(params)  # fail loudly in development if a builder records a non-JSON value
    return params


# ----------------------------------------------------------------------------
# alanine dipeptide


def _alanine(name: str, implicit: bool, temperature: float, timestep: float,
             friction: float) -> TestSystem:
    t_k = _kelvin(temperature)
    dt_ps = _timestep_ps(timestep)
    gamma = positive_float(friction, "friction")
    pdb = app.PDBFile(str(alanine_dipeptide_pdb_path()))
    system = app.ForceField("amber99sbildn.xml").createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    if implicit:
        _add_obc2(system, pdb.topology)
    positions = unit.Quantity(np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)),
                              unit.nanometer)
    solvent = ("OBC2 implicit solvent (igb=5: mbondi2 radii, native GBSAOBCForce)"
               if implicit else "vacuum")
    return TestSystem(
        name=name,
        topology=pdb.topology,
        system=system,
        positions=positions,
        temperature=t_k * unit.kelvin,
        timestep=dt_ps * unit.picosecond,
        default_platform="Reference",
        description=(f"Alanine dipeptide (ACE-ALA-NME, 22 atoms), amber99sb-ildn, {solvent}, "
                     f"NoCutoff, HBonds constraints, Langevin middle {t_k:g} K, {gamma:g}/ps, "
                     f"{dt_ps * 1000:g} fs. phi = atoms 4-6-8-14, psi = 6-8-14-16."),
        reduced_units=None,
        parameters=_check_json({"temperature": t_k, "timestep": dt_ps, "friction": gamma}),
        integrator="langevin",
        friction=gamma / unit.picosecond,
    )


def _add_obc2(system: openmm.System, topology: app.Topology) -> None:
    r"""Add OBC2 (Amber ``igb=5``) as OpenMM's ``AmberPrmtopFile`` does for kappa = 0.

    Charges from the ``NonbondedForce``; radius and screening scale from
    ``GBSAOBC2Force.getStandardParameters`` (mbondi2), the parameter set of
    ``implicit/obc2.xml``; solute/solvent dielectric 1 / 78.5, ACE surface
    term.  Same energy as ``implicit/obc2.xml`` (to ~0.002 kJ/mol) but the
    native force is ~40x faster on the Reference platform.
    """
    from openmm.app.internal.customgbforces import GBSAOBC2Force

    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    nonbonded.setReactionFieldDielectric(1.0)
    gb = openmm.GBSAOBCForce()
    gb.setNonbondedMethod(openmm.GBSAOBCForce.NoCutoff)
    gb.setSoluteDielectric(1.0)
    gb.setSolventDielectric(78.5)
    for i, (radius, scale) in enumerate(GBSAOBC2Force.getStandardParameters(topology)):
        charge = nonbonded.getParticleParameters(i)[0]
        gb.addParticle(charge, radius, scale)
    system.addForce(gb)


def alanine_dipeptide(temperature: float = 300.0, timestep: float = 0.002,
                      friction: float = 1.0) -> TestSystem:
    """Alanine dipeptide in vacuum.

    amber99sb-ildn, NoCutoff, HBonds constraints,
    ``LangevinMiddleIntegrator(temperature, friction, timestep)``; starts from
    the shipped minimised C7eq structure (φ ≈ -78°, ψ ≈ 54°).  Default
    platform Reference (~70-95k steps/s vs ~2.5k on CPU).

    Parameters
    ----------
    temperature
        K.
    timestep
        ps (or a time string such as ``"2fs"``).
    friction
        Collision rate, 1/ps.
    """
    return _alanine("alanine-dipeptide", False, temperature, timestep, friction)


def alanine_dipeptide_implicit(temperature: float = 300.0, timestep: float = 0.002,
                               friction: float = 1.0) -> TestSystem:
    """Alanine dipeptide in OBC2 implicit solvent.

    As :func:`alanine_dipeptide` plus OBC2 (Amber ``igb=5``) GB/SA with
    mbondi2 radii, built as the native ``GBSAOBCForce`` the way OpenMM's
    ``AmberPrmtopFile(...).createSystem(implicitSolvent=OBC2)`` does; the
    energy matches ``ForceField('amber99sbildn.xml', 'implicit/obc2.xml')``
    to ~1e-3 kJ/mol.  Default platform Reference (~27k steps/s vs ~4k on CPU;
    the ``implicit/obc2.xml`` CustomGBForce would manage ~0.7k / ~2.7k).
    """
    return _alanine("alanine-dipeptide-implicit", True, temperature, timestep, friction)


# ----------------------------------------------------------------------------
# toy potentials


def _toy(name: str, *, description: str, coords: Sequence[tuple[int, int]], n_particles: int,
         energy: str, reduced_potential: Callable[[np.ndarray], np.ndarray],
         start: Sequence[float], temperature: float, timestep: float, integrator: str,
         friction: float | None, beta: float, confinement: float, params: dict,
         relax: bool = True) -> TestSystem:
    r"""Assemble a toy :class:`TestSystem`.

    ``energy`` is a Lepton expression of the reduced potential in the
    variables ``x1``... of ``coords`` (``x``, ``y``, ``z`` for one particle;
    ``x1, y1, z1, x2, ...`` for two), optionally followed by ``; name = ...``
    definitions.  OpenMM gets
    ``escale*(energy) + 0.5*kconf*(sum of unused coordinates²)`` with the
    global parameters ``escale`` = β kT and ``kconf`` = confinement · kT.
    """
    t_k = _kelvin(temperature)
    dt = _timestep_ps(timestep)
    integ = _integrator_name(integrator)
    beta = positive_float(beta, "beta")
    k_conf = positive_float(confinement, "confinement")
    kt = KB_KJ_PER_MOL_K * t_k
    mass = 1.0
    if friction is None:
        gamma = kt / mass if integ == "brownian" else 1.0   # Brownian: γ = kT/(m D), D = 1
    else:
        gamma = positive_float(friction, "friction")

    def var(p: int, a: int) -> str:
        return _AXES[a] if n_particles == 1 else f"{_AXES[a]}{p + 1}"

    used = set(coords)
    confined = [(p, a) for p in range(n_particles) for a in range(3) if (p, a) not in used]
    main, *definitions = energy.split(";")   # Lepton definitions must come last
    expression = f"escale*({main.strip()})"
    if confined:
        expression += " + 0.5*kconf*(" + " + ".join(f"{var(p, a)}^2" for p, a in confined) + ")"
    expression = "; ".join([expression] + [d.strip() for d in definitions])
    if n_particles == 1:
        force = openmm.CustomExternalForce(expression)
        force.addParticle(0, [])
    else:
        force = openmm.CustomCompoundBondForce(n_particles, expression)
        force.addBond(list(range(n_particles)), [])
    force.addGlobalParameter("escale", beta * kt)
    force.addGlobalParameter("kconf", k_conf * kt)
    force.setName(f"lss_engine {name} potential")

    system = openmm.System()
    topology = app.Topology()
    residue = topology.addResidue("TOY", topology.addChain("A"))
    for p in range(n_particles):
        system.addParticle(mass)
        topology.addAtom(f"P{p + 1}", None, residue)
    system.addForce(force)

    xyz = np.zeros((n_particles, 3))
    for (p, a), value in zip(coords, start):
        xyz[p, a] = value
    if relax:
        xyz = _relax(system, xyz)
    params = dict(params, integrator=integ, beta=beta, confinement=k_conf,
                  friction=None if friction is None else gamma)
    params = _check_json({k: _jsonable(v) for k, v in params.items()})
    reduced = {
        "length": "1 = 1 nm",
        "energy": f"1 = kT = {kt:.6g} kJ/mol (OpenMM energy = beta * kT * U + confinement)",
        "time": "1 = 1 ps",
        "kT_kJ_per_mol": kt,
        "beta": beta,
        "mass_amu": mass,
        "integrator": integ,
        "friction_per_ps": gamma,
        "diffusion_nm2_per_ps": kt / (mass * gamma) if integ == "brownian" else None,
        "timestep": dt,
        "confinement_kT_per_nm2": k_conf,
        "coordinates": [[p, a] for p, a in coords],
        "coordinate_names": [var(p, a) for p, a in coords],
        "start": [float(xyz[p, a]) for p, a in coords],
    }
    return TestSystem(
        name=name,
        topology=topology,
        system=system,
        positions=unit.Quantity(xyz, unit.nanometer),
        temperature=t_k * unit.kelvin,
        timestep=dt * unit.picosecond,
        default_platform="Reference",
        description=description,
        reduced_units=reduced,
        parameters=params,
        integrator=integ,
        friction=gamma / unit.picosecond,
        reduced_potential=reduced_potential,
    )


def _relax(system: openmm.System, xyz: np.ndarray) -> np.ndarray:
    """Local energy minimum from ``xyz`` (nm), Reference platform, tight tolerance."""
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(xyz * unit.nanometer)
    openmm.LocalEnergyMinimizer.minimize(context, 1e-8, 0)
    out = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return np.asarray(out, dtype=float)


def _gauss_sum(centres: np.ndarray, sigma: float) -> tuple[str, Callable]:
    r"""Lepton text and numpy function of :math:`\sum_i G(x,x_i)G(y,y_i)`."""
    s2 = 2.0 * sigma * sigma
    terms = [f"exp(-((x-({float(cx)!r}))^2+(y-({float(cy)!r}))^2)/{s2!r})"
             for cx, cy in centres]

    def value(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return sum(np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / s2) for cx, cy in centres)

    return "(" + " + ".join(terms) + ")", value


def _centres(value: Any, n: int, what: str) -> np.ndarray:
    try:
        c = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise LssError(f"{what} must be {n} (x, y) pairs, got {value!r}") from exc
    if c.shape != (n, 2) or not np.all(np.isfinite(c)):
        raise LssError(f"{what} must be {n} (x, y) pairs, got {value!r}")
    return c


def four_well(temperature: float = TOY_TEMPERATURE_K, a: float = 4.0, timestep: float = 1e-3,
              integrator: str = "brownian", friction: float | None = None, beta: float = 1.0,
              confinement: float = 1.0) -> TestSystem:
    r"""Prinz et al. (2011) 1-D four-well potential on x.

    .. math::
        V(x) = a\,\bigl(x^8 + 0.8\,e^{-80x^2} + 0.2\,e^{-80(x-0.5)^2}
               + 0.5\,e^{-40(x+0.5)^2}\bigr)

    in kT (× β); y, z confined.  Minima at x ≈ -0.739, -0.224, 0.269 (global),
    0.673; starts at the global minimum x ≈ 0.269.  Brownian, D = 1 nm²/ps,
    ``timestep`` 1e-3 (reduced = ps).

    Parameters
    ----------
    temperature
        K; sets the energy unit kT (default: kT = 1 kJ/mol).
    a
        Prefactor: 4 by default; the LSS paper uses 2.
    timestep
        Reduced time (= ps).
    integrator
        ``"brownian"`` (default) or ``"langevin"``.
    friction
        1/ps; ``None``: γ = kT/(mD) with D = 1 for Brownian, 1/ps for Langevin.
    beta
        Reduced inverse temperature multiplying V.
    confinement
        k of 0.5 k (y²+z²), in kT/nm².
    """
    a_ = float(a)
    params = {"temperature": _kelvin(temperature), "a": a_, "timestep": _timestep_ps(timestep),
              "integrator": integrator, "friction": friction, "beta": beta,
              "confinement": confinement}
    energy = (f"{a_!r}*(x^8 + 0.8*exp(-80*x^2) + 0.2*exp(-80*(x-0.5)^2) "
              f"+ 0.5*exp(-40*(x+0.5)^2))")

    def potential(q: np.ndarray) -> np.ndarray:
        x = np.asarray(q, dtype=float)[..., 0]
        return a_ * (x ** 8 + 0.8 * np.exp(-80 * x ** 2) + 0.2 * np.exp(-80 * (x - 0.5) ** 2)
                     + 0.5 * np.exp(-40 * (x + 0.5) ** 2))

    return _toy("four-well", description=(
        f"Prinz 1-D four-well potential V(x) = {a_:g}(x^8 + 0.8e^(-80x^2) + 0.2e^(-80(x-0.5)^2) "
        f"+ 0.5e^(-40(x+0.5)^2)) in kT, y and z confined; one particle, reduced units "
        f"nm / kT / ps, D = 1."),
        coords=[(0, 0)], n_particles=1, energy=energy, reduced_potential=potential,
        start=[0.269], temperature=temperature, timestep=timestep, integrator=integrator,
        friction=friction, beta=beta, confinement=confinement, params=params)


def double_well(temperature: float = TOY_TEMPERATURE_K, timestep: float = 1e-3,
                integrator: str = "brownian", friction: float | None = None, beta: float = 1.0,
                confinement: float = 1.0) -> TestSystem:
    r"""VAMPnets asymmetric double well on x.

    .. math:: U(x) = x^4 - 6x^2 + 2x

    in kT (× β); y, z confined.  Minima x ≈ -1.810 (U ≈ -12.54, global) and
    1.642 (U ≈ -5.62), barrier top x ≈ 0.168 (U ≈ 0.167): 12.7 kT and 5.8 kT.
    Starts at x ≈ -1.810.  Brownian, D = 1 nm²/ps, ``timestep`` 1e-3.
    Parameters as in :func:`four_well`.
    """
    params = {"temperature": _kelvin(temperature), "timestep": _timestep_ps(timestep),
              "integrator": integrator, "friction": friction, "beta": beta,
              "confinement": confinement}

    def potential(q: np.ndarray) -> np.ndarray:
        x = np.asarray(q, dtype=float)[..., 0]
        return x ** 4 - 6 * x ** 2 + 2 * x

    return _toy("double-well", description=(
        "VAMPnets asymmetric double well U(x) = x^4 - 6x^2 + 2x in kT, y and z confined; "
        "one particle, reduced units nm / kT / ps, D = 1."),
        coords=[(0, 0)], n_particles=1, energy="x^4 - 6*x^2 + 2*x",
        reduced_potential=potential, start=[-1.81], temperature=temperature,
        timestep=timestep, integrator=integrator, friction=friction, beta=beta,
        confinement=confinement, params=params)


#: Default centres (x, y) of the LSTM paper's Eq. 23 potentials: A, B, C.
THREE_STATE_LINEAR_CENTRES = ((-2.5, 0.0), (0.0, 0.0), (2.5, 0.0))
THREE_STATE_TRIANGULAR_CENTRES = ((-2.5, -1.78), (0.0, 2.55), (2.5, -1.78))


def _three_state(name: str, centres: Any, default_beta: float, temperature: float,
                 beta: float | None, w: float, sigma: float, timestep: float, integrator: str,
                 friction: float | None, confinement: float, layout: str) -> TestSystem:
    c = _centres(centres, 3, "centres")
    beta_ = default_beta if beta is None else beta
    w_, s_ = float(w), positive_float(sigma, "sigma")
    params = {"temperature": _kelvin(temperature), "centres": c.tolist(), "beta": beta_,
              "w": w_, "sigma": s_, "timestep": _timestep_ps(timestep),
              "integrator": integrator, "friction": friction, "confinement": confinement}
    gauss_text, gauss = _gauss_sum(c, s_)

    def potential(q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=float)
        x, y = q[..., 0], q[..., 1]
        return w_ * (x ** 6 + y ** 6) - gauss(x, y)

    pts = ", ".join(f"({x:g}, {y:g})" for x, y in c)
    return _toy(name, description=(
        f"LSTM-paper 3-state potential ({layout}), U = W(x^6+y^6) - sum_i G(x,x_i)G(y,y_i), "
        f"W = {w_:g}, sigma = {s_:g}, centres {pts}, beta = {beta_:g}; z confined; one "
        f"particle, Langevin-type reduced units nm / kT / ps."),
        coords=[(0, 0), (0, 1)], n_particles=1,
        energy=f"{w_!r}*(x^6 + y^6) - {gauss_text}", reduced_potential=potential,
        start=c[0].tolist(), temperature=temperature, timestep=timestep,
        integrator=integrator, friction=friction, beta=beta_, confinement=confinement,
        params=params)


def three_state_linear(temperature: float = TOY_TEMPERATURE_K,
                       centres: Sequence[Sequence[float]] = THREE_STATE_LINEAR_CENTRES,
                       beta: float | None = None, w: float = 1e-4, sigma: float = 0.8,
                       timestep: float = 0.01, integrator: str = "langevin",
                       friction: float | None = None, confinement: float = 1.0) -> TestSystem:
    r"""LSTM paper (Tsai, Kuo & Tiwary 2020) Eq. 23, linear three-state potential.

    .. math::
        U(x, y) = W(x^6 + y^6) - \sum_{i=1}^{3} G(x, x_i)\,G(y, y_i),\qquad
        G(x, x_0) = e^{-(x-x_0)^2/(2\sigma^2)}

    with W = 1e-4, σ = 0.8, β = 9.5 (OpenMM energy β kT U), z confined.  The
    paper does not list the centres; the defaults A = (-2.5, 0),
    B = (0, 0), C = (2.5, 0) put B between A and C, with the same x as
    :func:`three_state_triangular`.  Minima (±2.44, 0) at U = -0.986 and
    (0, 0) at U = -1.015; the A-B and B-C saddles are 0.396 (A/C side) and
    0.425 (B side) above them, i.e. 3.8 and 4.0 kT at β = 9.5; A-C goes
    through B.  The free energy along x has barriers of 3.7 kT.
    Langevin (``LangevinMiddleIntegrator``), m = 1 amu, ``friction`` 1/ps by
    default, ``timestep`` 0.01; starts at the minimum of A.

    Parameters
    ----------
    temperature
        K; sets kT (default kT = 1 kJ/mol, so m = 1 in reduced units too).
    centres
        ((x_A, y_A), (x_B, y_B), (x_C, y_C)).
    beta
        Reduced inverse temperature (default 9.5).
    w, sigma
        W and σ of Eq. 23.
    timestep
        Reduced time (= ps).
    integrator
        ``"langevin"`` (default) or ``"brownian"``.
    friction
        1/ps; ``None``: 1/ps for Langevin, γ = kT/m (D = 1) for Brownian.
    confinement
        k of 0.5 k z², in kT/nm².
    """
    return _three_state("three-state-linear", centres, 9.5, temperature, beta, w, sigma,
                        timestep, integrator, friction, confinement, "linear")


def three_state_triangular(temperature: float = TOY_TEMPERATURE_K,
                           centres: Sequence[Sequence[float]] = THREE_STATE_TRIANGULAR_CENTRES,
                           beta: float | None = None, w: float = 1e-4, sigma: float = 0.8,
                           timestep: float = 0.01, integrator: str = "langevin",
                           friction: float | None = None,
                           confinement: float = 1.0) -> TestSystem:
    r"""LSTM paper Eq. 23, triangular three-state potential (β = 9.0).

    Same form as :func:`three_state_linear`.  Default centres
    A = (-2.5, -1.78), B = (0, 2.55), C = (2.5, -1.78): an equilateral
    triangle of side 5 with the linear model's x-positions (-2.5, 0, 2.5), so
    both project onto the same x; the y offset balances the W(x⁶+y⁶) wall so
    the three minima are equally deep (U = -0.973).  Every pair is directly
    connected: saddles 0.959 above the minima = 8.6 kT at β = 9.0 (the
    price of keeping the linear model's x-positions: with Gaussians of σ = 0.8
    an equilateral side of 5 is needed for the linear spacing 2.5, whose
    barriers are 3.8-4 kT).  The free energy along x has barriers of 4.9 kT
    (linear: 3.7 kT) and minima at the same x.  Langevin, ``timestep`` 0.01;
    starts at the minimum of A.  Parameters as in :func:`three_state_linear`.
    """
    return _three_state("three-state-triangular", centres, 9.0, temperature, beta, w, sigma,
                        timestep, integrator, friction, confinement, "triangular")


def four_state(temperature: float = TOY_TEMPERATURE_K, beta: float = 9.5, w: float = 1e-4,
               sigma: float = 0.8, timestep: float = 0.01, integrator: str = "langevin",
               friction: float | None = None, confinement: float = 1.0) -> TestSystem:
    r"""LSTM paper Eq. 24, four-state potential.

    .. math::
        U = W(x^4 + y^4) + G(x,0)G(y,0) - G(x,2)G(y,-1) - G(x,0.5)G(y,2)
            - G(x,-0.5)G(y,-2) - G(x,-2)G(y,1)

    W = 1e-4, σ = 0.8, β = 9.5, z confined.  Minima at (±2.03, ∓1.02),
    U = -0.983, and (±0.51, ±2.06), U = -0.969.  Saddles (from a 0.01-grid
    watershed) at U = -0.406 between (2, -1)-(-0.5, -2) and (-2, 1)-(0.5, 2),
    i.e. 5.3-5.5 kT at β = 9.5, and at U = -0.115 (8.1-8.3 kT) between those
    two pairs.  Langevin, ``timestep`` 0.01; starts at the minimum near
    (2, -1).  Parameters as in :func:`three_state_linear`.
    """
    w_, s_ = float(w), positive_float(sigma, "sigma")
    params = {"temperature": _kelvin(temperature), "beta": beta, "w": w_, "sigma": s_,
              "timestep": _timestep_ps(timestep), "integrator": integrator,
              "friction": friction, "confinement": confinement}
    wells = np.array([(2.0, -1.0), (0.5, 2.0), (-0.5, -2.0), (-2.0, 1.0)])
    bump_text, bump = _gauss_sum(np.array([(0.0, 0.0)]), s_)
    wells_text, well = _gauss_sum(wells, s_)

    def potential(q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=float)
        x, y = q[..., 0], q[..., 1]
        return w_ * (x ** 4 + y ** 4) + bump(x, y) - well(x, y)

    return _toy("four-state", description=(
        f"LSTM-paper 4-state potential U = W(x^4+y^4) + G(x,0)G(y,0) - G(x,2)G(y,-1) "
        f"- G(x,0.5)G(y,2) - G(x,-0.5)G(y,-2) - G(x,-2)G(y,1), W = {w_:g}, sigma = {s_:g}, "
        f"beta = {beta:g}; z confined; one particle, reduced units nm / kT / ps."),
        coords=[(0, 0), (0, 1)], n_particles=1,
        energy=f"{w_!r}*(x^4 + y^4) + {bump_text} - {wells_text}",
        reduced_potential=potential, start=[2.0, -1.0], temperature=temperature,
        timestep=timestep, integrator=integrator, friction=friction, beta=beta,
        confinement=confinement, params=params)


def folding_5d(temperature: float = TOY_TEMPERATURE_K, timestep: float = 1e-3,
               integrator: str = "brownian", friction: float | None = None, beta: float = 1.0,
               confinement: float = 1.0) -> TestSystem:
    r"""VAMPnets 5-D folding model, bistable in :math:`r = |\mathbf x|`.

    .. math::
        U(r) = \begin{cases} -2.5\,(r-3)^2 & r < 3 \\
                             0.5\,(r-3)^3 - (r-3)^2 & r \ge 3 \end{cases}

    in kT (× β).  The five coordinates are x1, y1, z1 of particle 1 and x2,
    y2 of particle 2, combined in a ``CustomCompoundBondForce`` over the two
    particles with :math:`r = \sqrt{x_1^2+y_1^2+z_1^2+x_2^2+y_2^2}` (Lepton
    ``select(step(r-3), ..., ...)``); z2 is confined.  With the r⁴ volume
    factor of 5-D the free energy :math:`U(r) - 4\ln r` has a folded minimum
    at r ≈ 0.30 (-13.4 kT, holding 99.6 % of the probability at β = 1) and an
    unfolded one at r ≈ 4.67 (-6.6 kT), barrier at r = 3 (-4.4 kT).  U itself
    has a cusp at r = 0 (force undefined there) and a local minimum at
    r = 13/3, where the particle starts (on the x1 axis).  Brownian,
    D = 1 nm²/ps, ``timestep`` 1e-3.  Parameters as in :func:`four_well`.
    """
    params = {"temperature": _kelvin(temperature), "timestep": _timestep_ps(timestep),
              "integrator": integrator, "friction": friction, "beta": beta,
              "confinement": confinement}

    def potential(q: np.ndarray) -> np.ndarray:
        r = np.linalg.norm(np.asarray(q, dtype=float)[..., :5], axis=-1)
        s = r - 3.0
        return np.where(r < 3.0, -2.5 * s ** 2, 0.5 * s ** 3 - s ** 2)

    energy = ("select(step(r-3), 0.5*(r-3)^3 - (r-3)^2, -2.5*(r-3)^2); "
              "r = sqrt(x1^2 + y1^2 + z1^2 + x2^2 + y2^2)")
    return _toy("folding-5d", description=(
        "VAMPnets 5-D folding model U(r) = -2.5(r-3)^2 (r<3), 0.5(r-3)^3 - (r-3)^2 (r>=3), "
        "r = |(x1, y1, z1, x2, y2)| over two particles, z2 confined; reduced units "
        "nm / kT / ps, D = 1."),
        coords=[(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)], n_particles=2, energy=energy,
        reduced_potential=potential, start=[13.0 / 3.0, 0.0, 0.0, 0.0, 0.0],
        temperature=temperature, timestep=timestep, integrator=integrator,
        friction=friction, beta=beta, confinement=confinement, params=params,
        relax=False)


# ----------------------------------------------------------------------------
# registry

_REGISTRY: dict[str, Callable[..., TestSystem]] = {
    "alanine-dipeptide": alanine_dipeptide,
    "alanine-dipeptide-implicit": alanine_dipeptide_implicit,
    "four-well": four_well,
    "double-well": double_well,
    "three-state-linear": three_state_linear,
    "three-state-triangular": three_state_triangular,
    "four-state": four_state,
    "folding-5d": folding_5d,
}


def list_systems() -> list[str]:
    """Names accepted by :func:`get_system` (molecules first, then toys)."""
    return list(_REGISTRY)


def get_system(name: str, **kwargs: Any) -> TestSystem:
    """Build a registered system.

    Parameters
    ----------
    name
        One of :func:`list_systems` (``_`` and ``-`` are interchangeable,
        case-insensitive).
    **kwargs
        The builder's keyword arguments (``temperature`` in K, ``timestep``,
        ...).

    Raises
    ------
    LssError
        For an unknown name or keyword.
    """
    key = _registry_key(name)
    if key is None:
        raise LssError(f"unknown system {name!r}; valid names: {', '.join(_REGISTRY)}")
    builder = _REGISTRY[key]
    accepted = list(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise LssError(f"system {key!r} does not take {', '.join(unknown)}; "
                       f"it takes: {', '.join(accepted)}")
    return builder(**kwargs)


# ----------------------------------------------------------------------------
# users' own systems: System XML + PDB (+ State XML)

#: Particles below which :func:`from_xml` defaults to the Reference platform
#: (small systems step faster there than on CPU, as the built-ins do).
REFERENCE_PLATFORM_MAX_PARTICLES: int = 100

#: The input files of :func:`from_xml`, as named in its parameters.
_XML_FILES = ("system_xml", "pdb", "state_xml")


def _read_input(path: str | os.PathLike, what: str) -> tuple[pathlib.Path, bytes]:
    """The absolute path and the bytes of an input file, or a one-line :class:`LssError`."""
    try:
        resolved = pathlib.Path(path).expanduser().resolve()
        return resolved, resolved.read_bytes()
    except FileNotFoundError:
        raise LssError(f"{what} file {path} does not exist") from None
    except (OSError, TypeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or first_line(exc)
        raise LssError(f"cannot read the {what} file {path}: {reason}") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _text(data: bytes, path: pathlib.Path, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise LssError(f"{what} file {path} is not a text file") from None


def _deserialize(data: bytes, path: pathlib.Path, what: str, expected: type) -> Any:
    """An OpenMM object of type ``expected`` from XML bytes (``XmlSerializer``; never a pickle)."""
    try:
        obj = openmm.XmlSerializer.deserialize(_text(data, path, what))
    except LssError:
        raise
    except (ValueError, openmm.OpenMMException) as exc:  # OpenMM's answers to bad XML
        raise LssError(f"{what} file {path} is not OpenMM XML ({first_line(exc)})") from None
    if not isinstance(obj, expected):
        raise LssError(f"{what} file {path} holds an OpenMM {type(obj).__name__}, not a {expected.__name__}")
    return obj


def _read_pdb(data: bytes, path: pathlib.Path) -> app.PDBFile:
    try:
        return app.PDBFile(io.StringIO(_text(data, path, "PDB")))
    except LssError:
        raise
    except Exception as exc:  # noqa: BLE001 - PDBFile raises assorted errors on malformed files
        raise LssError(f"PDB file {path} cannot be read ({exc.__class__.__name__}: {first_line(exc)})") from None


def _state_arrays(state: openmm.State, path: pathlib.Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Positions (nm), velocities (nm/ps, ``None`` if the State has none) and box vectors (nm) of a State."""
    try:
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    except openmm.OpenMMException:  # the State was saved without positions
        raise LssError(f"State XML file {path} holds no positions (save it with getPositions=True)") from None
    try:
        velocities = np.asarray(state.getVelocities(asNumpy=True).value_in_unit(
            unit.nanometer / unit.picosecond), dtype=float)
    except openmm.OpenMMException:  # saved without velocities: they are drawn at the temperature
        velocities = None
    box = np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer), dtype=float)
    return np.asarray(positions, dtype=float), velocities, box


def _set_box(system: openmm.System, topology: app.Topology, box_nm: np.ndarray | None) -> None:
    """The box of a periodic system on its topology and as its default; none on a non-periodic one."""
    if not system.usesPeriodicBoundaryConditions():
        topology.setPeriodicBoxVectors(None)  # the System decides periodicity, not a CRYST1 record
        return
    if box_nm is None:
        box_nm = np.array([v.value_in_unit(unit.nanometer) for v in system.getDefaultPeriodicBoxVectors()])
    vectors = [openmm.Vec3(*map(float, row)) for row in box_nm]
    system.setDefaultPeriodicBoxVectors(*vectors)
    topology.setPeriodicBoxVectors(vectors * unit.nanometer)  # as PDBFile sets it: a Quantity of Vec3s


def _check_counts(n_system: int, counts: Sequence[tuple[str, int]], system_path: pathlib.Path) -> None:
    if n_system < 1:
        raise LssError(f"System XML file {system_path} has no particles")
    for what, n in counts:
        if n != n_system:
            raise LssError(f"particle counts differ: System XML file {system_path} has {n_system}, {what} has {n}")


def _xml_platform(platform: str | None, n_particles: int) -> str:
    """The default platform of a user system: an explicit name (checked now), else by size."""
    if platform is None or str(platform).lower() == "auto":
        return "Reference" if n_particles < REFERENCE_PLATFORM_MAX_PARTICLES else "CPU"
    return choose_platform(platform).getName()


def make_system(name: str | None = None, parameters: dict | None = None, *, xml: str | os.PathLike | None = None,
                pdb: str | os.PathLike | None = None, state_xml: str | os.PathLike | None = None,
                **settings: Any) -> TestSystem:
    """A built-in system (``name`` + its ``parameters``) or a user's (``xml`` + ``pdb``), with integrator settings.

    ``settings`` (``temperature``, ``timestep``, ``friction``; ``None`` values
    are ignored) apply to either kind; for a built-in they join its
    ``parameters``, and a key given in both with different values is an error.
    """
    settings = {key: value for key, value in settings.items() if value is not None}
    if xml is not None:
        return from_xml(xml, pdb, state_xml=state_xml, **settings)
    merged = dict(parameters or {})
    for key, value in settings.items():
        if key in merged and float(merged[key]) != float(value):
            raise LssError(f"[system] {key} = {value:g} and [system.parameters] {key} = {merged[key]:g} "
                           f"disagree: give it once")
        merged[key] = value
    return get_system(name, **merged)


def from_xml(system_xml: str | os.PathLike, pdb: str | os.PathLike, *, state_xml: str | os.PathLike | None = None,
             temperature: float = 300.0, timestep: float = 0.002, friction: float = 1.0,
             integrator: str = "langevin", platform: str | None = None, name: str | None = None) -> TestSystem:
    """A user's system: an OpenMM ``System`` XML, a PDB and integrator settings.

    Parameters
    ----------
    system_xml
        An ``openmm.System`` written by ``openmm.XmlSerializer.serialize``
        (never a pickle).
    pdb
        The topology, and the positions (nm) unless ``state_xml`` is given.
        For a periodic System its CRYST1 box, if any, becomes the System's
        default box; a non-periodic System's topology gets no box.
    state_xml
        An ``openmm.State`` XML (``XmlSerializer.serialize(context.getState(
        getPositions=True, getVelocities=True))``, or ``Simulation.saveState``):
        positions, the box (for a periodic System) and, if it holds them, the
        velocities, which :meth:`TestSystem.make_simulation` then uses instead
        of drawing new ones.  Its time, step count and parameters are ignored.
    temperature
        Thermostat temperature, K.
    timestep
        Integration step, ps (or a time string such as ``"2fs"``).
    friction
        Langevin collision rate or Brownian friction, 1/ps.
    integrator
        ``"langevin"`` (``LangevinMiddleIntegrator``) or ``"brownian"``.
    platform
        ``default_platform``: ``None``/``"auto"`` picks Reference below
        :data:`REFERENCE_PLATFORM_MAX_PARTICLES` particles and CPU otherwise;
        an explicit name (CUDA, OpenCL) must be available here.
    name
        The system's name (default: the System XML's file stem).

    Returns
    -------
    TestSystem
        ``parameters`` hold the absolute paths, the settings and the SHA-256 of
        each input file (``"sha256"``): :func:`system_spec` and
        :func:`build_system` rebuild it elsewhere and refuse changed files.
        ``reduced_units`` is ``None``.  Energy minimisation is the caller's
        choice (``make_simulation(minimize=False)`` for restarts).

    Raises
    ------
    LssError
        One line: a missing or unreadable file, XML that is not OpenMM's or
        holds another object type (a State given as the System), particle
        counts that differ between System, PDB and State, or a non-positive
        temperature, timestep or friction.
    """
    return _from_files(system_xml, pdb, state_xml, temperature=temperature, timestep=timestep,
                       friction=friction, integrator=integrator, platform=platform, name=name, expected=None)


def _from_files(system_xml: Any, pdb: Any, state_xml: Any, *, temperature: Any, timestep: Any, friction: Any,
                integrator: str, platform: str | None, name: str | None,
                expected: Mapping[str, str] | None) -> TestSystem:
    """:func:`from_xml`, checking each file's SHA-256 against ``expected`` (a spec's) when given.

    Each file is read once: its hash and its parse come from the same bytes.
    """
    t_k = _kelvin(temperature)
    dt_ps = _timestep_ps(timestep)
    gamma = positive_float(friction, "friction")
    integ = _integrator_name(integrator)
    given = {"system_xml": system_xml, "pdb": pdb, "state_xml": state_xml}
    labels = {"system_xml": "System XML", "pdb": "PDB", "state_xml": "State XML"}
    files = {key: _read_input(path, labels[key]) for key, path in given.items() if path is not None}
    hashes = {key: _sha256(data) for key, (_, data) in files.items()}
    if expected is not None:
        _check_hashes(files, hashes, expected)

    system_path, system_data = files["system_xml"]
    system = _deserialize(system_data, system_path, "System XML", openmm.System)
    pdb_path, pdb_data = files["pdb"]
    pdb_file = _read_pdb(pdb_data, pdb_path)
    topology = pdb_file.topology
    counts = [(f"PDB file {pdb_path}", topology.getNumAtoms())]
    velocities = None
    if "state_xml" in files:
        state_path, state_data = files["state_xml"]
        state = _deserialize(state_data, state_path, "State XML", openmm.State)
        positions_nm, velocities_nm, box_nm = _state_arrays(state, state_path)
        counts.append((f"State XML file {state_path}", len(positions_nm)))
        if velocities_nm is not None:
            velocities = unit.Quantity(velocities_nm, unit.nanometer / unit.picosecond)
    else:
        positions_nm = np.asarray(pdb_file.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=float)
        box = topology.getPeriodicBoxVectors()
        box_nm = None if box is None else np.array([v.value_in_unit(unit.nanometer) for v in box])
    _check_counts(system.getNumParticles(), counts, system_path)
    _set_box(system, topology, box_nm)

    n = system.getNumParticles()
    label = name if name is not None else system_path.stem
    params = {"system_xml": str(system_path), "pdb": str(pdb_path),
              "state_xml": str(files["state_xml"][0]) if "state_xml" in files else None,
              "temperature": t_k, "timestep": dt_ps, "friction": gamma, "integrator": integ,
              "platform": None if platform is None or str(platform).lower() == "auto" else str(platform),
              "sha256": hashes}
    sources = " + ".join(path.name for path, _ in files.values())
    periodic = "periodic" if system.usesPeriodicBoundaryConditions() else "non-periodic"
    integrator_text = "Langevin middle" if integ == "langevin" else "Brownian"
    return TestSystem(
        name=str(label),
        topology=topology,
        system=system,
        positions=unit.Quantity(positions_nm, unit.nanometer),
        temperature=t_k * unit.kelvin,
        timestep=dt_ps * unit.picosecond,
        default_platform=_xml_platform(platform, n),
        description=(f"User system {label} from {sources}: {n} particles, {periodic}, {integrator_text} "
                     f"{t_k:g} K, {gamma:g}/ps, {dt_ps * 1000:g} fs."),
        reduced_units=None,
        parameters=_check_json(params),
        integrator=integ,
        friction=gamma / unit.picosecond,
        velocities=velocities,
    )


def _check_hashes(files: Mapping[str, tuple[pathlib.Path, bytes]], hashes: Mapping[str, str],
                  expected: Mapping[str, str]) -> None:
    """Refuse files that are not those a spec was made from (one line)."""
    if set(expected) != set(hashes):
        raise LssError(f"system spec lists SHA-256 for {', '.join(sorted(expected)) or 'no files'} but its files "
                       f"are {', '.join(sorted(hashes))}")
    for key, digest in hashes.items():
        if digest != expected[key]:
            raise LssError(f"{files[key][0]} changed since the system spec was made (SHA-256 {digest[:12]}..., "
                           f"expected {str(expected[key])[:12]}...); make a new spec from the current files")


# ----------------------------------------------------------------------------
# specs: rebuild a system in another process


def _is_xml_parameters(parameters: Mapping[str, Any]) -> bool:
    return "system_xml" in parameters and "sha256" in parameters


def system_spec(test_system: TestSystem) -> dict:
    """A JSON-able spec from which :func:`build_system` rebuilds ``test_system``.

    Parameters
    ----------
    test_system
        A system of :func:`get_system` or of :func:`from_xml`.

    Returns
    -------
    dict
        ``{"kind": "builtin", "name": <registry name>, "parameters": <builder kwargs>}``
        or ``{"kind": "xml", "name": <name>, "parameters": <from_xml's, with
        paths and "sha256">}``.

    Raises
    ------
    LssError
        A system that is neither (a hand-made ``TestSystem``), or whose
        parameters are not all keywords of its builder (it would rebuild
        differently).
    """
    params = jsonable(dict(test_system.parameters))
    if _is_xml_parameters(params):
        spec = {"kind": "xml", "name": test_system.name, "parameters": params}
    else:
        key = _registry_key(test_system.name)
        if key is None:
            raise LssError(f"system {test_system.name!r} is neither a registered system nor from from_xml; "
                           f"it has no spec")
        accepted = set(inspect.signature(_REGISTRY[key]).parameters)
        foreign = sorted(set(params) - accepted)
        if foreign:
            raise LssError(f"system {key!r} has parameters its builder does not take ({', '.join(foreign)}); "
                           f"it cannot be rebuilt from a spec")
        spec = {"kind": "builtin", "name": key, "parameters": params}
    canonical_json(spec, f"the spec of system {test_system.name!r}")
    return spec


def build_system(spec: Mapping[str, Any]) -> TestSystem:
    """The system a :func:`system_spec` spec describes (in this or another process).

    Raises
    ------
    LssError
        A malformed spec, an unknown system or keyword, or (``"xml"``) an input
        file that is missing or no longer has the spec's SHA-256.
    """
    if not isinstance(spec, Mapping):
        raise LssError(f"a system spec must be a dict, got {type(spec).__name__}")
    kind, name, params = spec.get("kind"), spec.get("name"), spec.get("parameters", {})
    if not isinstance(name, str) or not isinstance(params, Mapping):
        raise LssError("a system spec needs a 'name' (str) and 'parameters' (dict)")
    if kind == "builtin":
        return get_system(name, **params)
    if kind == "xml":
        return _build_xml(name, params)
    raise LssError(f"system spec kind must be 'builtin' or 'xml', got {kind!r}")


def _build_xml(name: str, params: Mapping[str, Any]) -> TestSystem:
    accepted = set(inspect.signature(from_xml).parameters) - {"name"}
    unknown = sorted(set(params) - accepted - {"sha256"})
    missing = [key for key in ("system_xml", "pdb", "sha256") if params.get(key) is None]
    if unknown or missing:
        raise LssError(f"xml system spec {name!r}: " + "; ".join(
            part for part in (f"unknown parameters {', '.join(unknown)}" if unknown else "",
                              f"missing {', '.join(missing)}" if missing else "") if part))
    expected = params["sha256"]
    if not isinstance(expected, Mapping):
        raise LssError(f"xml system spec {name!r}: 'sha256' must map file names to hashes")
    settings = {key: p.default for key, p in inspect.signature(from_xml).parameters.items()
                if p.default is not inspect.Parameter.empty and key not in (*_XML_FILES, "name")}
    settings.update({k: v for k, v in params.items() if k not in _XML_FILES and k != "sha256"})
    return _from_files(params["system_xml"], params["pdb"], params.get("state_xml"), name=name,
                       expected=expected, **settings)


def system_key(spec: Mapping[str, Any]) -> str:
    """A short stable key of a spec: the first 16 hex digits of the SHA-256 of its canonical JSON.

    Equal specs (key order aside) give equal keys in every process and
    session; any difference (a parameter, an input file's hash) gives another.
    The spec is taken as it is: ``300`` and ``300.0`` differ, so key the specs
    of :func:`system_spec`, whose numbers are normalised by the builders.
    """
    return hashlib.sha256(canonical_json(jsonable(dict(spec)), "a system spec").encode()).hexdigest()[:16]


def _registry_key(name: str) -> str | None:
    key = str(name).strip().lower().replace("_", "-")
    return key if key in _REGISTRY else None
