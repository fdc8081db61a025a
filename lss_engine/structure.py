r"""Structure-quality metrics: how closely generated configurations match real ones.

A decoder (:class:`lss_engine.models.CWGANDecoder`) is judged by the
structures it makes, compared as ensembles with molecular dynamics frames of
the same atoms (positions in nm, ``(n_frames, n_atoms, 3)``):

* **bonded distances** - :func:`bond_lengths` over a topology's bonds
  (:func:`topology_bonds`; the torsions of those bonds: :func:`proper_torsions`);
  :func:`bond_length_mae` is the mean absolute difference of the per-bond
  mean lengths of two ensembles, in nm;
* **radius of gyration** - :func:`radius_of_gyration` (unweighted, as
  ``mdtraj.compute_rg``), its mean and spread;
* **pair distances** - :func:`pair_distances` of all (or given) atom pairs,
  and :func:`pair_distance_w1`, the mean over pairs of the 1-D Wasserstein
  distance between the two ensembles' distance distributions, in nm;
* **backbone torsions** - :func:`backbone_torsions` (φ/ψ per residue through
  ``mdtraj.compute_phi/psi``), :func:`ramachandran_histogram` (50 × 50 bins
  over :math:`[-\pi, \pi)^2`) and :func:`ramachandran_js`, scipy's
  Jensen-Shannon distance between two such histograms;
* :func:`compare_structures` - all of the above as one dict.

Everything is numpy (float64), no torch.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import LssError, NonFiniteError

__all__ = [
    "topology_bonds",
    "proper_torsions",
    "bonded_pairs",
    "bond_lengths",
    "bond_length_mae",
    "radius_of_gyration",
    "pair_distances",
    "pair_distance_w1",
    "backbone_torsions",
    "ramachandran_histogram",
    "ramachandran_js",
    "compare_structures",
    "coordinate_w1",
]


def _xyz(xyz: Any, what: str = "positions") -> np.ndarray:
    if hasattr(xyz, "xyz") and not isinstance(xyz, np.ndarray):  # an mdtraj.Trajectory
        xyz = xyz.xyz
    x = np.asarray(xyz, dtype=np.float64) if np.issubdtype(np.asarray(xyz).dtype, np.number) else None
    if x is None or x.ndim != 3 or x.shape[2] != 3 or x.shape[0] < 1:
        raise LssError(f"{what} must be a numeric (n_frames, n_atoms, 3) array in nm, got shape {np.shape(xyz)}")
    if not np.isfinite(x).all():
        raise NonFiniteError(f"{what} contain NaN or Inf")
    return x


def _same_atoms(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise LssError(f"the ensembles have {a.shape[1]} and {b.shape[1]} atoms; compare the same atoms")


def _pairs(pairs: Any, n_atoms: int, what: str = "pairs") -> np.ndarray:
    p = np.asarray(pairs)
    if p.size == 0:
        raise LssError(f"no {what} given")
    if p.ndim != 2 or p.shape[1] != 2 or not np.issubdtype(p.dtype, np.integer):
        raise LssError(f"{what} must be an (n, 2) integer array of atom indices, got shape {p.shape}")
    if p.min() < 0 or p.max() >= n_atoms:
        raise LssError(f"{what} must index atoms in [0, {n_atoms})")
    return p.astype(np.int64)


def topology_bonds(topology: Any, atom_indices: Any = None) -> np.ndarray:
    """``(n_bonds, 2)`` atom index pairs of a topology's bonds (sorted within and across pairs).

    Parameters
    ----------
    topology
        ``mdtraj.Topology`` or ``openmm.app.Topology``.
    atom_indices
        Keep the bonds between these atoms only, renumbered as positions in
        ``atom_indices`` (for frames that hold a subset of the atoms, e.g. a
        store's saved heavy atoms with the full system's topology).
    """
    from .features.topology import to_mdtraj_topology

    top = to_mdtraj_topology(topology)
    bonds = np.array(sorted(tuple(sorted((b[0].index, b[1].index))) for b in top.bonds), dtype=np.int64)
    bonds = bonds.reshape(-1, 2)
    if atom_indices is not None:
        keep = np.asarray(atom_indices, dtype=np.int64)
        position = np.full(top.n_atoms, -1, dtype=np.int64)
        position[keep] = np.arange(len(keep))
        bonds = position[bonds]
        bonds = np.sort(bonds[(bonds >= 0).all(axis=1)], axis=1)
        bonds = bonds[np.lexsort((bonds[:, 1], bonds[:, 0]))]
    if not len(bonds):
        raise LssError("the topology has no bonds between the selected atoms")
    return bonds


def proper_torsions(bonds: Any) -> np.ndarray:
    """``(n, 4)`` atom quadruplets ``i-j-k-l`` of every proper torsion of a bond graph.

    Each chain of three bonds ``i-j``, ``j-k``, ``k-l`` over four distinct
    atoms, once per central bond (``j < k``), sorted.  ``bonds`` is an
    ``(n_bonds, 2)`` index array, e.g. :func:`topology_bonds`.
    """
    edges = {tuple(sorted(map(int, e))) for e in np.asarray(bonds, dtype=np.int64).reshape(-1, 2) if e[0] != e[1]}
    neighbours: dict[int, set[int]] = {}
    for i, j in edges:
        neighbours.setdefault(i, set()).add(j)
        neighbours.setdefault(j, set()).add(i)
    quads = sorted((i, j, k, l) for j, k in edges
                   for i in neighbours[j] - {k} for l in neighbours[k] - {j} if i != l)
    return np.array(quads, dtype=np.int64).reshape(-1, 4)


def bonded_pairs(bonds: Any, max_bonds: int = 3) -> np.ndarray:
    """``(n, 2)`` atom pairs ``i < j`` joined by a path of at most ``max_bonds`` bonds (sorted).

    ``max_bonds=3``: the 1-2 (bonded), 1-3 (angle) and 1-4 (torsion)
    neighbours of a bond graph such as :func:`topology_bonds`; a pair is
    counted by its shortest path.
    """
    if isinstance(max_bonds, bool) or not isinstance(max_bonds, (int, np.integer)) or max_bonds < 1:
        raise LssError(f"max_bonds must be a positive integer, got {max_bonds!r}")
    edges = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    neighbours: dict[int, set[int]] = {}
    for i, j in edges.tolist():
        if i != j:
            neighbours.setdefault(i, set()).add(j)
            neighbours.setdefault(j, set()).add(i)
    pairs = set()
    for start in neighbours:
        seen, frontier = {start}, {start}
        for _ in range(int(max_bonds)):
            frontier = {n for a in frontier for n in neighbours[a]} - seen
            seen |= frontier
        pairs.update((start, other) for other in seen if other > start)
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def bond_lengths(xyz: Any, bonds: Any) -> np.ndarray:
    """``(n_frames, n_bonds)`` lengths (nm) of the atom pairs ``bonds``."""
    x = _xyz(xyz)
    b = _pairs(bonds, x.shape[1], "bonds")
    return np.linalg.norm(x[:, b[:, 0]] - x[:, b[:, 1]], axis=-1)


def bond_length_mae(xyz: Any, reference_xyz: Any, bonds: Any) -> float:
    r"""Mean absolute error (nm) of the per-bond mean lengths of ``xyz`` vs ``reference_xyz``.

    .. math:: \frac1{n_b}\sum_b \bigl|\langle r_b\rangle_\mathrm{xyz} - \langle r_b\rangle_\mathrm{ref}\bigr|
    """
    x, ref = _xyz(xyz), _xyz(reference_xyz, "reference positions")
    _same_atoms(x, ref)
    return float(np.mean(np.abs(bond_lengths(x, bonds).mean(axis=0) - bond_lengths(ref, bonds).mean(axis=0))))


def radius_of_gyration(xyz: Any, masses: Any = None) -> np.ndarray:
    r"""``(n_frames,)`` radius of gyration (nm), :math:`\sqrt{\sum_i w_i |x_i - \bar x_w|^2 / \sum_i w_i}`.

    Unweighted by default (:math:`w_i = 1`, as ``mdtraj.compute_rg``).
    """
    x = _xyz(xyz)
    w = np.ones(x.shape[1]) if masses is None else np.asarray(masses, dtype=np.float64)
    if w.shape != (x.shape[1],) or not (np.isfinite(w).all() and (w >= 0).all() and w.sum() > 0):
        raise LssError(f"masses must be {x.shape[1]} non-negative numbers with a positive sum")
    w = w / w.sum()
    centre = np.einsum("i,fij->fj", w, x)
    return np.sqrt(np.einsum("i,fi->f", w, np.sum((x - centre[:, None]) ** 2, axis=-1)))


def pair_distances(xyz: Any, pairs: Any = None) -> np.ndarray:
    """``(n_frames, n_pairs)`` distances (nm): of ``pairs``, or of all pairs ``i < j`` in ``np.triu_indices`` order."""
    x = _xyz(xyz)
    n = x.shape[1]
    p = np.stack(np.triu_indices(n, 1), axis=1) if pairs is None else _pairs(pairs, n)
    if not len(p):
        raise LssError("need at least 2 atoms for pair distances")
    return np.linalg.norm(x[:, p[:, 0]] - x[:, p[:, 1]], axis=-1)


def pair_distance_w1(xyz: Any, reference_xyz: Any, pairs: Any = None) -> float:
    """Mean over atom pairs of the 1-D Wasserstein distance (nm) between the ensembles' distance distributions.

    ``scipy.stats.wasserstein_distance`` per pair; the ensembles may differ in size.
    """
    from scipy.stats import wasserstein_distance

    x, ref = _xyz(xyz), _xyz(reference_xyz, "reference positions")
    _same_atoms(x, ref)
    a, b = pair_distances(x, pairs), pair_distances(ref, pairs)
    return float(np.mean([wasserstein_distance(a[:, k], b[:, k]) for k in range(a.shape[1])]))


def backbone_torsions(xyz: Any, topology: Any) -> tuple[np.ndarray, np.ndarray]:
    """φ and ψ (rad) of the residues that have both, ``(n_frames, n_residues)`` each, via mdtraj.

    ``topology`` (mdtraj or OpenMM) must describe exactly the atoms of
    ``xyz``, e.g. a store's ``topology`` for its saved atoms (alanine
    dipeptide's heavy atoms hold both of its torsions).
    """
    import mdtraj as md

    from .features.topology import to_mdtraj_topology

    x = _xyz(xyz)
    top = to_mdtraj_topology(topology)
    if top.n_atoms != x.shape[1]:
        raise LssError(f"the topology has {top.n_atoms} atoms, the positions {x.shape[1]}")
    traj = md.Trajectory(x, top)
    phi_idx, phi = md.compute_phi(traj, periodic=False)
    psi_idx, psi = md.compute_psi(traj, periodic=False)
    # a residue's phi is C(i-1) N CA C, its psi N CA C N(i+1): pair them by the CA's residue
    phi_res = {top.atom(int(q[2])).residue.index: k for k, q in enumerate(phi_idx)}
    psi_res = {top.atom(int(q[1])).residue.index: k for k, q in enumerate(psi_idx)}
    residues = sorted(set(phi_res) & set(psi_res))
    if not residues:
        raise LssError("the topology has no residue with both a phi and a psi torsion")
    return (np.asarray(phi[:, [phi_res[r] for r in residues]], dtype=np.float64),
            np.asarray(psi[:, [psi_res[r] for r in residues]], dtype=np.float64))


def ramachandran_histogram(phi: Any, psi: Any, bins: int = 50) -> np.ndarray:
    """``(bins, bins)`` probabilities of (φ, ψ) over :math:`[-\\pi, \\pi)^2` (residues pooled; sums to 1)."""
    phi, psi = np.asarray(phi, dtype=np.float64).ravel(), np.asarray(psi, dtype=np.float64).ravel()
    if phi.shape != psi.shape or not len(phi):
        raise LssError(f"phi and psi must hold equally many angles, got {phi.size} and {psi.size}")
    if not (np.isfinite(phi).all() and np.isfinite(psi).all()):
        raise NonFiniteError("the torsions contain NaN or Inf")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise LssError(f"bins must be a positive integer, got {bins!r}")
    edges = np.linspace(-np.pi, np.pi, int(bins) + 1)
    wrap = lambda a: (a + np.pi) % (2 * np.pi) - np.pi  # noqa: E731 - +pi lands in the first bin
    hist, _, _ = np.histogram2d(wrap(phi), wrap(psi), bins=[edges, edges])
    return hist / hist.sum()


def ramachandran_js(phi: Any, psi: Any, reference_phi: Any, reference_psi: Any, bins: int = 50,
                    base: float = 2.0) -> float:
    """Jensen-Shannon distance (``scipy.spatial.distance.jensenshannon``, log ``base``) of two Ramachandran histograms.

    With ``base=2`` the distance lies in [0, 1]: 0 for identical histograms,
    1 for disjoint ones.
    """
    from scipy.spatial.distance import jensenshannon

    p = ramachandran_histogram(phi, psi, bins)
    q = ramachandran_histogram(reference_phi, reference_psi, bins)
    return float(jensenshannon(p.ravel(), q.ravel(), base=base))


def coordinate_w1(xyz: Any, reference_xyz: Any) -> float:
    """Mean over the ``3 n_atoms`` Cartesian coordinates of the 1-D Wasserstein distance (nm) between the ensembles.

    For frames whose absolute positions matter (not aligned, e.g. a particle
    in an external potential); ``scipy.stats.wasserstein_distance`` per coordinate.
    """
    from scipy.stats import wasserstein_distance

    x, ref = _xyz(xyz), _xyz(reference_xyz, "reference positions")
    _same_atoms(x, ref)
    a, b = x.reshape(len(x), -1), ref.reshape(len(ref), -1)
    return float(np.mean([wasserstein_distance(a[:, k], b[:, k]) for k in range(a.shape[1])]))


def compare_structures(xyz: Any, reference_xyz: Any, topology: Any = None, *, bonds: Any = None,
                       bins: int = 50, absolute: bool = False) -> dict[str, float]:
    """Structure metrics of an ensemble ``xyz`` against ``reference_xyz`` (e.g. decoded vs MD).

    Returns a dict of floats: ``bond_mae_nm`` (when bonds are given or the
    topology has some), ``rg_mean_nm``, ``rg_std_nm``, ``reference_rg_mean_nm``,
    ``reference_rg_std_nm``, ``rg_mean_rel_err``, ``rg_std_rel_err``,
    ``pair_distance_w1_nm`` and, when the topology has φ/ψ torsions,
    ``ramachandran_js``.  ``topology`` describes the atoms of the frames.
    What a single atom does not define (Rg, pair distances) is left out.
    ``absolute``: also ``coordinate_w1_nm`` (:func:`coordinate_w1`), for
    frames whose absolute positions matter.
    """
    x, ref = _xyz(xyz), _xyz(reference_xyz, "reference positions")
    _same_atoms(x, ref)
    out: dict[str, float] = {}
    if bonds is None and topology is not None:
        try:
            bonds = topology_bonds(topology)
        except LssError:
            bonds = None
    if bonds is not None:
        out["bond_mae_nm"] = bond_length_mae(x, ref, bonds)
    if x.shape[1] >= 2:  # one atom has no size and no pair distance
        rg, rg_ref = radius_of_gyration(x), radius_of_gyration(ref)
        out.update(rg_mean_nm=float(rg.mean()), rg_std_nm=float(rg.std()),
                   reference_rg_mean_nm=float(rg_ref.mean()), reference_rg_std_nm=float(rg_ref.std()))
        out["rg_mean_rel_err"] = (abs(out["rg_mean_nm"] / out["reference_rg_mean_nm"] - 1.0)
                                  if out["reference_rg_mean_nm"] > 0 else float("nan"))
        out["rg_std_rel_err"] = (abs(out["rg_std_nm"] / out["reference_rg_std_nm"] - 1.0)
                                 if out["reference_rg_std_nm"] > 0 else float("nan"))
        out["pair_distance_w1_nm"] = pair_distance_w1(x, ref)
    if absolute:
        out["coordinate_w1_nm"] = coordinate_w1(x, ref)
    if topology is not None:
        try:
            phi, psi = backbone_torsions(x, topology)
            phi_ref, psi_ref = backbone_torsions(ref, topology)
        except LssError:
            pass
        else:
            out["ramachandran_js"] = ramachandran_js(phi, psi, phi_ref, psi_ref, bins)
    return out
