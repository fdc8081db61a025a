"""Featurizers written once in torch: batched, differentiable, TorchScript-able, with a numpy front.

Every featurizer is a :class:`torch.nn.Module` mapping positions of *all*
atoms ``(n_frames, n_atoms, 3)`` in nm (and an optional box ``(n_frames, 3,
3)``, rows a, b, c in nm) to ``(n_frames, n_features)`` in the input dtype.
Units are nm and radians.

* :class:`Torsions` -- dihedral angles (``"angle"``) or interleaved
  ``sin, cos`` pairs (``"sincos"``), mdtraj's sign convention.
* :class:`Distances` -- atom-pair distances, minimum image when periodic.
* :class:`Contacts` -- residue-residue minimum distances (mdtraj's
  ``compute_contacts`` schemes) transformed by ``"distance"``, ``"exp"``
  (``exp(-d/r0)``) or ``"switch"`` (``(1-(d/r0)^6)/(1-(d/r0)^12)``).
* :class:`AlignedPositions` -- Kabsch-superposed coordinates.
* :class:`Positions` -- raw coordinates.
* :class:`FeatureUnion` -- concatenation; ``.blocks`` are the observables.

:func:`featurizer_from_spec` inverts :meth:`Featurizer.spec` /
:func:`to_json`; :func:`build_featurizer` maps CLI names to featurizers.

Spec formats (every leaf also has ``"name"``, ``"periodic"``, ``"n_atoms"``;
``"labels"`` are per torsion / pair / contact / atom, column names derive
from them)::

    {"type": "torsions", "indices": [[i, j, k, l], ...], "form": "angle" | "sincos", "labels": [...]}
    {"type": "distances", "pairs": [[i, j], ...], "labels": [...]}
    {"type": "contacts", "groups": [[atoms], ...], "pairs": [[g1, g2], ...], "transform": "distance" | "exp"
     | "switch", "r0": nm, "n": 6, "m": 12, "scheme": "closest-heavy" | ... | null, "labels": [...]}
    {"type": "aligned_positions", "atom_indices": [...], "fit_indices": [...],
     "reference": [[x, y, z] of each fit atom], "labels": [...]}
    {"type": "positions", "atom_indices": [...], "labels": [...]}
    {"type": "union", "name": ..., "features": [leaf specs], "n_atoms": N}
"""
from .base import FeatureUnion, Featurizer, featurizer_from_spec, to_json
from .featurizers import AlignedPositions, Contacts, Distances, Positions, Torsions
from .topology import FEATURE_BUILDERS, build_featurizer, select_atoms

__all__ = [
    "Featurizer",
    "Torsions",
    "Distances",
    "Contacts",
    "AlignedPositions",
    "Positions",
    "FeatureUnion",
    "featurizer_from_spec",
    "to_json",
    "select_atoms",
    "build_featurizer",
    "FEATURE_BUILDERS",
]
