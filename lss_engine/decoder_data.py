r"""Training data of a decoder: latent coordinates paired with aligned structures.

A decoder (:class:`lss_engine.models.CWGANDecoder`) learns
:math:`p(x \mid \psi)`, the Cartesian coordinates :math:`x` of a set of atoms
given the latent coordinates :math:`\psi(x)` of the same frame.  Rigid
translations and rotations carry no information about :math:`\psi`, so the
structures are first superposed onto one reference (LSS paper: "roto-
translationally aligning MD training configurations to a reference
structure").

* :func:`align_to_reference` - Kabsch superposition of every frame onto a
  reference, with :class:`lss_engine.features.AlignedPositions` (the
  featurizer's batched SVD, reflection-corrected);
* :func:`mean_structure` - the reference of iterative alignment: align onto
  the first frame, average, align onto the average, ... until the average
  moves less than ``tol``;
* :func:`choose_alignment` - ``"kabsch"`` for molecules, ``"none"`` where
  absolute positions carry the information (fewer than 3 saved atoms, or
  particles that are no molecule: no bonds and no standard residue, e.g. a
  toy potential's particle in a ``CustomExternalForce``);
* :class:`DecoderDataset` - the pairs ``(ψ, aligned x)``, batched like the
  datasets of :mod:`lss_engine.data` (``batches``, ``split``, ``len``), so
  :func:`lss_engine.train.fit` trains a decoder on them::

      data = DecoderDataset(latent, positions)          # aligned to the mean structure
      train, val = data.split(0.2)
      for psi, x in train.batches(256, seed=0):         # (256, D), (256, n_atoms, 3)
          ...
"""
from __future__ import annotations

from typing import Any, Sequence, Iterator

import numpy as np
import torch

from ._helpers import positive_int as _check_positive_int
from .data import _generator
from .errors import LssError, NonFiniteError

__all__ = ["ALIGNMENTS", "DecoderDataset", "align_to_reference", "choose_alignment", "mean_structure"]

#: how decoder training frames are superposed: Kabsch onto a mean structure, or not at all
ALIGNMENTS = ("kabsch", "none")

Batch = tuple[torch.Tensor, torch.Tensor]  # (latent, coords)
#: frames aligned per call of the featurizer (bounds the peak memory)
_ALIGN_CHUNK = 1 << 15


def choose_alignment(n_atoms: int, topology: Any = None, requested: str = "auto",
                     external_forces: Sequence[str] | None = None) -> str:
    """The alignment of decoder training frames: ``"kabsch"`` or ``"none"``.

    ``requested`` ``"kabsch"`` or ``"none"`` is returned as is (``"kabsch"``
    needs at least 3 atoms).  ``"auto"``:

    * ``"none"`` for fewer than 3 atoms (a rotation is not defined by them, and
      a lone particle's position *is* its state);
    * ``"none"`` when the system has forces on absolute positions
      (``external_forces``, as a store records them: a field, a toy
      potential, positional restraints), whose frame is then meaningful;
    * ``"none"`` when ``topology`` (mdtraj or OpenMM, of the saved atoms) has
      no bond and no protein, nucleic-acid or water residue: free particles
      in an external potential (the toy systems), whose absolute positions
      matter;
    * ``"kabsch"`` otherwise (molecules: rigid motions carry no information,
      the LSS paper's choice), also when no topology is known.
    """
    n_atoms = int(n_atoms)
    mode = str(requested).strip().lower()
    if mode not in ("auto", *ALIGNMENTS):
        raise LssError(f"decoder alignment must be auto, kabsch or none, got {requested!r}")
    if mode == "kabsch" and n_atoms < 3:
        raise LssError(f"Kabsch alignment needs at least 3 saved atoms, got {n_atoms}; use alignment 'none'")
    if mode != "auto":
        return mode
    if n_atoms < 3 or external_forces:
        return "none"
    if topology is None:
        return "kabsch"
    from .features.topology import to_mdtraj_topology

    top = to_mdtraj_topology(topology)
    molecular = top.n_bonds > 0 or any(r.is_protein or r.is_nucleic or r.is_water for r in top.residues)
    return "kabsch" if molecular else "none"


def _positions(positions: Any, what: str = "positions", min_atoms: int = 3) -> np.ndarray:
    if isinstance(positions, torch.Tensor):
        positions = positions.detach().cpu().numpy()
    x = np.asarray(positions)
    if x.ndim != 3 or x.shape[2] != 3 or not np.issubdtype(x.dtype, np.number):
        raise LssError(f"{what} must be a numeric (n_frames, n_atoms, 3) array in nm, got shape {x.shape}")
    if x.shape[1] < min_atoms:
        raise LssError(f"{what} need at least {min_atoms} atoms to align, got {x.shape[1]}"
                       if min_atoms >= 3 else f"{what} need at least {min_atoms} atom(s), got {x.shape[1]}")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0])
        raise NonFiniteError(f"{what} contain NaN or Inf (frame {bad})")
    return x


def _fit_indices(fit_indices: Any, n_atoms: int) -> np.ndarray:
    if fit_indices is None:
        return np.arange(n_atoms, dtype=np.int64)
    fit = np.asarray(fit_indices)
    if fit.ndim != 1 or not np.issubdtype(fit.dtype, np.integer) or len(fit) < 3:
        raise LssError(f"fit_indices must be at least 3 atom indices, got {fit_indices!r}")
    if fit.min() < 0 or fit.max() >= n_atoms or len(np.unique(fit)) != len(fit):
        raise LssError(f"fit_indices must be distinct atom indices in [0, {n_atoms})")
    return fit.astype(np.int64)


def align_to_reference(positions: Any, reference: Any, fit_indices: Any = None) -> np.ndarray:
    r"""Superpose every frame onto ``reference`` (Kabsch, no reflections).

    Each frame is centred on the mean of its fit atoms, rotated by the
    optimal proper rotation onto the centred reference fit atoms and moved to
    the reference's fit-atom centre (as ``mdtraj.Trajectory.superpose``,
    unweighted); the work is done by
    :class:`lss_engine.features.AlignedPositions` in float64.

    Parameters
    ----------
    positions
        ``(n_frames, n_atoms, 3)`` in nm.
    reference
        ``(n_atoms, 3)`` in nm.
    fit_indices
        Atoms used for the fit (at least 3); default all.

    Returns
    -------
    numpy.ndarray
        ``(n_frames, n_atoms, 3)`` float64 aligned positions.
    """
    from .features import AlignedPositions

    x = _positions(positions)
    ref = np.asarray(reference, dtype=np.float64)
    if ref.shape != x.shape[1:]:
        raise LssError(f"reference must have shape {x.shape[1:]}, got {ref.shape}")
    if not np.isfinite(ref).all():
        raise NonFiniteError("the reference structure contains NaN or Inf")
    n_atoms = x.shape[1]
    aligner = AlignedPositions(np.arange(n_atoms), ref, fit_indices=_fit_indices(fit_indices, n_atoms))
    out = np.empty(x.shape, dtype=np.float64)
    for a in range(0, len(x), _ALIGN_CHUNK):
        chunk = np.asarray(x[a : a + _ALIGN_CHUNK], dtype=np.float64)
        out[a : a + len(chunk)] = aligner.compute(chunk).reshape(chunk.shape)
    return out


def mean_structure(
    positions: Any, fit_indices: Any = None, *, max_iterations: int = 20, tol: float = 1e-6
) -> np.ndarray:
    """Reference structure of iterative alignment (nm, float64).

    Start from the first frame; align all frames onto the current reference
    and take their mean as the next reference; stop when the reference's
    RMS change is below ``tol`` nm or after ``max_iterations`` rounds.  The
    mean of aligned frames is itself centred like the frames, so the result
    keeps the first frame's fit-atom centre and (roughly) orientation.
    """
    x = _positions(positions)
    ref = np.asarray(x[0], dtype=np.float64)
    for _ in range(int(max_iterations)):
        new = align_to_reference(x, ref, fit_indices).mean(axis=0)
        change = float(np.sqrt(np.mean(np.sum((new - ref) ** 2, axis=1))))
        ref = new
        if change < tol:
            break
    return ref


class DecoderDataset:
    r"""Pairs ``(ψ, x)`` of latent coordinates and aligned structures, on one device.

    Parameters
    ----------
    latent
        ``(n_frames, D)`` latent coordinates :math:`\psi` of the frames
        (e.g. ``encoder.latent(store.features())``).
    positions
        ``(n_frames, n_atoms, 3)`` positions in nm of the atoms to decode
        (e.g. ``store.positions()``), frame for frame with ``latent``.
    reference
        ``(n_atoms, 3)`` structure to align onto.  ``None``: the
        :func:`mean_structure` of ``positions`` (``reference="first"``: the
        first frame).
    fit_indices
        Atoms used for the alignment; default all.
    align
        ``False``: the positions are aligned already (``reference`` is then
        only recorded, default the mean of the frames).
    alignment
        ``"kabsch"`` (default) or ``"none"``: keep the
        absolute positions (systems whose positions matter, e.g. a particle
        in an external potential; any number of atoms); see
        :func:`choose_alignment`.  ``reference`` is then the mean frame.
    dtype, device
        Of the stored tensors (default float32, CPU).

    Attributes
    ----------
    latent : torch.Tensor
        ``(n_frames, D)``.
    coords : torch.Tensor
        ``(n_frames, n_atoms, 3)`` aligned positions.
    reference : numpy.ndarray
        ``(n_atoms, 3)`` float64, the structure aligned onto.
    alignment : str
        ``"kabsch"`` or ``"none"``.

    A batch is ``(latent, coords)`` of shapes ``(B, D)`` and ``(B, n_atoms, 3)``.
    :meth:`split` and :meth:`subset` make views that share the tensors.
    """

    def __init__(
        self,
        latent: Any,
        positions: Any,
        *,
        reference: Any = None,
        fit_indices: Any = None,
        align: bool = True,
        alignment: str | None = None,
        dtype: torch.dtype = torch.float32,
        device: "str | torch.device" = "cpu",
    ):
        if isinstance(latent, torch.Tensor):
            latent = latent.detach().cpu().numpy()
        psi = np.asarray(latent)
        if psi.ndim == 1:
            psi = psi[:, None]
        if psi.ndim != 2 or psi.shape[1] < 1 or not np.issubdtype(psi.dtype, np.number):
            raise LssError(f"latent must be a numeric (n_frames, D) array, got shape {psi.shape}")
        alignment = "kabsch" if alignment is None else str(alignment).strip().lower()
        if alignment not in ALIGNMENTS:
            raise LssError(f"alignment must be 'kabsch' or 'none', got {alignment!r}")
        kabsch = alignment == "kabsch" and align
        x = _positions(positions, min_atoms=3 if alignment == "kabsch" else 1)
        if len(psi) != len(x):
            raise LssError(f"latent has {len(psi)} frames, positions have {len(x)}: they must be paired frame by frame")
        if len(x) < 2:
            raise LssError("a decoder dataset needs at least 2 frames")
        if not np.isfinite(psi).all():
            bad = int(np.flatnonzero(~np.isfinite(psi).all(axis=1))[0])
            raise NonFiniteError(f"latent contains NaN or Inf (frame {bad})")
        if isinstance(reference, str):
            if reference != "first":
                raise LssError(f"reference must be an (n_atoms, 3) array, None or 'first', got {reference!r}")
            reference = x[0]
        if kabsch:
            if reference is None:
                reference = mean_structure(x, fit_indices)
            aligned = align_to_reference(x, reference, fit_indices)
        else:
            aligned = np.asarray(x, dtype=np.float64)
            if reference is None:
                reference = aligned.mean(axis=0)
        ref = np.asarray(reference, dtype=np.float64)
        if ref.shape != x.shape[1:]:
            raise LssError(f"reference must have shape {x.shape[1:]}, got {ref.shape}")
        self.reference = ref
        self.alignment = alignment
        self.fit_indices = (_fit_indices(fit_indices, x.shape[1]) if alignment == "kabsch"
                            else np.arange(x.shape[1], dtype=np.int64))
        self.latent = torch.as_tensor(psi, dtype=dtype).to(device)
        self.coords = torch.as_tensor(aligned, dtype=dtype).to(device)
        self._index = torch.arange(len(x), device=self.latent.device)

    # -- views ------------------------------------------------------------------
    def _view(self, index: torch.Tensor) -> "DecoderDataset":
        view = object.__new__(DecoderDataset)
        view.__dict__.update(self.__dict__)
        view._index = index
        return view

    def subset(self, indices: Any) -> "DecoderDataset":
        """A view of the items ``indices`` (positions in this dataset)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1), device=self._index.device)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise LssError(f"subset indices must lie in [0, {len(self)})")
        return self._view(self._index[idx])

    def split(
        self, val_fraction: float = 0.2, *, block_length: int | None = None, seed: int = 0
    ) -> tuple["DecoderDataset", "DecoderDataset"]:
        """``(train, val)`` views made of contiguous blocks of frames assigned at random.

        Frames of a trajectory are correlated in time, so whole blocks (default:
        ``len // 20`` frames, at least 1) go to one side; the validation side
        takes the prefix of a random block order whose size comes closest to
        ``val_fraction``.  Both sides keep time order.
        """
        fraction = float(val_fraction)
        if not 0.0 < fraction < 1.0:
            raise LssError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        n = len(self)
        length = max(1, n // 20) if block_length is None else int(block_length)
        if length < 1 or length >= n:
            raise LssError(f"block_length must be in [1, {n}), got {block_length!r}")
        blocks = np.array_split(np.arange(n), max(2, n // length))
        order = np.random.default_rng(seed).permutation(len(blocks))
        sizes = np.cumsum([len(blocks[k]) for k in order])
        k = int(np.argmin(np.abs(sizes - fraction * n)))
        k = min(max(k, 0), len(blocks) - 2)  # both sides non-empty
        val_blocks = np.zeros(len(blocks), dtype=bool)
        val_blocks[order[: k + 1]] = True
        val = np.concatenate([b for b, v in zip(blocks, val_blocks) if v])
        train = np.concatenate([b for b, v in zip(blocks, val_blocks) if not v])
        return self.subset(train), self.subset(val)

    # -- access ---------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._index.shape[0])

    def __repr__(self) -> str:
        return f"DecoderDataset({len(self)} frames, {self.n_latent} latent dims, {self.n_atoms} atoms)"

    @property
    def n_latent(self) -> int:
        return int(self.latent.shape[1])

    @property
    def n_atoms(self) -> int:
        return int(self.coords.shape[1])

    def arrays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(latent, coords)`` of all items of this view, in order."""
        return self.latent[self._index], self.coords[self._index]

    def batches(self, batch_size: int, *, shuffle: bool = True, seed: int | None = None,
                generator: torch.Generator | None = None, drop_last: bool = False) -> Iterator[Batch]:
        """One epoch of ``(latent, coords)`` batches, every item once.

        As :meth:`lss_engine.data.TimeLaggedDataset.batches`: ``seed`` or a CPU
        ``generator`` draw the order when ``shuffle`` (torch's global RNG is not
        used); ``drop_last`` drops the last incomplete batch.
        """
        batch_size = _check_positive_int(batch_size, "batch_size")
        generator = _generator(seed, generator)
        index = self._index
        if shuffle:
            index = index[torch.randperm(len(index), generator=generator).to(index.device)]
        stop = len(index) - len(index) % batch_size if drop_last else len(index)
        return self._iterate(index, batch_size, stop)

    def _iterate(self, index: torch.Tensor, batch_size: int, stop: int) -> Iterator[Batch]:
        for a in range(0, stop, batch_size):
            rows = index[a : min(a + batch_size, stop)]
            yield self.latent[rows], self.coords[rows]
