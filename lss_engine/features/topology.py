"""Atom selection and CLI feature names -> featurizers, from an OpenMM or mdtraj topology."""
from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import SpecError
from .base import FeatureUnion, Featurizer, _as_nm_array
from .featurizers import AlignedPositions, Contacts, Distances, Positions, Torsions

# residue names of monatomic ions, compared upper-case
_ION_NAMES = {
    "NA", "CL", "K", "MG", "CA", "ZN", "LI", "RB", "CS", "F", "BR", "I", "NA+", "CL-", "K+",
    "MG2", "ZN2", "CA2", "SOD", "CLA", "POT", "CAL", "CES", "LIT", "RUB",
}  # fmt: skip


def to_mdtraj_topology(topology: Any):
    """An ``mdtraj.Topology`` for an ``openmm.app.Topology`` or ``mdtraj.Topology``."""
    import mdtraj as md

    if isinstance(topology, md.Topology):
        return topology
    try:
        from openmm import app
    except ImportError:  # pragma: no cover
        app = None
    if app is not None and isinstance(topology, app.Topology):
        return md.Topology.from_openmm(topology)
    raise SpecError(f"expected an openmm.app.Topology or mdtraj.Topology, got {type(topology).__name__}")


class Labels:
    """Readable labels for a topology's residues (``"ALA2"``) and atoms (``"ALA2:CA"``).

    With several chains, residue labels get a chain prefix: the chain IDs
    when they are non-blank and unique (``"A:ALA2"``), else chain indices
    (``"0:ALA2"``).
    """

    def __init__(self, topology: Any) -> None:
        chains = list(topology.chains)
        self._prefix: dict[int, str] = {}
        if len(chains) > 1:
            ids = [str(getattr(c, "chain_id", "") or "").strip() for c in chains]
            use_ids = all(ids) and len(set(ids)) == len(ids)
            self._prefix = {c.index: (ids[k] if use_ids else str(c.index)) + ":" for k, c in enumerate(chains)}

    def residue(self, residue: Any) -> str:
        return f"{self._prefix.get(residue.chain.index, '')}{residue.name}{residue.resSeq}"

    def atom(self, atom: Any) -> str:
        return f"{self.residue(atom.residue)}:{atom.name}"


def _is_heavy(atom: Any) -> bool:
    el = atom.element
    symbol = getattr(el, "symbol", None)
    return el is not None and symbol not in (None, "H", "D", "VS") and getattr(el, "mass", 1.0) > 0


def _is_solute(atom: Any) -> bool:
    res = atom.residue
    if res.is_water:
        return False
    return not (res.n_atoms == 1 and res.name.upper() in _ION_NAMES)


def select_atoms(topology: Any, selection: Any) -> np.ndarray:
    """Indices (int64, ascending for keyword/DSL selections) of the selected atoms.

    Parameters
    ----------
    topology : openmm.app.Topology or mdtraj.Topology
    selection : None, str or sequence of int
        ``None`` / ``"all"``: every atom; ``"none"``: no atom; ``"heavy"``:
        atoms with an element other than H (no virtual sites / element-less
        particles); ``"ca"``: carbon atoms named CA; ``"backbone"``: N, CA, C,
        O of protein residues (mdtraj's ``is_backbone``); a sequence of ints
        (kept in the given order, checked for range and duplicates); any other
        string is an mdtraj DSL selection (``"resname ALA and name CB"``).
    """
    top = to_mdtraj_topology(topology)
    atoms = list(top.atoms)
    if selection is None:
        return np.arange(top.n_atoms, dtype=np.int64)
    if isinstance(selection, str):
        key = selection.strip().lower()
        if key == "all":
            return np.arange(top.n_atoms, dtype=np.int64)
        if key == "none":
            return np.zeros(0, dtype=np.int64)
        if key == "heavy":
            return np.array([a.index for a in atoms if _is_heavy(a)], dtype=np.int64)
        if key == "ca":
            return np.array(
                [a.index for a in atoms if a.name == "CA" and getattr(a.element, "symbol", None) == "C"],
                dtype=np.int64,
            )
        if key == "backbone":
            return np.array([a.index for a in atoms if a.is_backbone], dtype=np.int64)
        try:
            return np.asarray(top.select(selection), dtype=np.int64)
        except Exception as e:  # mdtraj raises ValueError and others for bad DSL
            raise SpecError(f"bad atom selection {selection!r}: {' '.join(str(e).split())}") from None
    try:
        arr = np.asarray(list(selection))
    except TypeError:
        raise SpecError(f"atom selection must be None, a string or a sequence of ints, got {selection!r}") from None
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise SpecError("an atom selection sequence must be a flat list of ints")
    if arr.min() < 0 or arr.max() >= top.n_atoms:
        raise SpecError(f"atom indices must lie in [0, {top.n_atoms}), got values in [{arr.min()}, {arr.max()}]")
    if len(np.unique(arr)) != len(arr):
        raise SpecError("atom selection contains duplicate indices")
    return arr.astype(np.int64)


# ---------------------------------------------------------------------------
# build_featurizer
# ---------------------------------------------------------------------------
def _torsion_blocks(top: Any, kinds: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Quartets and labels for mdtraj's phi/psi/chi_k, blocked by kind, residue order within."""
    import mdtraj as md

    traj = md.Trajectory(np.zeros((1, top.n_atoms, 3), dtype=np.float32), top)
    quartets, labels, names = [], [], Labels(top)
    for kind in kinds:
        idx, _ = getattr(md, f"compute_{kind}")(traj, periodic=False)
        for q in np.asarray(idx, dtype=np.int64).reshape(-1, 4):
            quartets.append(q)
            labels.append(f"{kind} {names.residue(top.atom(int(q[1])).residue)}")
    return np.asarray(quartets, dtype=np.int64).reshape(-1, 4), labels


def _all_pairs(top: Any, atoms: np.ndarray) -> tuple[np.ndarray, list[str]]:
    pairs = np.asarray(list(itertools.combinations(atoms.tolist(), 2)), dtype=np.int64).reshape(-1, 2)
    names = Labels(top)
    labels = [f"{names.atom(top.atom(int(i)))}-{names.atom(top.atom(int(j)))}" for i, j in pairs]
    return pairs, labels


def _solute(top: Any, atoms: np.ndarray) -> np.ndarray:
    return np.array([i for i in atoms if _is_solute(top.atom(int(i)))], dtype=np.int64)


def _build_torsions(kinds: Sequence[str], form: str, what: str) -> Callable[..., Featurizer]:
    def build(top, name, reference, periodic):
        q, labels = _torsion_blocks(top, kinds)
        if len(q) == 0:
            raise SpecError(f"feature {name!r} yields no features for this topology (no {what} torsions)")
        return Torsions(q, n_atoms=top.n_atoms, form=form, labels=labels, periodic=periodic, name=_snake(name))

    return build


def _build_distances(selection: str, what: str) -> Callable[..., Featurizer]:
    def build(top, name, reference, periodic):
        atoms = _solute(top, select_atoms(top, selection))
        if len(atoms) < 2:
            raise SpecError(
                f"feature {name!r} yields no features for this topology ({len(atoms)} {what} atoms; need 2)"
            )
        pairs, labels = _all_pairs(top, atoms)
        return Distances(pairs, n_atoms=top.n_atoms, labels=labels, periodic=periodic, name=_snake(name))

    return build


def _build_contacts(top, name, reference, periodic):
    f = Contacts.from_topology(
        top, "all", "closest-heavy", transform="exp", periodic=periodic, name=_snake(name)
    )
    if f.n_features == 0:
        raise SpecError(
            f"feature {name!r} yields no features for this topology "
            "(no residue pairs with CA atoms at sequence separation >= 3)"
        )
    return f


def _build_aligned(top, name, reference, periodic):
    if reference is None:
        raise SpecError(f"feature {name!r} needs reference positions")
    ref = np.asarray(_as_nm_array(reference), dtype=np.float64)
    if ref.shape != (top.n_atoms, 3):
        raise SpecError(f"reference positions must have shape ({top.n_atoms}, 3), got {ref.shape}")
    atoms = _solute(top, select_atoms(top, "heavy"))
    if len(atoms) < 3:
        raise SpecError(
            f"feature {name!r} yields no features for this topology ({len(atoms)} solute heavy atoms; need 3)"
        )
    labels = [Labels(top).atom(top.atom(int(i))) for i in atoms]
    return AlignedPositions(atoms, ref, n_atoms=top.n_atoms, labels=labels, name=_snake(name))


def _build_positions(top, name, reference, periodic):
    names = Labels(top)
    labels = [names.atom(a) for a in top.atoms]
    return Positions(None, n_atoms=top.n_atoms, labels=labels, name=_snake(name))


_CHI = ("chi1", "chi2", "chi3", "chi4", "chi5")
FEATURE_BUILDERS: dict[str, Callable[..., Featurizer]] = {
    "backbone-torsions": _build_torsions(("phi", "psi"), "angle", "phi/psi"),
    "backbone-torsions-sincos": _build_torsions(("phi", "psi"), "sincos", "phi/psi"),
    "chi-torsions": _build_torsions(_CHI, "angle", "side-chain chi"),
    "chi-torsions-sincos": _build_torsions(_CHI, "sincos", "side-chain chi"),
    "ca-distances": _build_distances("ca", "CA"),
    "heavy-atom-distances": _build_distances("heavy", "solute heavy"),
    "contacts": _build_contacts,
    "aligned-positions": _build_aligned,
    "positions": _build_positions,
}
"""CLI feature names -> builders ``(mdtraj_topology, name, reference, periodic) -> Featurizer``."""


def _snake(name: str) -> str:
    return name.replace("-", "_")


def build_featurizer(
    features: str | Sequence[str],
    topology: Any,
    reference_positions: np.ndarray | None = None,
    *,
    periodic: bool | None = None,
) -> FeatureUnion:
    """Featurizer for CLI feature names, as a :class:`FeatureUnion` (one block per name).

    Parameters
    ----------
    features : str or sequence of str
        Comma-separated names or a list of them:

        ``backbone-torsions``
            phi then psi of every residue (mdtraj ``compute_phi/psi``), rad.
        ``backbone-torsions-sincos``
            the same as interleaved ``sin, cos`` pairs.
        ``chi-torsions`` / ``chi-torsions-sincos``
            chi1 ... chi5 (mdtraj ``compute_chi1..5``), blocked by chi order.
        ``ca-distances``
            all pairs of solute CA atoms, nm.
        ``heavy-atom-distances``
            all pairs of solute heavy atoms, nm.
        ``contacts``
            residue contacts as ``mdtraj.compute_contacts(traj, "all",
            "closest-heavy")`` transformed by ``exp(-d / 0.5 nm)``.
        ``aligned-positions``
            solute heavy atoms Kabsch-aligned onto ``reference_positions``.
        ``positions``
            raw positions of all atoms (toy systems), nm.

        Block names are the CLI names with ``-`` replaced by ``_``.
        "Solute" excludes water and monatomic ions.
    topology : openmm.app.Topology or mdtraj.Topology
    reference_positions : array (n_atoms, 3) in nm, optional
        Required by ``aligned-positions``.
    periodic : bool, optional
        Minimum-image distances and torsions; default: whether an OpenMM
        topology has periodic box vectors.

    Raises
    ------
    SpecError
        Unknown or duplicate name, or a name that yields no features for
        this topology.
    """
    if isinstance(features, str):
        names = [s.strip() for s in features.split(",")]
    else:
        names = [str(s).strip() for s in features]
    names = [s for s in names if s]
    if not names:
        raise SpecError(f"no features requested; valid names: {', '.join(FEATURE_BUILDERS)}")
    for s in names:
        if s not in FEATURE_BUILDERS:
            raise SpecError(f"unknown feature {s!r}; valid names: {', '.join(FEATURE_BUILDERS)}")
    if len(set(names)) != len(names):
        raise SpecError(f"duplicate feature names in {names}")
    if periodic is None:
        periodic = bool(getattr(topology, "getPeriodicBoxVectors", lambda: None)() is not None)
    top = to_mdtraj_topology(topology)
    return FeatureUnion([FEATURE_BUILDERS[s](top, s, reference_positions, bool(periodic)) for s in names])
