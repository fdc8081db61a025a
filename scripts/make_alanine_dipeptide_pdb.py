#!/usr/bin/env python
"""Build, minimise, write and check ``lss_engine/resources/alanine-dipeptide.pdb``.

Alanine dipeptide (ACE-ALA-NME, 22 atoms) is built from internal coordinates
(NeRF placement: each atom from a bond length, a bond angle and a torsion to
three atoms already placed) with Amber parm99 equilibrium bond lengths and
angles, trans peptide bonds (ω = 180°), L-chirality at CA and backbone
torsions in the C7eq basin (φ = -80°, ψ = 70°).  It is then energy-minimised
with amber99sb-ildn (vacuum, NoCutoff, HBonds constraints, Reference
platform) and written with OpenMM's ``PDBFile`` (Amber atom names; OpenMM's
reader maps them to its PDB standard names, e.g. ACE ``HH31`` -> ``H1`` and
NME ``CH3`` -> ``C``).

Atom order (a shared reference dataset uses φ = 4-6-8-14, ψ = 6-8-14-16)::

    0 HH31 ACE   1 CH3 ACE   2 HH32 ACE  3 HH33 ACE  4 C ACE    5 O ACE
    6 N ALA      7 H ALA     8 CA ALA    9 HA ALA    10 CB ALA  11 HB1 ALA
    12 HB2 ALA   13 HB3 ALA  14 C ALA    15 O ALA    16 N NME   17 H NME
    18 CH3 NME   19 HH31 NME 20 HH32 NME 21 HH33 NME

Chirality: for an L residue the torsion (N, C, CA, CB) is about +122° and
(N, C, CA, HA) about -118° (checked against OpenMM's ``test.pdb`` protein:
+116..+126° and -117..-131°).  The script verifies it three ways: that
torsion, the minimised C7eq (L) energy lying below the minimised C7ax
(φ = +75°, ψ = -65°) energy, and a short 450 K run spending far more time at
φ < 0 than at φ > 0.

Usage::

    python scripts/make_alanine_dipeptide_pdb.py           # rebuild + check
    python scripts/make_alanine_dipeptide_pdb.py --check   # check shipped file
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

REPO = Path(__file__).resolve().parents[1]
PDB_PATH = REPO / "lss_engine" / "resources" / "alanine-dipeptide.pdb"

PHI_INDICES = (4, 6, 8, 14)
PSI_INDICES = (6, 8, 14, 16)

# (residue, atom name, element) in the required order
ATOMS = [
    ("ACE", "HH31", "H"), ("ACE", "CH3", "C"), ("ACE", "HH32", "H"), ("ACE", "HH33", "H"),
    ("ACE", "C", "C"), ("ACE", "O", "O"),
    ("ALA", "N", "N"), ("ALA", "H", "H"), ("ALA", "CA", "C"), ("ALA", "HA", "H"),
    ("ALA", "CB", "C"), ("ALA", "HB1", "H"), ("ALA", "HB2", "H"), ("ALA", "HB3", "H"),
    ("ALA", "C", "C"), ("ALA", "O", "O"),
    ("NME", "N", "N"), ("NME", "H", "H"), ("NME", "CH3", "C"),
    ("NME", "HH31", "H"), ("NME", "HH32", "H"), ("NME", "HH33", "H"),
]
BONDS = [
    (0, 1), (1, 2), (1, 3), (1, 4), (4, 5), (4, 6),
    (6, 7), (6, 8), (8, 9), (8, 10), (10, 11), (10, 12), (10, 13), (8, 14),
    (14, 15), (14, 16), (16, 17), (16, 18), (18, 19), (18, 20), (18, 21),
]

# Amber parm99 equilibrium values (Angstrom, degrees)
B_CT_H, B_CT_C, B_CT_CT, B_C_O, B_C_N, B_N_CT, B_N_H = 1.090, 1.522, 1.526, 1.229, 1.335, 1.449, 1.010
A_TET = 109.5


def nerf(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle: float,
         torsion: float) -> np.ndarray:
    r"""Place atom d bonded to c.

    |cd| = ``bond``, angle(b, c, d) = ``angle`` and torsion(a, b, c, d) =
    ``torsion`` (degrees), using the natural extension reference frame:
    :math:`d = c + M\,(-\ell\cos\theta,\ \ell\sin\theta\cos\tau,\ \ell\sin\theta\sin\tau)`
    with :math:`M = [\hat{bc},\ \hat n\times\hat{bc},\ \hat n]`,
    :math:`\hat n \propto (b-a)\times\hat{bc}`.
    """
    theta, tau = math.radians(angle), math.radians(torsion)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.column_stack([bc, np.cross(n, bc), n])
    d2 = bond * np.array([-math.cos(theta), math.sin(theta) * math.cos(tau),
                          math.sin(theta) * math.sin(tau)])
    return c + m @ d2


def dihedral_deg(p: np.ndarray, i: int, j: int, k: int, l: int) -> float:
    """Torsion angle i-j-k-l in degrees (IUPAC sign convention)."""
    b0, b1, b2 = p[i] - p[j], p[k] - p[j], p[l] - p[k]
    b1n = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1n) * b1n
    w = b2 - np.dot(b2, b1n) * b1n
    return math.degrees(math.atan2(np.dot(np.cross(b1n, v), w), np.dot(v, w)))


def build_positions(phi: float = -80.0, psi: float = 70.0, omega: float = 180.0) -> np.ndarray:
    """Cartesian coordinates (Angstrom, shape (22, 3)) from internal coordinates."""
    p = np.zeros((22, 3))
    p[1] = [0.0, 0.0, 0.0]                                   # CH3 (ACE)
    p[4] = [B_CT_C, 0.0, 0.0]                                # C (ACE)
    ang = math.radians(116.6)                                # CT-C-N
    p[6] = p[4] + B_C_N * np.array([-math.cos(ang), math.sin(ang), 0.0])  # N (ALA)
    p[5] = nerf(p[6], p[1], p[4], B_C_O, 120.4, 180.0)      # O (ACE), in plane
    p[8] = nerf(p[1], p[4], p[6], B_N_CT, 121.9, omega)     # CA, ω(CH3-C-N-CA)
    p[7] = nerf(p[1], p[4], p[6], B_N_H, 120.0, omega - 180.0)  # H anti to O
    p[14] = nerf(p[4], p[6], p[8], B_CT_C, 110.1, phi)      # C (ALA), φ
    p[10] = nerf(p[6], p[14], p[8], B_CT_CT, 111.1, 122.0)  # CB: (N, C, CA, CB) = +122 (L)
    p[9] = nerf(p[6], p[14], p[8], B_CT_H, A_TET, -118.0)   # HA
    for k, tor in zip((11, 12, 13), (60.0, 180.0, -60.0)):
        p[k] = nerf(p[6], p[8], p[10], B_CT_H, A_TET, tor)
    p[16] = nerf(p[6], p[8], p[14], B_C_N, 116.6, psi)      # N (NME), ψ
    p[15] = nerf(p[6], p[8], p[14], B_C_O, 120.4, psi + 180.0)
    p[18] = nerf(p[8], p[14], p[16], B_N_CT, 121.9, omega)  # CH3 (NME)
    p[17] = nerf(p[8], p[14], p[16], B_N_H, 120.0, omega - 180.0)
    for k, tor in zip((19, 20, 21), (60.0, 180.0, -60.0)):
        p[k] = nerf(p[14], p[16], p[18], B_CT_H, A_TET, tor)
    for k, tor in zip((0, 2, 3), (60.0, 180.0, -60.0)):
        p[k] = nerf(p[6], p[4], p[1], B_CT_H, A_TET, tor)
    assert abs(dihedral_deg(p, *PHI_INDICES) - phi) < 1e-6
    assert abs(dihedral_deg(p, *PSI_INDICES) - psi) < 1e-6
    return p


def build_topology() -> app.Topology:
    """Topology with Amber atom names and explicit bonds."""
    top = app.Topology()
    chain = top.addChain("A")
    residues = {}
    atoms = []
    for resname, name, symbol in ATOMS:
        if resname not in residues:
            residues[resname] = top.addResidue(resname, chain)
        atoms.append(top.addAtom(name, app.Element.getBySymbol(symbol), residues[resname]))
    for i, j in BONDS:
        top.addBond(atoms[i], atoms[j])
    return top


def forcefield(implicit: bool = False) -> app.ForceField:
    """amber99sb-ildn, optionally with OBC2 (``implicit/obc2.xml``)."""
    files = ["amber99sbildn.xml"] + (["implicit/obc2.xml"] if implicit else [])
    return app.ForceField(*files)


def create_system(topology: app.Topology, implicit: bool = False,
                  constraints=app.HBonds) -> openmm.System:
    return forcefield(implicit).createSystem(topology, nonbondedMethod=app.NoCutoff,
                                             constraints=constraints)


def minimise(topology: app.Topology, positions_nm: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimise in vacuum (HBonds) on Reference; return positions (nm) and energy (kJ/mol)."""
    system = create_system(topology)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions_nm * unit.nanometer)
    context.applyConstraints(1e-10)
    openmm.LocalEnergyMinimizer.minimize(context, 1e-3, 0)
    state = context.getState(getPositions=True, getEnergy=True)
    pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return np.asarray(pos), state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def write_pdb(topology: app.Topology, positions_nm: np.ndarray, path: Path) -> None:
    """Write with OpenMM's PDBFile, with a fixed header (no date, so reruns are byte-stable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        print("REMARK   1 ALANINE DIPEPTIDE ACE-ALA-NME, AMBER99SB-ILDN MINIMISED (C7EQ)", file=fh)
        print("REMARK   1 MADE BY scripts/make_alanine_dipeptide_pdb.py", file=fh)
        app.PDBFile.writeModel(topology, positions_nm * unit.nanometer, fh)
        app.PDBFile.writeFooter(topology, fh)


def _ok(label: str, condition: bool, detail: str, report: list[str], verbose: bool) -> None:
    line = f"[{'ok' if condition else 'FAIL'}] {label}: {detail}"
    report.append(line)
    if verbose:
        print(line)
    if not condition:
        raise AssertionError(f"{label}: {detail}")


def check_pdb(path: Path = PDB_PATH, dynamics: bool = True, verbose: bool = False) -> list[str]:
    """Check an alanine dipeptide PDB; raise ``AssertionError`` on the first failure.

    Checks: 22 atoms / 21 bonds / residues ACE-ALA-NME; ``createSystem`` for
    vacuum and OBC2 (``implicit/obc2.xml``); mdtraj finds exactly one φ
    (4-6-8-14) and one ψ (6-8-14-16), from the OpenMM topology and from
    ``mdtraj.load``; every bond within 0.01 nm of its force-field equilibrium
    length; finite energy that the minimiser cannot lower by more than
    1 kJ/mol; L-chirality (torsion N-C-CA-CB in (90°, 150°), φ < 0); and, with
    ``dynamics``, a 40 ps 450 K Langevin run with >90 % of frames at φ < 0.

    Returns the report lines.
    """
    import mdtraj

    report: list[str] = []
    pdb = app.PDBFile(str(path))
    top = pdb.topology
    pos = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    _ok("atoms", top.getNumAtoms() == 22 and top.getNumBonds() == 21,
        f"{top.getNumAtoms()} atoms, {top.getNumBonds()} bonds", report, verbose)
    resnames = [r.name for r in top.residues()]
    _ok("residues", resnames == ["ACE", "ALA", "NME"], "-".join(resnames), report, verbose)

    vac = create_system(top)
    obc = create_system(top, implicit=True)
    kinds = sorted(type(f).__name__ for f in obc.getForces())
    _ok("createSystem", vac.getNumParticles() == 22 and obc.getNumParticles() == 22,
        f"vacuum {vac.getNumConstraints()} constraints; OBC2 forces {kinds}", report, verbose)

    traj = mdtraj.Trajectory(pos[None], mdtraj.Topology.from_openmm(top))
    phi_idx, phi = mdtraj.compute_phi(traj)
    psi_idx, psi = mdtraj.compute_psi(traj)
    _ok("phi/psi indices",
        phi_idx.tolist() == [list(PHI_INDICES)] and psi_idx.tolist() == [list(PSI_INDICES)],
        f"phi {phi_idx.tolist()} psi {psi_idx.tolist()}", report, verbose)
    phi_deg, psi_deg = math.degrees(phi[0, 0]), math.degrees(psi[0, 0])
    direct = mdtraj.load(str(path))     # mdtraj's own PDB reader agrees
    _ok("mdtraj.load", direct.n_atoms == 22
        and mdtraj.compute_phi(direct)[0].tolist() == [list(PHI_INDICES)]
        and mdtraj.compute_psi(direct)[0].tolist() == [list(PSI_INDICES)]
        and np.allclose(direct.xyz[0], pos, atol=2e-4),
        f"{direct.n_atoms} atoms, same phi/psi atoms and coordinates", report, verbose)

    flex = create_system(top, constraints=None)
    worst = 0.0
    for force in flex.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for b in range(force.getNumBonds()):
                i, j, r0, _ = force.getBondParameters(b)
                worst = max(worst, abs(np.linalg.norm(pos[i] - pos[j]) - r0.value_in_unit(unit.nanometer)))
    _ok("bond lengths", worst < 0.01, f"max |r - r0| = {worst:.4f} nm", report, verbose)

    energies = {}
    for label, system in (("vacuum", vac), ("OBC2", obc)):
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(pos * unit.nanometer)
        energies[label] = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
            unit.kilojoule_per_mole)
        if label == "vacuum":
            ctx.applyConstraints(1e-10)
            openmm.LocalEnergyMinimizer.minimize(ctx, 1e-3, 0)
            relaxed = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
                unit.kilojoule_per_mole)
    _ok("energy", all(map(math.isfinite, energies.values())) and energies["vacuum"] - relaxed < 1.0,
        f"vacuum {energies['vacuum']:.3f}, OBC2 {energies['OBC2']:.3f} kJ/mol, "
        f"re-minimised vacuum {relaxed:.3f} kJ/mol", report, verbose)

    cb = dihedral_deg(pos, 6, 14, 8, 10)
    ha = dihedral_deg(pos, 6, 14, 8, 9)
    _ok("chirality", 90.0 < cb < 150.0 and -150.0 < ha < -90.0 and phi_deg < 0,
        f"L: torsion(N,C,CA,CB) = {cb:+.1f}, (N,C,CA,HA) = {ha:+.1f}; "
        f"phi = {phi_deg:+.1f}, psi = {psi_deg:+.1f} deg", report, verbose)

    if dynamics:
        frac = phi_negative_fraction(top, pos)
        _ok("450 K run", frac > 0.9, f"fraction of frames with phi < 0: {frac:.3f}", report, verbose)
    return report


def phi_negative_fraction(topology: app.Topology, positions_nm: np.ndarray,
                          steps: int = 20000, interval: int = 100, seed: int = 2024) -> float:
    """Fraction of frames with φ < 0 in a 450 K Langevin run (2 fs, vacuum, Reference)."""
    system = create_system(topology)
    integrator = openmm.LangevinMiddleIntegrator(450 * unit.kelvin, 1 / unit.picosecond,
                                                 0.002 * unit.picosecond)
    integrator.setRandomNumberSeed(seed)
    ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions_nm * unit.nanometer)
    ctx.setVelocitiesToTemperature(450 * unit.kelvin, seed)
    n_neg = n = 0
    for _ in range(steps // interval):
        integrator.step(interval)
        p = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        n_neg += dihedral_deg(np.asarray(p), *PHI_INDICES) < 0
        n += 1
    return n_neg / n


def generate(path: Path = PDB_PATH) -> None:
    """Build, minimise and write the PDB; compare C7eq with C7ax energies."""
    top = build_topology()
    pos, energy = minimise(top, build_positions(-80.0, 70.0) / 10.0)
    _, energy_ax = minimise(top, build_positions(75.0, -65.0) / 10.0)
    print(f"minimised C7eq energy {energy:.3f} kJ/mol; C7ax {energy_ax:.3f} kJ/mol")
    if not energy < energy_ax:
        raise AssertionError("C7eq is not below C7ax: chirality at CA is probably wrong")
    write_pdb(top, pos, path)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the shipped file")
    parser.add_argument("--no-dynamics", action="store_true", help="skip the 450 K run")
    parser.add_argument("--path", type=Path, default=PDB_PATH)
    args = parser.parse_args(argv)
    if not args.check:
        generate(args.path)
    try:
        check_pdb(args.path, dynamics=not args.no_dynamics, verbose=True)
    except AssertionError as exc:
        print(f"check failed: {exc}", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
