"""Batched, differentiable geometry kernels in torch (TorchScript-compatible).

All functions take positions of shape ``(n_frames, n_atoms, 3)`` in nm and an
optional box ``(n_frames, 3, 3)`` whose rows are the box vectors a, b, c in nm
(OpenMM's reduced form: ``a = (ax, 0, 0)``, ``b = (bx, by, 0)``,
``c = (cx, cy, cz)``).  The dtype of the result follows the positions.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def minimum_image(d: Tensor, box: Tensor) -> Tensor:
    """Wrap displacement vectors into the minimum image of a triclinic box.

    Follows OpenMM's convention for a reduced box::

        d -= c * floor(d_z / c_z + 1/2)
        d -= b * floor(d_y / b_y + 1/2)
        d -= a * floor(d_x / a_x + 1/2)

    which is exact for orthorhombic boxes and for triclinic boxes whenever
    ``|d|`` is less than half the shortest box width.

    Parameters
    ----------
    d : Tensor, shape (n_frames, n, 3)
        Displacements in nm.
    box : Tensor, shape (n_frames, 3, 3)
        Box vectors as rows, in nm.
    """
    a = box[:, 0, :].unsqueeze(1)
    b = box[:, 1, :].unsqueeze(1)
    c = box[:, 2, :].unsqueeze(1)
    d = d - c * torch.floor(d[:, :, 2:3] / c[:, :, 2:3] + 0.5)
    d = d - b * torch.floor(d[:, :, 1:2] / b[:, :, 1:2] + 0.5)
    d = d - a * torch.floor(d[:, :, 0:1] / a[:, :, 0:1] + 0.5)
    return d


def displacements(positions: Tensor, i: Tensor, j: Tensor, box: Optional[Tensor] = None) -> Tensor:
    """Displacements ``x_j - x_i`` (minimum image when ``box`` is given); shape (F, len(i), 3)."""
    d = positions.index_select(1, j) - positions.index_select(1, i)
    if box is not None:
        d = minimum_image(d, box)
    return d


def distances(positions: Tensor, i: Tensor, j: Tensor, box: Optional[Tensor] = None, eps: float = 0.0) -> Tensor:
    """Euclidean distances ``|x_j - x_i|`` (minimum image when ``box`` is given); shape (F, len(i)).

    ``eps`` > 0 computes ``sqrt(|x_j - x_i|^2 + eps)``: the gradient stays
    finite when two atoms coincide (a generator's output, differentiated twice
    by a gradient penalty); ``eps = 0`` is the exact distance.
    """
    d = displacements(positions, i, j, box)
    return torch.sqrt((d * d).sum(-1) + eps)


def _dihedral_parts(positions: Tensor, quartets: Tensor, box: Optional[Tensor] = None,
                    eps: float = 0.0) -> tuple[Tensor, Tensor]:
    """``(y, x)`` with ``phi = atan2(y, x)``: the one dihedral kernel behind :func:`dihedrals`
    and :func:`dihedral_sin_cos` (formulas in :func:`dihedrals`; ``eps`` is added under ``|b2|``'s root)."""
    b1 = displacements(positions, quartets[:, 0], quartets[:, 1], box)
    b2 = displacements(positions, quartets[:, 1], quartets[:, 2], box)
    b3 = displacements(positions, quartets[:, 2], quartets[:, 3], box)
    n1 = torch.linalg.cross(b1, b2, dim=-1)
    n2 = torch.linalg.cross(b2, b3, dim=-1)
    y = (b1 * n2).sum(-1) * torch.sqrt((b2 * b2).sum(-1) + eps)
    x = (n1 * n2).sum(-1)
    return y, x


def dihedrals(positions: Tensor, quartets: Tensor, box: Optional[Tensor] = None) -> Tensor:
    """Dihedral angles in radians, in (-pi, pi], with mdtraj's (IUPAC) sign.

    For atoms ``x0, x1, x2, x3`` and bond vectors ``b1 = x1 - x0``,
    ``b2 = x2 - x1``, ``b3 = x3 - x2`` (each minimum-imaged when ``box`` is
    given)::

        n1 = b1 x b2,   n2 = b2 x b3
        phi = atan2(|b2| b1 . n2,  n1 . n2)

    Parameters
    ----------
    positions : Tensor, shape (n_frames, n_atoms, 3)
    quartets : Tensor, shape (n_torsions, 4), int64
    box : Tensor, shape (n_frames, 3, 3), optional
    """
    y, x = _dihedral_parts(positions, quartets, box)
    return torch.atan2(y, x)


def dihedral_sin_cos(positions: Tensor, quartets: Tensor, box: Optional[Tensor] = None,
                     eps: float = 1e-12) -> Tensor:
    """``(F, 2 n_torsions)``: ``sin(phi)`` of every torsion, then ``cos(phi)`` (``phi`` as :func:`dihedrals`).

    Computed as ``(y, x) / sqrt(y^2 + x^2 + eps)`` from the same ``(y, x)``
    as :func:`dihedrals`, without the angle: smooth in the positions, and with
    ``eps`` > 0 the gradient stays finite for collinear atoms (the value is
    then ``(0, 0)``), so it can be differentiated twice (a critic's gradient
    penalty).
    """
    y, x = _dihedral_parts(positions, quartets, box, eps)
    norm = torch.sqrt(y * y + x * x + eps)
    return torch.cat([y / norm, x / norm], dim=1)


def kabsch_rotation(mobile: Tensor, target: Tensor) -> Tensor:
    """Optimal proper rotation of centred ``mobile`` onto centred ``target`` (Kabsch).

    Minimises ``sum_k |x_k R - y_k|^2`` over rotations ``R`` (row-vector
    convention, ``det R = +1``).  With the covariance ``H = X^T Y = U S V^T``::

        D = diag(1, 1, sign(det(U V^T)))
        R = U D V^T

    The sign correction ``D`` excludes reflections.

    Parameters
    ----------
    mobile : Tensor, shape (n_frames, n_fit, 3)
        Centred coordinates to rotate.
    target : Tensor, shape (n_fit, 3) or (n_frames, n_fit, 3)
        Centred reference coordinates.

    Returns
    -------
    Tensor, shape (n_frames, 3, 3)
        ``R`` such that ``mobile @ R`` is aligned with ``target``.
    """
    h = torch.matmul(mobile.transpose(1, 2), target)
    u, s, vh = torch.linalg.svd(h)
    det = torch.linalg.det(torch.matmul(u, vh))
    one = torch.ones_like(det)
    sign = torch.where(det < 0, -one, one)
    diag = torch.stack([one, one, sign], dim=-1)
    return torch.matmul(u * diag.unsqueeze(1), vh)


def switching(x: Tensor, n: int, m: int) -> Tensor:
    """Rational switching function ``(1 - x^n) / (1 - x^m)`` without the 0/0 at ``x = 1``.

    Evaluated as ``S_n(x) / S_m(x)`` with ``S_k(x) = sum_{i<k} x^i`` (exactly
    equal for integer n, m >= 1), which is ``1 / (1 + x^n)`` when ``m = 2n``;
    the value at ``x = 1`` is ``n / m``.
    """
    if m == 2 * n:
        return 1.0 / (1.0 + torch.pow(x, n))
    sn = torch.ones_like(x)
    for _ in range(n - 1):
        sn = sn * x + 1.0
    sm = torch.ones_like(x)
    for _ in range(m - 1):
        sm = sm * x + 1.0
    return sn / sm
