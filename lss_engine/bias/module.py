"""One torch module from positions to bias energy: the encoder export followed by latent-space terms.

:class:`LatentBiasModule` is what every backend evaluates (eagerly for a
Python force, scripted for openmm-torch).  :class:`TorchForceModule` adapts it
to openmm-torch's calling convention, verified on openmm-torch 1.5: the
module is called as ``forward(positions[, box], g_0, g_1, ...)`` with
``positions`` ``(n_atoms, 3)`` nm (float64 on Reference/CPU, float32 on
CUDA), the box ``(3, 3)`` (rows a, b, c, nm) only when the force uses periodic
boundary conditions, and then one float64 scalar tensor per global parameter
in the order they were added.  TorchScript has no ``*args``, so the adapter
declares :data:`MAX_ARGUMENTS` optional tensors and takes those given.
"""
# No ``from __future__ import annotations``: TorchScript reads the annotations.
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import LssError
from .potentials import LatentTerm

__all__ = ["MAX_ARGUMENTS", "LatentBiasModule", "LatentComponentModule", "TorchForceModule", "latent_dim"]

#: tensors after the positions that :class:`TorchForceModule` accepts (box + global parameters)
MAX_ARGUMENTS = 17


def latent_dim(encoder_module: nn.Module) -> int:
    """The number of latent coordinates an encoder export returns (one evaluation on a random conformation)."""
    featurizer = getattr(encoder_module, "featurizer", None)
    n_atoms = getattr(featurizer, "n_atoms", None)
    if n_atoms is None:
        raise LssError("the encoder module has no featurizer with an atom count")
    x = torch.as_tensor(np.random.default_rng(0).normal(scale=0.3, size=(1, int(n_atoms), 3)))
    with torch.no_grad():
        return int(encoder_module(x, None).shape[-1])


class LatentBiasModule(nn.Module):
    r"""Positions (+ box) → latent :math:`s` → :math:`E = \sum_t E_t(s; g_t)` kJ/mol (float64).

    Parameters
    ----------
    encoder_module
        :meth:`~lss_engine.encoder.Encoder.export_module`'s output (positions
        ``(n_frames, n_atoms, 3)`` [+ box] → latent ``(n_frames, d)``).
    terms
        :class:`~lss_engine.bias.potentials.LatentTerm` objects on the same
        ``d``; term ``t`` reads its global parameters :math:`g_t` from the
        slice ``params[offsets[t]:offsets[t + 1]]`` of the parameter list.
    """

    n_dim: int
    offsets: List[int]

    def __init__(self, encoder_module: nn.Module, terms: Sequence[LatentTerm]) -> None:
        super().__init__()
        terms = list(terms)
        if not terms:
            raise LssError("a latent bias needs at least one term (restraint, walls or Gaussians)")
        for term in terms:
            if not isinstance(term, LatentTerm):
                raise LssError(f"a latent bias term must be a LatentTerm, got {type(term).__name__}")
        d = latent_dim(encoder_module)
        wrong = [type(t).__name__ for t in terms if t.n_dim != d]
        if wrong:
            raise LssError(f"the encoder gives {d} latent coordinates, but {', '.join(wrong)} "
                           f"act on {', '.join(str(t.n_dim) for t in terms if t.n_dim != d)}")
        self.encoder = encoder_module
        self.terms = nn.ModuleList(terms)
        self.n_dim = d
        offsets = [0]
        for term in terms:
            offsets.append(offsets[-1] + len(term.parameter_suffixes()))
        self.offsets = offsets

    def parameter_suffixes(self) -> List[str]:
        """Global parameter names of all terms, in the order of the parameter list (without prefix)."""
        return [name for term in self.terms for name in term.parameter_suffixes()]

    def parameter_defaults(self) -> List[float]:
        return [value for term in self.terms for value in term.parameter_defaults()]

    def forward(self, positions: Tensor, box: Optional[Tensor], params: List[Tensor]) -> Tensor:
        """Energy (0-d float64, kJ/mol) of one conformation ``(n_atoms, 3)`` nm; ``params`` may be empty (defaults)."""
        return self.latent_energy(self.latent(positions, box), params).sum()

    @torch.jit.export
    def latent(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        """Latent coordinates (float64): ``(d,)`` for ``(n_atoms, 3)``, ``(n, d)`` for ``(n, n_atoms, 3)``."""
        single = positions.dim() == 2
        x = positions.unsqueeze(0) if single else positions
        s = self.encoder(x, box).to(torch.float64)
        if single:
            s = s.squeeze(0)
        return s

    @torch.jit.export
    def latent_energy(self, s: Tensor, params: List[Tensor]) -> Tensor:
        """:math:`\\sum_t E_t(s)` of latent points ``(..., d)`` → ``(...)`` kJ/mol."""
        energy = torch.zeros(s.shape[:-1], dtype=torch.float64, device=s.device)
        for i, term in enumerate(self.terms):
            if len(params) == 0:
                energy = energy + term(s, params)
            else:
                energy = energy + term(s, params[self.offsets[i]:self.offsets[i + 1]])
        return energy


class TorchForceModule(nn.Module):
    """openmm-torch's calling convention around a :class:`LatentBiasModule`.

    ``forward(positions, a0, a1, ...)``: with ``periodic`` the first tensor
    after the positions is the box, the rest are the global parameters.
    """

    periodic: bool

    def __init__(self, bias: LatentBiasModule, periodic: bool) -> None:
        super().__init__()
        n = len(bias.parameter_suffixes()) + int(bool(periodic))
        if n > MAX_ARGUMENTS:
            raise LssError(f"a latent bias force takes at most {MAX_ARGUMENTS} tensors after the positions "
                           f"(box and global parameters), this one needs {n}: restrain fewer latent dimensions")
        self.bias = bias
        self.periodic = bool(periodic)

    def forward(self, positions: Tensor,
                a0: Optional[Tensor] = None, a1: Optional[Tensor] = None, a2: Optional[Tensor] = None,
                a3: Optional[Tensor] = None, a4: Optional[Tensor] = None, a5: Optional[Tensor] = None,
                a6: Optional[Tensor] = None, a7: Optional[Tensor] = None, a8: Optional[Tensor] = None,
                a9: Optional[Tensor] = None, a10: Optional[Tensor] = None, a11: Optional[Tensor] = None,
                a12: Optional[Tensor] = None, a13: Optional[Tensor] = None, a14: Optional[Tensor] = None,
                a15: Optional[Tensor] = None, a16: Optional[Tensor] = None) -> Tensor:
        given: List[Tensor] = []
        for a in [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16]:
            if a is not None:
                given.append(a)
        box: Optional[Tensor] = None
        if self.periodic:
            box = given[0]
            given = given[1:]
        return self.bias(positions, box, given)


class LatentComponentModule(nn.Module):
    """One latent coordinate as a TorchForce "energy": a collective variable for ``CustomCVForce``.

    ``forward(positions[, box])`` → :math:`s_k` (0-d float64); openmm-torch
    passes the box only when the force uses periodic boundary conditions.
    """

    index: int

    def __init__(self, encoder_module: nn.Module, index: int) -> None:
        super().__init__()
        self.encoder = encoder_module
        self.index = int(index)

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        return self.encoder(positions.unsqueeze(0), box).to(torch.float64)[0, self.index]
