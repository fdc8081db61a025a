r"""Bias energies in latent space: torch modules from latent coordinates to kJ/mol.

Every term maps latent points :math:`s` of shape ``(..., d)`` (one point
``(d,)``, a frame ``(1, d)`` or a batch ``(n, d)``) to energies of shape
``(...)`` in float64 kJ/mol, differentiably and TorchScript-ably.  Its
``forward(s, params)`` also takes a list of scalar tensors: the values of the
term's OpenMM global parameters (:meth:`LatentTerm.parameter_suffixes`), in
order, or an empty list to use the term's own defaults.  A term with no
global parameters ignores the list.

* :class:`HarmonicRestraint` -- centre and stiffness per dimension are global
  parameters (umbrella windows, steering: ``Context.setParameter``).
* :class:`FlatBottomWalls` -- zero inside a box of the latent space, quadratic
  outside (keeps the system where the encoder was trained).
* :class:`GaussianSum` -- a static sum of Gaussian hills, deposited between
  runs (:meth:`GaussianSum.added`).

:class:`~lss_engine.bias.module.LatentBiasModule` composes an encoder export
with any of these; :func:`~lss_engine.bias.forces.latent_bias_force` makes it
an OpenMM force.
"""
# No ``from __future__ import annotations``: TorchScript reads the annotations.
from typing import Any, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .._helpers import positive_float
from ..errors import LssError

__all__ = ["FlatBottomWalls", "GaussianSum", "HarmonicRestraint", "LatentTerm"]


def _vector(value: Any, what: str, n: Optional[int] = None, *, finite: bool = True) -> np.ndarray:
    """``value`` as a float64 vector (a scalar is broadcast to ``n``), checked."""
    x = np.asarray(value, dtype=np.float64)
    if x.ndim == 0 and n is not None:
        x = np.full(n, float(x))
    if x.ndim != 1 or (n is not None and len(x) != n) or len(x) == 0:
        want = f"{n} values" if n is not None else "a non-empty vector"
        raise LssError(f"{what} must be {want} (one per latent dimension), got shape {x.shape}")
    if finite and not np.isfinite(x).all():
        raise LssError(f"{what} must be finite, got {x.tolist()}")
    return x


class LatentTerm(nn.Module):
    """Base class of the bias terms: ``forward(s, params) -> energy`` (kJ/mol, float64).

    Attributes
    ----------
    n_dim : int
        The latent dimension :math:`d` the term acts on.
    """

    n_dim: int

    def __init__(self, n_dim: int) -> None:
        super().__init__()
        if isinstance(n_dim, bool) or not isinstance(n_dim, (int, np.integer)) or n_dim < 1:
            raise LssError(f"a latent bias term needs a positive dimension, got {n_dim!r}")
        self.n_dim = int(n_dim)

    def parameter_suffixes(self) -> List[str]:
        """Names of the term's OpenMM global parameters, without the force's prefix (none here)."""
        return []

    def parameter_defaults(self) -> List[float]:
        """Default values of the global parameters, in the order of :meth:`parameter_suffixes`."""
        return []

    def _check(self, s: Tensor) -> Tensor:
        if s.shape[-1] != self.n_dim:
            raise ValueError("latent points must have " + str(self.n_dim) + " coordinates in their last axis, got "
                             + str(list(s.shape)))
        return s.to(torch.float64)

    def energy_of(self, s: Any, params: Optional[Sequence[float]] = None) -> np.ndarray:
        """The energy (kJ/mol, float64 numpy) of latent points ``s`` ``(..., d)``, without gradients.

        ``params``: values of the global parameters (default: the term's own).
        """
        x = torch.as_tensor(np.asarray(s, dtype=np.float64))
        values = [] if params is None else [torch.tensor(float(p), dtype=torch.float64) for p in params]
        with torch.no_grad():
            return self(x, values).numpy()


class HarmonicRestraint(LatentTerm):
    r"""A harmonic restraint in latent space, centre and stiffness per dimension.

    .. math::

        E(s) = \frac12 \sum_{k=1}^{d} \kappa_k\, (s_k - s^0_k)^2
        \quad [\mathrm{kJ/mol}],

    with the centre :math:`s^0` in latent units and the stiffness
    :math:`\kappa_k \ge 0` in kJ/mol per latent unit squared.  In an OpenMM
    force both are global parameters, ``<prefix>_s0_<k>`` and
    ``<prefix>_kappa_<k>``: ``Context.setParameter`` moves an umbrella window
    or steers the centre with no rebuild.  Their derivative

    .. math:: \frac{\partial E}{\partial s^0_k} = -\kappa_k (s_k - s^0_k)
        \;\Rightarrow\; s_k = s^0_k - \frac{1}{\kappa_k}\frac{\partial E}{\partial s^0_k}

    gives the latent point back from the same force evaluation (an OpenMM
    energy-parameter derivative; see
    :meth:`~lss_engine.bias.forces.LatentBias.latent_from_state`).

    Parameters
    ----------
    centre : array_like, shape (d,)
        Default centre :math:`s^0`.
    stiffness : float or array_like, shape (d,)
        Default :math:`\kappa` (a scalar applies to every dimension), >= 0.
    """

    def __init__(self, centre: Any, stiffness: Any) -> None:
        c = _vector(centre, "the restraint centre")
        super().__init__(len(c))
        k = _vector(stiffness, "the restraint stiffness", len(c))
        if (k < 0).any():
            raise LssError(f"the restraint stiffness must be >= 0, got {k.tolist()}")
        self.register_buffer("centre", torch.as_tensor(c))
        self.register_buffer("stiffness", torch.as_tensor(k))

    def parameter_suffixes(self) -> List[str]:
        return [f"s0_{k}" for k in range(self.n_dim)] + [f"kappa_{k}" for k in range(self.n_dim)]

    def parameter_defaults(self) -> List[float]:
        return self.centre.tolist() + self.stiffness.tolist()

    def forward(self, s: Tensor, params: List[Tensor]) -> Tensor:
        if len(params) == 0:
            return self.energy(s, self.centre, self.stiffness)
        d = self.n_dim
        return self.energy(s, torch.stack(params[:d]), torch.stack(params[d:2 * d]))

    @torch.jit.export
    def energy(self, s: Tensor, centre: Tensor, stiffness: Tensor) -> Tensor:
        """:math:`E` for explicit ``centre`` and ``stiffness`` tensors of shape ``(d,)``."""
        delta = self._check(s) - centre.to(torch.float64)
        return 0.5 * (stiffness.to(torch.float64) * delta * delta).sum(-1)


class FlatBottomWalls(LatentTerm):
    r"""Flat-bottom walls: zero inside ``[lower, upper]`` per dimension, quadratic outside.

    .. math::

        E(s) = \frac{\kappa_w}{2} \sum_{k=1}^{d}
            \bigl[\max(0, s_k - h_k)^2 + \max(0, l_k - s_k)^2\bigr]
        \quad [\mathrm{kJ/mol}],

    with bounds :math:`l_k < h_k` (``±inf`` for an open side) and
    :math:`\kappa_w` in kJ/mol per latent unit squared.  Its purpose: a bias
    must not push the system where the encoder extrapolates, so the default
    bounds (:meth:`from_range`, :meth:`from_latent`) are the encoder's
    training range widened by a margin.  The energy and its first derivative
    are continuous at the bounds (the second is not).

    Parameters
    ----------
    lower, upper : array_like, shape (d,)
        The bounds :math:`l` and :math:`h`.
    stiffness : float
        :math:`\kappa_w` (default 1000 kJ/mol per latent unit squared: with
        whitened SRV coordinates of unit variance, 0.1 past a wall costs
        5 kJ/mol, 2 kT at 300 K).
    """

    #: default :math:`\kappa_w`, kJ/mol per latent unit squared
    DEFAULT_STIFFNESS = 1000.0
    #: default margin, as a fraction of the range's width on each side
    DEFAULT_MARGIN = 0.1

    def __init__(self, lower: Any, upper: Any, stiffness: float = DEFAULT_STIFFNESS) -> None:
        lo = _vector(lower, "the lower wall", finite=False)
        super().__init__(len(lo))
        hi = _vector(upper, "the upper wall", len(lo), finite=False)
        if np.isnan(lo).any() or np.isnan(hi).any() or not (lo < hi).all():
            raise LssError(f"the walls need lower < upper in every dimension, got {lo.tolist()} and {hi.tolist()}")
        k = positive_float(stiffness, "the wall stiffness", allow_zero=True)
        self.register_buffer("lower", torch.as_tensor(lo))
        self.register_buffer("upper", torch.as_tensor(hi))
        self.register_buffer("wall_stiffness", torch.tensor(k, dtype=torch.float64))

    @classmethod
    def from_range(cls, low: Any, high: Any, margin: float = DEFAULT_MARGIN,
                   stiffness: float = DEFAULT_STIFFNESS) -> "FlatBottomWalls":
        """Walls at a range widened by ``margin`` × its width on each side."""
        lo = _vector(low, "the range's minimum")
        hi = _vector(high, "the range's maximum", len(lo))
        if not (hi > lo).all():
            raise LssError(f"the latent range is empty in some dimension: {lo.tolist()} to {hi.tolist()}")
        m = float(margin)
        if not np.isfinite(m) or m < 0:
            raise LssError(f"the wall margin must be a finite fraction >= 0, got {margin!r}")
        width = hi - lo
        return cls(lo - m * width, hi + m * width, stiffness)

    @classmethod
    def from_latent(cls, latent: Any, margin: float = DEFAULT_MARGIN,
                    stiffness: float = DEFAULT_STIFFNESS) -> "FlatBottomWalls":
        """Walls around latent samples ``(n, d)`` (e.g. ``encoder.latent`` of the training stores' features)."""
        z = np.asarray(latent, dtype=np.float64)
        if z.ndim != 2 or len(z) < 2 or not np.isfinite(z).all():
            raise LssError(f"walls need finite latent samples of shape (n >= 2, d), got shape {z.shape}")
        return cls.from_range(z.min(axis=0), z.max(axis=0), margin, stiffness)

    def forward(self, s: Tensor, params: List[Tensor]) -> Tensor:
        x = self._check(s)
        above = torch.clamp(x - self.upper, min=0.0)
        below = torch.clamp(self.lower - x, min=0.0)
        return 0.5 * self.wall_stiffness * (above * above + below * below).sum(-1)


class GaussianSum(LatentTerm):
    r"""A static sum of Gaussian hills in latent space.

    .. math::

        E(s) = \sum_{j=1}^{m} h_j \exp\Bigl(-\frac12 \sum_{k=1}^{d}
               \frac{(s_k - c_{jk})^2}{\sigma_{jk}^2}\Bigr)
        \quad [\mathrm{kJ/mol}],

    with centres :math:`c` ``(m, d)``, widths :math:`\sigma > 0` per dimension
    (``(d,)`` shared by all hills, or ``(m, d)``) and heights :math:`h_j` in
    kJ/mol.  The hills are fixed during a run: metadynamics round by round
    deposits hills between runs with :meth:`added` and rebuilds the force
    (a new force, ``Context.reinitialize(preserveState=True)``).  ``m = 0`` is
    allowed (zero energy).

    Parameters
    ----------
    centres : array_like, shape (m, d)
    widths : array_like, shape (d,) or (m, d)
    heights : array_like, shape (m,)
    """

    __jit_unused_properties__ = ["n_hills"]

    def __init__(self, centres: Any, widths: Any, heights: Any) -> None:
        c = np.asarray(centres, dtype=np.float64)
        w = np.asarray(widths, dtype=np.float64)
        h = np.asarray(heights, dtype=np.float64).reshape(-1)
        if c.ndim != 2:
            raise LssError(f"Gaussian centres must be an (m, d) array, got shape {c.shape}")
        m, d = c.shape
        super().__init__(d)
        if w.ndim == 1:
            w = np.broadcast_to(w, (m, d)) if len(w) == d else w
        if w.shape != (m, d) or len(h) != m:
            raise LssError(f"{m} Gaussians in {d} dimensions need widths of shape ({d},) or ({m}, {d}) and "
                           f"{m} heights, got {np.shape(widths)} and {np.shape(heights)}")
        if not (np.isfinite(c).all() and np.isfinite(w).all() and np.isfinite(h).all()) or (w <= 0).any():
            raise LssError("Gaussian centres, widths and heights must be finite, with widths > 0")
        self.register_buffer("centres", torch.as_tensor(c.copy()))
        self.register_buffer("widths", torch.as_tensor(np.array(w)))
        self.register_buffer("heights", torch.as_tensor(h.copy()))

    @classmethod
    def empty(cls, n_dim: int) -> "GaussianSum":
        """A sum of no hills in ``n_dim`` dimensions (zero energy): the start of a deposition."""
        return cls(np.zeros((0, int(n_dim))), np.zeros((0, int(n_dim))), np.zeros(0))

    @property
    def n_hills(self) -> int:
        return int(self.heights.shape[0])

    def added(self, centres: Any, widths: Any, heights: Any) -> "GaussianSum":
        """A new sum with these hills appended (``self`` is unchanged).

        ``centres`` ``(k, d)`` (or one ``(d,)``), ``widths`` ``(d,)`` or
        ``(k, d)``, ``heights`` a scalar or ``(k,)`` kJ/mol.
        """
        c = np.atleast_2d(np.asarray(centres, dtype=np.float64))
        k = len(c)
        h = np.broadcast_to(np.asarray(heights, dtype=np.float64), (k,)) if np.ndim(heights) == 0 else heights
        new = GaussianSum(c, widths, h)  # checks the new hills alone
        if new.n_dim != self.n_dim:
            raise LssError(f"cannot add {new.n_dim}-dimensional hills to a {self.n_dim}-dimensional Gaussian sum")
        return GaussianSum(np.concatenate([self.centres.numpy(), new.centres.numpy()]),
                           np.concatenate([self.widths.numpy(), new.widths.numpy()]),
                           np.concatenate([self.heights.numpy(), new.heights.numpy()]))

    def forward(self, s: Tensor, params: List[Tensor]) -> Tensor:
        x = self._check(s).unsqueeze(-2)  # (..., 1, d) against (m, d)
        u = (x - self.centres) / self.widths
        return (self.heights * torch.exp(-0.5 * (u * u).sum(-1))).sum(-1)
