"""Concrete featurizers: torsions, distances, residue contacts, aligned and raw positions."""
# No ``from __future__ import annotations`` here: TorchScript reads the class
# annotations of these modules.
import itertools
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import SpecError
from . import geometry
from .base import Featurizer, index_array, label_list, register, spec_get

_XYZ = ("x", "y", "z")


@register
class Torsions(Featurizer):
    """Dihedral angles of atom quartets (mdtraj's ``compute_dihedrals`` convention).

    For atoms ``x0..x3`` with bond vectors ``b1 = x1 - x0``, ``b2 = x2 - x1``,
    ``b3 = x3 - x2``::

        phi = atan2(|b2| b1 . (b2 x b3),  (b1 x b2) . (b2 x b3))   in (-pi, pi]

    With ``periodic=True`` and a box, the bond vectors are minimum-imaged.

    Parameters
    ----------
    indices : array of int, shape (n_torsions, 4)
        Atom indices into the full system.
    n_atoms : int
        Total number of atoms in the system.
    form : {"angle", "sincos"}
        ``"angle"``: one column per torsion, unit ``"rad"``.  ``"sincos"``:
        two columns per torsion, **interleaved** ``sin(t0), cos(t0), sin(t1),
        cos(t1), ...``, unit ``"1"``; column names ``"sin(<label>)"``,
        ``"cos(<label>)"``.
    labels : list of str, optional
        One label per torsion (e.g. ``"phi ALA2"``); the column names.
    periodic : bool
        Minimum-image the bond vectors when a box is given.
    name : str
        Observable name.
    """

    SPEC_TYPE = "torsions"

    def __init__(
        self,
        indices: Any,
        *,
        n_atoms: int,
        form: str = "angle",
        labels: Optional[Sequence[str]] = None,
        periodic: bool = False,
        name: str = "torsions",
    ) -> None:
        super().__init__(name, n_atoms, periodic)
        idx = index_array(indices, self.n_atoms, "torsion indices", ncols=4)
        if form not in ("angle", "sincos"):
            raise SpecError(f"torsion form must be 'angle' or 'sincos', got {form!r}")
        self.form = form
        self.sincos = form == "sincos"
        self.labels = label_list(labels, len(idx), lambda k: "torsion " + "-".join(map(str, idx[k])), "torsion")
        self.register_buffer("indices", torch.as_tensor(idx, dtype=torch.long))
        if self.sincos:
            self._set_columns([f"{f}({s})" for s in self.labels for f in ("sin", "cos")], ["1"] * (2 * len(idx)))
        else:
            self._set_columns(self.labels, ["rad"] * len(idx))

    def _features(self, positions: Tensor, box: Optional[Tensor]) -> Tensor:
        angles = geometry.dihedrals(positions, self.indices, box)
        if self.sincos:
            return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(angles.shape[0], -1)
        return angles

    def _spec_items(self) -> Dict[str, Any]:
        return {"indices": self.indices.tolist(), "labels": list(self.labels), "form": self.form}

    @classmethod
    def _from_spec(cls, spec: Dict[str, Any]) -> "Torsions":
        return cls(
            spec_get(spec, "indices", list),
            n_atoms=spec_get(spec, "n_atoms", int),
            form=spec_get(spec, "form", str, "angle"),
            labels=spec_get(spec, "labels", list, None),
            periodic=spec_get(spec, "periodic", bool, False),
            name=spec_get(spec, "name", str),
        )


@register
class Distances(Featurizer):
    """Distances ``|x_j - x_i|`` between atom pairs, in nm.

    With ``periodic=True`` and a box, the displacement is minimum-imaged
    (OpenMM's reduced-box convention, see :func:`geometry.minimum_image`);
    without a box plain distances are returned.

    Parameters
    ----------
    pairs : array of int, shape (n_pairs, 2)
    n_atoms : int
    labels : list of str, optional
        One label per pair (e.g. ``"ALA2:CA-ALA4:CA"``); column names are
        ``"d <label>"``.
    periodic : bool
    name : str
    """

    SPEC_TYPE = "distances"

    def __init__(
        self,
        pairs: Any,
        *,
        n_atoms: int,
        labels: Optional[Sequence[str]] = None,
        periodic: bool = False,
        name: str = "distances",
    ) -> None:
        super().__init__(name, n_atoms, periodic)
        idx = index_array(pairs, self.n_atoms, "distance pairs", ncols=2)
        self.labels = label_list(labels, len(idx), lambda k: f"{idx[k, 0]}-{idx[k, 1]}", "distance")
        self.register_buffer("pairs", torch.as_tensor(idx, dtype=torch.long))
        self._set_columns([f"d {s}" for s in self.labels], ["nm"] * len(idx))

    def _features(self, positions: Tensor, box: Optional[Tensor]) -> Tensor:
        return geometry.distances(positions, self.pairs[:, 0], self.pairs[:, 1], box)

    def _spec_items(self) -> Dict[str, Any]:
        return {"pairs": self.pairs.tolist(), "labels": list(self.labels)}

    @classmethod
    def _from_spec(cls, spec: Dict[str, Any]) -> "Distances":
        return cls(
            spec_get(spec, "pairs", list),
            n_atoms=spec_get(spec, "n_atoms", int),
            labels=spec_get(spec, "labels", list, None),
            periodic=spec_get(spec, "periodic", bool, False),
            name=spec_get(spec, "name", str),
        )


_CONTACT_SCHEMES = ("ca", "closest", "closest-heavy", "sidechain", "sidechain-heavy")
_TRANSFORMS = ("distance", "exp", "switch")


@register
class Contacts(Featurizer):
    """Group–group (residue–residue) minimum distances, optionally transformed.

    For contact ``k`` between atom groups ``A`` and ``B``::

        d_k = min_{i in A, j in B} |x_j - x_i|          (nm)

    computed as a segment minimum (``scatter_reduce(..., "amin")``) over all
    atom pairs, then transformed:

    * ``"distance"``: ``d_k`` (unit ``"nm"``, column ``"dmin <label>"``);
    * ``"exp"``: ``exp(-d_k / r0)`` (unit ``"1"``, column ``"exp(-dmin/<r0>) <label>"``);
    * ``"switch"``: ``(1 - (d_k/r0)^n) / (1 - (d_k/r0)^m)`` (unit ``"1"``,
      column ``"s(dmin/<r0>) <label>"``), evaluated without the 0/0 at
      ``d_k = r0`` (value ``n/m`` there; ``1 / (1 + (d/r0)^6)`` for the
      default ``n=6, m=12``).

    Build residue contacts like ``mdtraj.compute_contacts`` with
    :meth:`from_topology`.

    Parameters
    ----------
    groups : list of list of int
        Atom groups (e.g. the scheme's atoms of each residue).
    pairs : array of int, shape (n_contacts, 2)
        Indices into ``groups``.
    n_atoms : int
    transform : {"distance", "exp", "switch"}
    r0 : float
        Length scale in nm (default 0.5 nm).
    n, m : int
        Exponents of the switching function (default 6, 12).
    labels : list of str, optional
        One label per contact (e.g. ``"ALA2-GLY5"``).
    periodic : bool
    scheme : str, optional
        Informational: the scheme the groups were built with.
    name : str
    """

    SPEC_TYPE = "contacts"

    def __init__(
        self,
        groups: Sequence[Sequence[int]],
        pairs: Any,
        *,
        n_atoms: int,
        transform: str = "distance",
        r0: float = 0.5,
        n: int = 6,
        m: int = 12,
        labels: Optional[Sequence[str]] = None,
        periodic: bool = False,
        scheme: Optional[str] = None,
        name: str = "contacts",
    ) -> None:
        super().__init__(name, n_atoms, periodic)
        if isinstance(groups, (str, bytes)) or not hasattr(groups, "__iter__"):
            raise SpecError("contact groups must be a list of atom index lists")
        group_arrays = [index_array(g, self.n_atoms, f"contact group {k}") for k, g in enumerate(groups)]
        for k, g in enumerate(group_arrays):
            if len(g) == 0:
                raise SpecError(f"contact group {k} is empty")
        gp = index_array(pairs, len(group_arrays), "contact pairs", ncols=2) if group_arrays else None
        if gp is None:
            gp = np.zeros((0, 2), dtype=np.int64)
            if len(np.asarray(pairs).reshape(-1)):
                raise SpecError("contact pairs refer to groups, but there are none")
        if transform not in _TRANSFORMS:
            raise SpecError(f"contact transform must be one of {', '.join(_TRANSFORMS)}, got {transform!r}")
        if isinstance(r0, bool) or not isinstance(r0, (int, float)) or not np.isfinite(r0) or r0 <= 0:
            raise SpecError(f"contact r0 must be a positive number of nm, got {r0!r}")
        for what, v in (("n", n), ("m", m)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise SpecError(f"switching exponent {what} must be a positive int, got {v!r}")
        if scheme is not None and scheme not in _CONTACT_SCHEMES:
            raise SpecError(f"contact scheme must be one of {', '.join(_CONTACT_SCHEMES)}, got {scheme!r}")

        self.groups = [g.tolist() for g in group_arrays]
        self.transform = transform
        self.r0 = float(r0)
        self.n = int(n)
        self.m = int(m)
        self.scheme = scheme
        self.labels = label_list(labels, len(gp), lambda k: f"{gp[k, 0]}-{gp[k, 1]}", "contact")
        self.group_pairs = gp.tolist()
        ai: List[int] = []
        aj: List[int] = []
        seg: List[int] = []
        for k, (g1, g2) in enumerate(gp):
            for i, j in itertools.product(self.groups[g1], self.groups[g2]):
                ai.append(i)
                aj.append(j)
                seg.append(k)
        self.n_contacts = len(gp)
        self.register_buffer("atom_i", torch.as_tensor(ai, dtype=torch.long).reshape(-1))
        self.register_buffer("atom_j", torch.as_tensor(aj, dtype=torch.long).reshape(-1))
        self.register_buffer("segment", torch.as_tensor(seg, dtype=torch.long).reshape(-1))
        if transform == "distance":
            names, unit = [f"dmin {s}" for s in self.labels], "nm"
        elif transform == "exp":
            names, unit = [f"exp(-dmin/{self.r0:g}) {s}" for s in self.labels], "1"
        else:
            names, unit = [f"s(dmin/{self.r0:g}) {s}" for s in self.labels], "1"
        self._set_columns(names, [unit] * len(names))

    def _features(self, positions: Tensor, box: Optional[Tensor]) -> Tensor:
        d = geometry.distances(positions, self.atom_i, self.atom_j, box)
        n_frames = positions.shape[0]
        init = torch.full((n_frames, self.n_contacts), float("inf"), dtype=d.dtype, device=d.device)
        index = self.segment.unsqueeze(0).expand(n_frames, self.segment.shape[0])
        dmin = init.scatter_reduce(1, index, d, reduce="amin", include_self=False)
        if self.transform == "exp":
            return torch.exp(-dmin / self.r0)
        if self.transform == "switch":
            return geometry.switching(dmin / self.r0, self.n, self.m)
        return dmin

    def _spec_items(self) -> Dict[str, Any]:
        return {
            "groups": [list(g) for g in self.groups],
            "pairs": [list(p) for p in self.group_pairs],
            "labels": list(self.labels),
            "transform": self.transform,
            "r0": self.r0,
            "n": self.n,
            "m": self.m,
            "scheme": self.scheme,
        }

    @classmethod
    def _from_spec(cls, spec: Dict[str, Any]) -> "Contacts":
        return cls(
            spec_get(spec, "groups", list),
            spec_get(spec, "pairs", list),
            n_atoms=spec_get(spec, "n_atoms", int),
            transform=spec_get(spec, "transform", str, "distance"),
            r0=spec_get(spec, "r0", float, 0.5),
            n=spec_get(spec, "n", int, 6),
            m=spec_get(spec, "m", int, 12),
            labels=spec_get(spec, "labels", list, None),
            periodic=spec_get(spec, "periodic", bool, False),
            scheme=spec_get(spec, "scheme", str, None),
            name=spec_get(spec, "name", str),
        )

    @classmethod
    def from_topology(
        cls,
        topology: Any,
        residue_pairs: Any = "all",
        scheme: str = "closest-heavy",
        *,
        transform: str = "distance",
        r0: float = 0.5,
        n: int = 6,
        m: int = 12,
        periodic: bool = False,
        name: str = "contacts",
    ) -> "Contacts":
        """Residue–residue contacts, as ``mdtraj.compute_contacts(traj, residue_pairs, scheme)``.

        ``residue_pairs="all"`` takes every pair ``(i, j)``, ``j >= i + 3``, of
        residues in the same chain that have an atom named CA (mdtraj's
        ``ignore_nonprotein=True``).  Schemes: ``"ca"`` (CA atoms; pairs with
        a residue lacking CA are dropped, like mdtraj), ``"closest"`` (all
        atoms), ``"closest-heavy"`` (no hydrogens), ``"sidechain"``,
        ``"sidechain-heavy"`` (glycine keeps its sidechain hydrogens, like
        mdtraj).  Labels are ``"<res1>-<res2>"``, e.g. ``"ALA2-GLY5"``.
        """
        from .topology import Labels, to_mdtraj_topology

        top = to_mdtraj_topology(topology)
        if scheme not in _CONTACT_SCHEMES:
            raise SpecError(f"contact scheme must be one of {', '.join(_CONTACT_SCHEMES)}, got {scheme!r}")
        residues = list(top.residues)
        names = Labels(top)

        def has_ca(r: Any) -> bool:
            return any(a.name.lower() == "ca" for a in r.atoms)

        if isinstance(residue_pairs, str):
            if residue_pairs != "all":
                raise SpecError(f"residue_pairs must be 'all' or (n, 2) residue indices, got {residue_pairs!r}")
            rp = [
                (i, j)
                for i in range(len(residues))
                if has_ca(residues[i])
                for j in range(i + 3, len(residues))
                if has_ca(residues[j]) and residues[i].chain == residues[j].chain
            ]
        else:
            rp = [tuple(p) for p in index_array(residue_pairs, len(residues), "residue pairs", ncols=2).tolist()]

        def members(r: Any) -> List[int]:
            heavy = scheme.endswith("-heavy")
            if scheme == "ca":
                return [a.index for a in r.atoms if a.name.lower() == "ca"]
            if scheme.startswith("sidechain"):
                atoms = [a for a in r.atoms if a.is_sidechain]
                heavy = heavy and r.name != "GLY"
            else:
                atoms = list(r.atoms)
            return [a.index for a in atoms if not (heavy and _is_hydrogen(a))]

        group_of: Dict[int, int] = {}
        groups: List[List[int]] = []
        pairs: List[List[int]] = []
        labels: List[str] = []
        for r1, r2 in rp:
            m1, m2 = members(residues[r1]), members(residues[r2])
            if scheme == "ca" and (len(m1) > 1 or len(m2) > 1):
                raise SpecError(f"more than one CA atom in residue {r1} or {r2}")
            if not m1 or not m2:
                if scheme == "ca":
                    continue  # mdtraj drops pairs without an alpha carbon
                raise SpecError(f"residue {r1} or {r2} has no atoms for contact scheme {scheme!r}")
            for r, mem in ((r1, m1), (r2, m2)):
                if r not in group_of:
                    group_of[r] = len(groups)
                    groups.append(mem)
            pairs.append([group_of[r1], group_of[r2]])
            labels.append(f"{names.residue(residues[r1])}-{names.residue(residues[r2])}")
        return cls(
            groups,
            np.asarray(pairs, dtype=np.int64).reshape(-1, 2),
            n_atoms=top.n_atoms,
            transform=transform,
            r0=r0,
            n=n,
            m=m,
            labels=labels,
            periodic=periodic,
            scheme=scheme,
            name=name,
        )


def _is_hydrogen(atom: Any) -> bool:
    el = atom.element
    return el is not None and getattr(el, "symbol", None) in ("H", "D")


@register
class AlignedPositions(Featurizer):
    """Coordinates of selected atoms after Kabsch superposition onto a reference.

    Each frame is centred on the mean of its fit atoms, rotated by the optimal
    proper rotation (see :func:`geometry.kabsch_rotation`; batched SVD with
    reflection correction) onto the centred reference fit atoms, and moved to
    the reference's fit-atom centre::

        y_i = (x_i - mean_fit(x)) R + mean_fit(ref)

    This reproduces ``mdtraj.Trajectory.superpose(ref, atom_indices=fit)``
    (unweighted).  Output columns are ``x, y, z`` per output atom
    (``"x <label>"``, ``"y <label>"``, ``"z <label>"``), unit ``"nm"``.

    Parameters
    ----------
    atom_indices : array of int
        Atoms whose aligned coordinates are returned.
    reference : array, shape (n_atoms, 3)
        Reference positions of all atoms in nm (only the fit atoms are kept).
    fit_indices : array of int, optional
        Atoms used for the fit (at least 3); default ``atom_indices``.
    n_atoms : int, optional
        Total atom count; default ``len(reference)``.
    labels : list of str, optional
        One label per output atom.
    name : str
    """

    SPEC_TYPE = "aligned_positions"

    def __init__(
        self,
        atom_indices: Any,
        reference: Any,
        *,
        fit_indices: Any = None,
        n_atoms: Optional[int] = None,
        labels: Optional[Sequence[str]] = None,
        name: str = "aligned_positions",
    ) -> None:
        from .base import _as_nm_array

        ref = np.asarray(_as_nm_array(reference), dtype=np.float64)
        if ref.ndim != 2 or ref.shape[1] != 3:
            raise SpecError(f"reference positions must have shape (n_atoms, 3), got {ref.shape}")
        if not np.all(np.isfinite(ref)):
            raise SpecError("reference positions contain NaN or Inf")
        if n_atoms is None:
            n_atoms = ref.shape[0]
        super().__init__(name, n_atoms, False)
        if ref.shape[0] != self.n_atoms:
            raise SpecError(f"reference has {ref.shape[0]} atoms, expected n_atoms={self.n_atoms}")
        out = index_array(atom_indices, self.n_atoms, "aligned atom indices")
        fit = out if fit_indices is None else index_array(fit_indices, self.n_atoms, "fit indices")
        if len(fit) < 3:
            raise SpecError(f"aligned positions need at least 3 fit atoms, got {len(fit)}")
        ref_fit = ref[fit]
        center = ref_fit.mean(axis=0)
        self.labels = label_list(labels, len(out), lambda k: f"atom{out[k]}", "aligned atom")
        self.register_buffer("atom_indices", torch.as_tensor(out, dtype=torch.long))
        self.register_buffer("fit_indices", torch.as_tensor(fit, dtype=torch.long))
        self.register_buffer("ref_fit", torch.as_tensor(ref_fit, dtype=torch.float64))
        self.register_buffer("ref_fit_centered", torch.as_tensor(ref_fit - center, dtype=torch.float64))
        self.register_buffer("ref_center", torch.as_tensor(center, dtype=torch.float64))
        self._set_columns([f"{c} {s}" for s in self.labels for c in _XYZ], ["nm"] * (3 * len(out)))

    def _features(self, positions: Tensor, box: Optional[Tensor]) -> Tensor:
        fit = positions.index_select(1, self.fit_indices)
        center = fit.mean(dim=1, keepdim=True)
        target = self.ref_fit_centered.to(positions.dtype)
        rot = geometry.kabsch_rotation(fit - center, target)
        sel = positions.index_select(1, self.atom_indices) - center
        out = torch.matmul(sel, rot) + self.ref_center.to(positions.dtype)
        return out.reshape(positions.shape[0], -1)

    def _spec_items(self) -> Dict[str, Any]:
        return {
            "atom_indices": self.atom_indices.tolist(),
            "fit_indices": self.fit_indices.tolist(),
            "reference": self.ref_fit.tolist(),
            "labels": list(self.labels),
        }

    @classmethod
    def _from_spec(cls, spec: Dict[str, Any]) -> "AlignedPositions":
        n_atoms = spec_get(spec, "n_atoms", int)
        fit = index_array(spec_get(spec, "fit_indices", list), n_atoms, "fit indices")
        ref_fit = np.asarray(spec_get(spec, "reference", list), dtype=np.float64)
        if ref_fit.shape != (len(fit), 3):
            raise SpecError(f"aligned_positions reference must have shape ({len(fit)}, 3), got {ref_fit.shape}")
        full = np.zeros((n_atoms, 3), dtype=np.float64)
        full[fit] = ref_fit
        if spec.get("periodic"):
            raise SpecError("aligned_positions cannot be periodic")
        return cls(
            spec_get(spec, "atom_indices", list),
            full,
            fit_indices=fit,
            n_atoms=n_atoms,
            labels=spec_get(spec, "labels", list, None),
            name=spec_get(spec, "name", str),
        )


@register
class Positions(Featurizer):
    """Raw positions of selected atoms (toy systems), flattened ``x, y, z`` per atom, in nm.

    Parameters
    ----------
    atom_indices : array of int, optional
        Default: all atoms.
    n_atoms : int
    labels : list of str, optional
        One label per atom; columns ``"x <label>"``, ``"y <label>"``, ``"z <label>"``.
    name : str
    """

    SPEC_TYPE = "positions"

    def __init__(
        self,
        atom_indices: Any = None,
        *,
        n_atoms: int,
        labels: Optional[Sequence[str]] = None,
        name: str = "positions",
    ) -> None:
        super().__init__(name, n_atoms, False)
        if atom_indices is None:
            idx = np.arange(self.n_atoms, dtype=np.int64)
        else:
            idx = index_array(atom_indices, self.n_atoms, "atom indices")
        self.labels = label_list(labels, len(idx), lambda k: f"atom{idx[k]}", "position")
        self.register_buffer("atom_indices", torch.as_tensor(idx, dtype=torch.long))
        self._set_columns([f"{c} {s}" for s in self.labels for c in _XYZ], ["nm"] * (3 * len(idx)))

    def _features(self, positions: Tensor, box: Optional[Tensor]) -> Tensor:
        return positions.index_select(1, self.atom_indices).reshape(positions.shape[0], -1)

    def _spec_items(self) -> Dict[str, Any]:
        return {"atom_indices": self.atom_indices.tolist(), "labels": list(self.labels)}

    @classmethod
    def _from_spec(cls, spec: Dict[str, Any]) -> "Positions":
        if spec.get("periodic"):
            raise SpecError("positions cannot be periodic")
        return cls(
            spec_get(spec, "atom_indices", list),
            n_atoms=spec_get(spec, "n_atoms", int),
            labels=spec_get(spec, "labels", list, None),
            name=spec_get(spec, "name", str),
        )
