r"""Conditional Wasserstein GAN (cWGAN) decoder of the latent space simulator (LSS).

The decoder :math:`\mathcal D` of the LSS (Sidky, Chen & Ferguson 2020,
Sec. 2.3) generates molecular configurations :math:`x` consistent with a
point :math:`\psi` of the latent space.  A generator :math:`G` maps the
latent coordinates and Gaussian noise to coordinates,

.. math:: x = G(\psi \oplus z), \qquad z \sim \mathcal N(0, 1)^d,

and a critic :math:`C` scores ``(configuration, latent)`` pairs.  They are
trained adversarially on the Wasserstein loss of the paper's Eq. 6 with the
Lipschitz constraint enforced by a gradient penalty (WGAN-GP, Gulrajani et
al. 2017), the latent coordinates conditioning both networks:

.. math::

    \mathcal L_C &= \mathbb E\,[C(G(\psi \oplus z), \psi)] - \mathbb E\,[C(x, \psi)]
        + \lambda\, \mathbb E\,\bigl[(\lVert \nabla_{\hat x} C(\hat x, \psi) \rVert_2 - 1)^2\bigr],
        \qquad \hat x = \epsilon x + (1 - \epsilon) G(\psi \oplus z),\ \epsilon \sim U[0, 1],

    \mathcal L_G &= -\mathbb E\,[C(G(\psi \oplus z), \psi)],

expectations over training pairs :math:`(\psi(x_\gamma), x_\gamma)` and
noise.  The penalty's gradient is taken with respect to the configuration
only (the condition is held fixed), per sample.

Units and normalisation
-----------------------
Configurations are the Cartesian coordinates (nm) of a fixed set of
``n_atoms`` atoms, aligned onto a reference structure (see
:class:`lss_engine.decoder_data.DecoderDataset`).  Both networks see
standardised values: each of the ``3 n_atoms`` coordinates and each latent
coordinate is shifted by its mean and divided by its standard deviation
over the training frames (:meth:`CWGANDecoder.fit_normalization`; buffers
``coord_shift``, ``coord_scale``, ``latent_shift``, ``latent_scale``,
``reference``, ``norm_fitted``).  The generator's linear output is in those
standardised units; :meth:`~CWGANDecoder.decode` returns nm.

Architecture defaults follow the paper's Trp-cage decoder: generator and
critic with three hidden layers of 200 Swish units, 50-dimensional noise.
The optimisers follow Gulrajani et al. (the paper does not name them):
Adam with :math:`\beta = (0.5, 0.9)`, :math:`\lambda = 10` and
``n_critic = 5`` critic updates per generator update.

Two additions to the paper's recipe
-----------------------------------
Both are off by default here and on in :class:`lss_engine.pipeline.DecoderSettings`
(measured on alanine dipeptide by ``benchmarks/decoder_ala2.py``):

* **Critic features** (``critic_distances``, ``critic_pairs``, ``critic_torsions``):
  the critic sees, besides the aligned coordinates, interatomic distances
  (standardised) and :math:`(\sin\theta, \cos\theta)` of chosen dihedral angles.
  These are functions of the coordinates, so the game and its optimum are
  unchanged, and the gradient penalty still acts on the coordinates (through
  the features); but bond lengths, the molecule's size and backbone torsions
  become easy for the critic to see, hence for the generator to get right.
  All :math:`n(n-1)/2` pairs make the critic's cost grow as the square of the
  atom count (``benchmarks/critic_cost.py``); the pipeline therefore gives it
  the pairs chosen by :func:`select_critic_pairs` - within a cutoff in the
  training mean structure, plus the bonded neighbours - whose number grows
  linearly.  Both kernels are :mod:`lss_engine.features.geometry`'s.
* **Weight averaging** (``ema_decay``): decoding uses an exponential moving
  average of the generator's weights, updated after every generator step
  (Yazıcı et al. 2019).  A GAN's iterates orbit the equilibrium; their
  average sits nearer to it, and the epoch-to-epoch noise of the structure
  score (hence the luck of picking the best epoch) shrinks.

Training protocol (called by :func:`lss_engine.train.fit`)
----------------------------------------------------------
The model implements the loop's multi-optimiser protocol::

    opts = model.configure_optimizers(lr, weight_decay)   # {"critic": Adam, "generator": Adam}
    metrics = model.training_step((psi, x), opts)         # one critic update per batch;
                                                          # a generator update every n_critic-th
    score = model.validation_score(val)                   # -structure distance in nm, higher is better

Each training batch makes one critic update (so successive critic updates
see different real frames, as in Gulrajani et al.'s algorithm); every
``n_critic``-th batch is followed by one generator update at that batch's
latent points with fresh noise.  The count of critic updates is the buffer
``critic_steps`` (part of the state, so checkpoints resume exactly).  The
validation score is the negative :meth:`~CWGANDecoder.structure_distance`:
the held-out latent points are decoded (fixed noise seed) and the
distributions of all interatomic distances are compared with the real
frames' by 1-D Wasserstein distances, within quantile bins of each latent
coordinate - a structure-quality score, not the adversarial loss, whose
value says little about sample quality.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .._helpers import fresh_seed, positive_float as _positive, positive_int as _whole
from ..errors import LssError, NonFiniteError
from ..features import geometry
from .base import Network
from .mlp import EVAL_CHUNK, as_input, dtype_name, evaluating, make_mlp, parse_dtype

__all__ = ["CWGANDecoder", "binned_distance_w1", "select_critic_pairs", "torsion_sin_cos"]

#: validation decodes at most this many held-out frames (evenly spaced)
_VAL_FRAMES = 20000
#: seed of the noise the validation decodes with (the score is then a function of the weights)
_VAL_SEED = 20200  # any fixed value


def _torsions(torsions: Any, n_atoms: int) -> tuple[tuple[int, int, int, int], ...]:
    """Validated ``(i, j, k, l)`` atom quadruplets (positions among the decoded atoms)."""
    try:
        quads = tuple(tuple(int(a) for a in t) for t in torsions)
    except (TypeError, ValueError):
        raise LssError(f"critic_torsions must be a sequence of 4 atom indices each, got {torsions!r}") from None
    for t in quads:
        if len(t) != 4 or len(set(t)) != 4 or min(t) < 0 or max(t) >= n_atoms:
            raise LssError(f"each critic torsion must be 4 distinct atom indices in [0, {n_atoms}), got {list(t)}")
    return quads


def _atom_pairs(pairs: Any, n_atoms: int) -> tuple[tuple[int, int], ...]:
    """Validated atom pairs as sorted, distinct ``(i, j)`` with ``i < j`` (positions among the decoded atoms)."""
    try:
        raw = [tuple(int(a) for a in p) for p in pairs]
    except (TypeError, ValueError):
        raise LssError(f"critic_pairs must be a sequence of 2 atom indices each, got {pairs!r}") from None
    for p in raw:
        if len(p) != 2 or p[0] == p[1] or min(p) < 0 or max(p) >= n_atoms:
            raise LssError(f"each critic pair must be 2 distinct atom indices in [0, {n_atoms}), got {list(p)}")
    return tuple(sorted({(min(p), max(p)) for p in raw}))


def select_critic_pairs(reference: Any, cutoff: float, bonded: Any = ()) -> np.ndarray:
    """``(n, 2)`` atom pairs ``i < j`` for the critic: closer than ``cutoff`` (nm) in ``reference``, plus ``bonded``.

    ``reference`` is an ``(n_atoms, 3)`` structure in nm (the mean of the
    aligned training frames); ``bonded`` are pairs always kept whatever their
    distance, e.g. the 1-2, 1-3 and 1-4 neighbours of the topology's bonds
    (:func:`lss_engine.structure.bonded_pairs`).  At a fixed density of atoms
    the count grows linearly with the atoms, where all pairs grow as their
    square.  Sorted (``np.lexsort`` order), without repeats.
    """
    ref = torch.as_tensor(np.asarray(reference, dtype=np.float64))
    if ref.ndim != 2 or ref.shape[1] != 3 or not bool(torch.isfinite(ref).all()):
        raise LssError(f"the reference structure must be a finite (n_atoms, 3) array, got shape {tuple(ref.shape)}")
    cutoff = _positive(cutoff, "cutoff")
    n_atoms = ref.shape[0]
    i, j = torch.triu_indices(n_atoms, n_atoms, 1)
    near = geometry.distances(ref[None], i, j)[0] < cutoff
    pairs = {(int(a), int(b)) for a, b in zip(i[near].tolist(), j[near].tolist())}
    pairs.update(_atom_pairs(np.asarray(bonded, dtype=np.int64).reshape(-1, 2).tolist(), n_atoms))
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def torsion_sin_cos(x: torch.Tensor, quads: torch.Tensor) -> torch.Tensor:
    r"""``(N, 2 n)``: :math:`\sin\theta` and :math:`\cos\theta` of the dihedral angles ``quads`` ``(n, 4)``.

    :func:`lss_engine.features.geometry.dihedral_sin_cos` (IUPAC sign, as
    ``mdtraj.compute_dihedrals``; a tiny floor keeps the gradient finite for
    collinear atoms).  ``x`` is ``(N, n_atoms, 3)``.
    """
    return geometry.dihedral_sin_cos(x, quads, eps=1e-12)


def binned_distance_w1(
    latent: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, n_bins: int = 4, coordinates: bool = False
) -> torch.Tensor:
    r"""Mean 1-D Wasserstein distance of interatomic distances, within latent quantile bins.

    For each latent coordinate :math:`j`, the frames are sorted by
    :math:`\psi_j` and cut into ``n_bins`` equally full bins; within a bin,
    for every atom pair :math:`(a, b)`, the distances
    :math:`\lVert x_a - x_b\rVert` of the real and of the generated frames
    are compared by the Wasserstein-1 distance of their empirical
    distributions (equal counts: the mean absolute difference of the sorted
    values).  The result is the mean over coordinates, bins and pairs, in
    the units of the coordinates.  ``n_bins=1`` compares the marginal
    distributions; more bins make the score sensitive to how the structure
    depends on :math:`\psi`.

    ``coordinates``: compare the ``3 n_atoms`` Cartesian coordinates as well,
    as further 1-D distributions (for frames not aligned, whose absolute
    positions matter: ``alignment="none"``); always done for a single atom,
    which has no pair distance.

    Parameters
    ----------
    latent
        ``(N, D)`` latent points the frames belong to.
    real, fake
        ``(N, n_atoms, 3)`` real and generated frames, row by row at the same
        latent point.

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    n_atoms = real.shape[1]
    i, j = torch.triu_indices(n_atoms, n_atoms, 1, device=real.device)
    d_real = torch.linalg.vector_norm(real[:, i] - real[:, j], dim=-1)
    d_fake = torch.linalg.vector_norm(fake[:, i] - fake[:, j], dim=-1)
    if coordinates or n_atoms < 2:
        d_real = torch.cat([d_real, real.reshape(len(real), -1)], dim=1)
        d_fake = torch.cat([d_fake, fake.reshape(len(fake), -1)], dim=1)
    parts = []
    for dim in range(latent.shape[1]):
        order = torch.argsort(latent[:, dim], stable=True)
        for rows in torch.tensor_split(order, n_bins):
            if len(rows):
                gap = torch.sort(d_real[rows], dim=0).values - torch.sort(d_fake[rows], dim=0).values
                parts.append(gap.abs().mean())
    return torch.stack(parts).mean()


def _as_pairs(data: Any) -> tuple[Any, Any]:
    """``(latent, coords)`` of a :class:`~lss_engine.decoder_data.DecoderDataset` or a tuple."""
    if callable(getattr(data, "arrays", None)):
        return data.arrays()
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    raise LssError(f"expected a DecoderDataset or a tuple (latent, coords), got {type(data).__name__}")


class CWGANDecoder(Network):
    r"""Conditional WGAN-GP decoder :math:`\psi \mapsto x` (see the module docs).

    Parameters
    ----------
    n_latent
        :math:`D`, latent dimensions (the condition).
    n_atoms
        Atoms per generated configuration (outputs: ``3 n_atoms`` coordinates).
    noise_dim
        :math:`d`, Gaussian noise dimensions fed to the generator (paper: 50).
    hidden
        Hidden widths of the generator (paper: three layers of 200).
    critic_hidden
        Hidden widths of the critic (default: ``hidden``).
    activation
        Hidden activation, a key of :data:`~lss_engine.models.mlp.ACTIVATIONS`
        (paper: Swish).
    gp_weight
        :math:`\lambda` of the gradient penalty.
    n_critic
        Critic updates per generator update.
    betas
        Adam's :math:`(\beta_1, \beta_2)` for both optimisers.
    val_bins
        Quantile bins per latent coordinate in the validation score
        (:func:`binned_distance_w1`).
    min_coord_std
        Floor (nm) of the per-coordinate standard deviations of the
        normalisation (an atom that never moves after alignment).
    critic_distances
        Also show the critic interatomic distances (standardised by their
        training mean and spread): all pairs, or those of ``critic_pairs``.
        Internal geometry - bond lengths, the molecule's size - is then a
        linear read-out for the critic rather than something it must learn
        from aligned Cartesians.
    critic_pairs
        With ``critic_distances``: the ``(i, j)`` atom pairs whose distances
        the critic sees, e.g. :func:`select_critic_pairs` of the training
        data (kept in the config, so a saved model reloads without them being
        recomputed); ``None`` (and configs written before the option
        existed): all ``n_atoms (n_atoms - 1) / 2`` pairs.
    critic_torsions
        ``(i, j, k, l)`` atom quadruplets (positions among the decoded atoms)
        whose dihedral angles the critic also sees, as sine and cosine
        (:func:`torsion_sin_cos`); e.g. all proper torsions of the decoded
        atoms (:func:`lss_engine.structure.proper_torsions`).
    alignment
        How the training frames were superposed (:func:`lss_engine.decoder_data.choose_alignment`):
        ``"kabsch"`` (onto a mean structure) or ``"none"`` (absolute
        positions; the validation score then also compares the Cartesian
        coordinates).  A config without it (older bundles) means ``"kabsch"``.
    ema_decay
        :math:`\beta` of an exponential moving average of the generator's
        weights, used for decoding and validation (Yazıcı et al. 2019: the
        average of a GAN's oscillating iterates samples better than the
        last iterate); ``0`` decodes with the trained weights themselves.
    dtype
        ``"float32"`` or ``"float64"`` parameters (default: torch's default).
    """

    def __init__(
        self,
        n_latent: int,
        n_atoms: int,
        noise_dim: int = 50,
        hidden: Sequence[int] = (200, 200, 200),
        critic_hidden: Sequence[int] | None = None,
        activation: str = "swish",
        gp_weight: float = 10.0,
        n_critic: int = 5,
        betas: Sequence[float] = (0.5, 0.9),
        val_bins: int = 4,
        min_coord_std: float = 1e-4,
        critic_distances: bool = False,
        critic_pairs: Sequence[Sequence[int]] | None = None,
        critic_torsions: Sequence[Sequence[int]] = (),
        ema_decay: float = 0.0,
        alignment: str = "kabsch",
        dtype: "str | torch.dtype | None" = None,
    ):
        super().__init__()
        self.n_latent = _whole(n_latent, "n_latent")
        self.n_atoms = _whole(n_atoms, "n_atoms")
        self.noise_dim = _whole(noise_dim, "noise_dim")
        self.hidden = tuple(int(h) for h in hidden)
        self.critic_hidden = self.hidden if critic_hidden is None else tuple(int(h) for h in critic_hidden)
        self.activation = str(activation)
        self.gp_weight = _positive(gp_weight, "gp_weight", allow_zero=True)
        self.n_critic = _whole(n_critic, "n_critic")
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise LssError(f"betas must be two numbers in [0, 1), got {betas!r}")
        self.betas = betas
        self.val_bins = _whole(val_bins, "val_bins")
        self.min_coord_std = _positive(min_coord_std, "min_coord_std")
        self.critic_distances = bool(critic_distances)
        if critic_pairs is not None and not self.critic_distances:
            raise LssError("critic_pairs needs critic_distances=True")
        self.critic_pairs = None if critic_pairs is None else _atom_pairs(critic_pairs, self.n_atoms)
        if self.critic_pairs == ():
            raise LssError("critic_pairs is empty; pass critic_distances=False for no distances")
        self.critic_torsions = _torsions(critic_torsions, self.n_atoms)
        self.ema_decay = _positive(ema_decay, "ema_decay", allow_zero=True)
        self.alignment = str(alignment)
        if self.alignment not in ("kabsch", "none"):
            raise LssError(f"alignment must be 'kabsch' or 'none', got {alignment!r}")
        if self.ema_decay >= 1.0:
            raise LssError(f"ema_decay must be in [0, 1), got {ema_decay!r}")
        torch_dtype = parse_dtype(dtype)
        n_coords = 3 * self.n_atoms
        if not self.critic_distances:
            pair_index = torch.zeros((2, 0), dtype=torch.int64)
        elif self.critic_pairs is None:
            pair_index = torch.triu_indices(self.n_atoms, self.n_atoms, 1)
        else:
            pair_index = torch.as_tensor(self.critic_pairs, dtype=torch.int64).T.contiguous()
        n_pairs = pair_index.shape[1]
        n_critic_in = n_coords + n_pairs + 2 * len(self.critic_torsions) + self.n_latent
        self.generator = make_mlp(self.n_latent + self.noise_dim, self.hidden, n_coords, self.activation).to(
            torch_dtype
        )
        self.critic = make_mlp(n_critic_in, self.critic_hidden, 1, self.activation).to(torch_dtype)
        if self.ema_decay > 0:
            self.generator_average = copy.deepcopy(self.generator).requires_grad_(False)
        # index tensors follow from the config: on the model's device, not in its state
        self.register_buffer("pair_index", pair_index, persistent=False)
        self.register_buffer("torsion_index", torch.as_tensor(self.critic_torsions, dtype=torch.int64).reshape(-1, 4),
                             persistent=False)
        self.register_buffer("distance_shift", torch.zeros(n_pairs, dtype=torch_dtype))
        self.register_buffer("distance_scale", torch.ones(n_pairs, dtype=torch_dtype))
        self.register_buffer("latent_shift", torch.zeros(self.n_latent, dtype=torch_dtype))
        self.register_buffer("latent_scale", torch.ones(self.n_latent, dtype=torch_dtype))
        self.register_buffer("coord_shift", torch.zeros(n_coords, dtype=torch_dtype))
        self.register_buffer("coord_scale", torch.ones(n_coords, dtype=torch_dtype))
        self.register_buffer("reference", torch.zeros(self.n_atoms, 3, dtype=torch_dtype))
        self.register_buffer("norm_fitted", torch.tensor(False))
        self.register_buffer("critic_steps", torch.tensor(0, dtype=torch.int64))

    # -- config ------------------------------------------------------------------
    def config(self) -> dict:
        """Constructor arguments (JSON); ``from_config(config())`` + ``load_state_dict`` rebuild the model."""
        return {
            "n_latent": self.n_latent, "n_atoms": self.n_atoms, "noise_dim": self.noise_dim,
            "hidden": list(self.hidden), "critic_hidden": list(self.critic_hidden),
            "activation": self.activation, "gp_weight": self.gp_weight, "n_critic": self.n_critic,
            "betas": list(self.betas), "val_bins": self.val_bins, "min_coord_std": self.min_coord_std,
            "critic_distances": self.critic_distances,
            "critic_pairs": None if self.critic_pairs is None else [list(p) for p in self.critic_pairs],
            "critic_torsions": [list(t) for t in self.critic_torsions],
            "ema_decay": self.ema_decay, "alignment": self.alignment, "dtype": dtype_name(self.latent_shift.dtype),
        }

    # -- normalisation ---------------------------------------------------------------
    def fit_normalization(self, data: Any) -> "CWGANDecoder":
        """Set the normalisation (and ``reference``) from training pairs; returns ``self``.

        Parameters
        ----------
        data
            A :class:`~lss_engine.decoder_data.DecoderDataset` (its frames and
            its reference structure) or a tuple ``(latent, coords)`` of an
            ``(n, D)`` and an ``(n, n_atoms, 3)`` array of aligned coordinates
            in nm (the reference is then their mean).

        Shift = mean, scale = population standard deviation, computed in
        float64; coordinate scales are floored at ``min_coord_std``.
        """
        latent, coords = _as_pairs(data)
        psi = self._check_latent(latent, "latent").double()
        x = self._check_coords(coords, len(psi)).double()
        if len(psi) < 2:
            raise LssError("need at least two frames to fit the normalisation")
        psi_scale = psi.std(dim=0, unbiased=False)
        if bool((psi_scale <= 1e-12 * psi.mean(dim=0).abs().clamp_min(1.0)).any()):
            raise LssError("a latent coordinate is constant in the data; cannot normalise it")
        flat = x.reshape(len(x), -1)
        reference = getattr(data, "reference", None)
        reference = x.mean(dim=0) if reference is None else torch.as_tensor(np.asarray(reference), dtype=x.dtype)
        if tuple(reference.shape) != (self.n_atoms, 3):
            raise LssError(f"the reference structure must have shape ({self.n_atoms}, 3), got {tuple(reference.shape)}")
        with torch.no_grad():
            values = {
                "latent_shift": psi.mean(dim=0), "latent_scale": psi_scale,
                "coord_shift": flat.mean(dim=0),
                "coord_scale": flat.std(dim=0, unbiased=False).clamp_min(self.min_coord_std),
                "reference": reference,
            }
            if self.critic_distances:
                dist = self._pair_distances(x)
                values["distance_shift"] = dist.mean(dim=0)
                values["distance_scale"] = dist.std(dim=0, unbiased=False).clamp_min(self.min_coord_std)
            for name, value in values.items():
                buf = getattr(self, name)
                buf.copy_(value.to(device=buf.device, dtype=buf.dtype))
            self.norm_fitted.fill_(True)
        return self

    def _check_latent(self, latent: Any, what: str = "latent") -> torch.Tensor:
        if not isinstance(latent, torch.Tensor):
            latent = np.asarray(latent)
            if not np.issubdtype(latent.dtype, np.number):
                raise LssError(f"{what} must be numeric, got dtype {latent.dtype}")
        if latent.ndim != 2 or latent.shape[1] != self.n_latent:
            raise LssError(f"{what} must have shape (n_frames, {self.n_latent}), got {tuple(latent.shape)}")
        psi = as_input(latent, self.latent_shift)
        if not bool(torch.isfinite(psi).all()):
            raise NonFiniteError(f"{what} contains NaN or Inf")
        return psi

    def _check_coords(self, coords: Any, n_frames: int) -> torch.Tensor:
        shape = tuple(getattr(coords, "shape", np.shape(coords)))
        if shape not in ((n_frames, self.n_atoms, 3), (n_frames, 3 * self.n_atoms)):
            raise LssError(f"coordinates must have shape ({n_frames}, {self.n_atoms}, 3), got {shape}")
        x = as_input(coords, self.coord_shift)
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError("the coordinates contain NaN or Inf")
        return x.reshape(n_frames, self.n_atoms, 3)

    def _latent_in(self, psi: torch.Tensor) -> torch.Tensor:
        return (psi - self.latent_shift) / self.latent_scale

    def _coords_in(self, x: torch.Tensor) -> torch.Tensor:
        return (x.reshape(len(x), -1) - self.coord_shift) / self.coord_scale

    def _coords_out(self, y: torch.Tensor) -> torch.Tensor:
        return (y * self.coord_scale + self.coord_shift).reshape(len(y), self.n_atoms, 3)

    def _require_fitted(self) -> None:
        if not bool(self.norm_fitted):
            raise LssError("the decoder's normalisation is not fitted: call fit_normalization(train) before use")

    def _pair_distances(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, n_pairs)`` distances (nm) of the critic's atom pairs; ``x`` is ``(N, n_atoms, 3)`` nm."""
        return geometry.distances(x, self.pair_index[0], self.pair_index[1], eps=1e-12)

    # -- the networks (standardised units) ---------------------------------------------
    def generate(self, u: torch.Tensor, noise: torch.Tensor, averaged: bool = False) -> torch.Tensor:
        """Generator: standardised latent ``(N, D)`` + noise ``(N, d)`` -> standardised ``(N, 3 n_atoms)``.

        ``averaged``: use the exponential moving average of the generator's
        weights (when ``ema_decay > 0``; :meth:`decode` does), not the weights
        being trained.
        """
        net = self.generator_average if averaged and self.ema_decay > 0 else self.generator
        return net(torch.cat([u, noise], dim=1))

    def critic_input(self, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """What the critic sees: standardised coordinates, then (if enabled) standardised
        pair distances and sin/cos of the critic torsions, then the latent condition."""
        parts = [y]
        x = self._coords_out(y) if self.critic_distances or self.critic_torsions else None
        if self.critic_distances:
            parts.append((self._pair_distances(x) - self.distance_shift) / self.distance_scale)
        if self.critic_torsions:
            parts.append(torsion_sin_cos(x, self.torsion_index))
        parts.append(u)
        return torch.cat(parts, dim=1)

    def score(self, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Critic: standardised coordinates ``(N, 3 n_atoms)`` and latent ``(N, D)`` -> ``(N,)``."""
        return self.critic(self.critic_input(y, u)).squeeze(1)

    @torch.no_grad()
    def _update_average(self) -> None:
        r"""One step of the generator's weight average, :math:`\bar w \leftarrow \beta \bar w + (1-\beta) w`,
        with :math:`\beta = \min(\text{ema\_decay}, (1 + t)/(10 + t))` at generator step :math:`t`
        (a short memory while the weights move fast)."""
        t = int(self.critic_steps) // self.n_critic
        beta = min(self.ema_decay, (1.0 + t) / (10.0 + t))
        for avg, w in zip(self.generator_average.parameters(), self.generator.parameters()):
            avg.lerp_(w, 1.0 - beta)

    def gradient_penalty(
        self, real: torch.Tensor, fake: torch.Tensor, u: torch.Tensor, eps: torch.Tensor | None = None
    ) -> torch.Tensor:
        r"""Gradient penalty :math:`\mathbb E[(\lVert\nabla_{\hat y} C(\hat y, u)\rVert_2 - 1)^2]`.

        :math:`\hat y = \epsilon y + (1-\epsilon)\tilde y` between real :math:`y` and generated :math:`\tilde y`.

        In standardised units: ``real`` and ``fake`` ``(N, 3 n_atoms)``, ``u``
        ``(N, D)``; ``eps`` ``(N, 1)`` (default :math:`U[0, 1)` from torch's
        global RNG).  Differentiable (``create_graph``) for the critic update.
        """
        if eps is None:
            eps = torch.rand((len(real), 1), dtype=real.dtype, device=real.device)
        mixed = (eps * real + (1.0 - eps) * fake).detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.score(mixed, u).sum(), mixed, create_graph=True)
        return (torch.linalg.vector_norm(grad, dim=1) - 1.0).square().mean()

    def forward(self, latent: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Configurations ``(N, n_atoms, 3)`` in nm at latent points ``(N, D)`` (noise: torch's RNG if not given)."""
        u = self._latent_in(latent)
        if noise is None:
            noise = torch.randn((len(u), self.noise_dim), dtype=u.dtype, device=u.device)
        return self._coords_out(self.generate(u, noise, averaged=True))

    # -- training ----------------------------------------------------------------------
    def configure_optimizers(self, lr: float, weight_decay: float = 0.0) -> dict[str, torch.optim.Optimizer]:
        """Adam for the critic and for the generator, with ``betas``."""
        return {
            "critic": torch.optim.Adam(self.critic.parameters(), lr=lr, betas=self.betas, weight_decay=weight_decay),
            "generator": torch.optim.Adam(
                self.generator.parameters(), lr=lr, betas=self.betas, weight_decay=weight_decay
            ),
        }

    def training_step(self, batch: Any, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, float]:
        """One critic update, plus a generator update every ``n_critic``-th call.

        Returns ``loss`` (the critic loss :math:`\\mathcal L_C`), ``wasserstein``
        (the critic's estimate :math:`\\mathbb E C(x) - \\mathbb E C(G)`),
        ``gradient_penalty`` and, on generator steps, ``generator_loss``; a
        non-finite gradient skips the update and makes ``loss`` NaN (the loop
        then restores the epoch's start).
        """
        self._require_fitted()
        latent, coords = batch
        psi = self._check_latent(latent)
        u = self._latent_in(psi)
        y = self._coords_in(self._check_coords(coords, len(psi)))
        noise = torch.randn((len(u), self.noise_dim), dtype=u.dtype, device=u.device)
        with torch.no_grad():
            fake = self.generate(u, noise)
        c_real, c_fake = self.score(y, u).mean(), self.score(fake, u).mean()
        gp = self.gradient_penalty(y, fake, u)
        loss = c_fake - c_real + self.gp_weight * gp
        metrics = {"loss": float(loss.detach()), "wasserstein": float((c_real - c_fake).detach()),
                   "gradient_penalty": float(gp.detach())}
        if not self._update(loss, self.critic, optimizers["critic"]):
            metrics["loss"] = math.nan
            return metrics
        self.critic_steps += 1
        if int(self.critic_steps) % self.n_critic == 0:
            self.critic.requires_grad_(False)
            try:
                noise = torch.randn((len(u), self.noise_dim), dtype=u.dtype, device=u.device)
                g_loss = -self.score(self.generate(u, noise), u).mean()
                ok = self._update(g_loss, self.generator, optimizers["generator"])
                if ok and self.ema_decay > 0:
                    self._update_average()
            finally:
                self.critic.requires_grad_(True)
            metrics["generator_loss"] = float(g_loss.detach()) if ok else math.nan
        return metrics

    @staticmethod
    def _update(loss: torch.Tensor, net: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
        """Backward and step; ``False`` (no step) for a non-finite loss or gradient."""
        if not bool(torch.isfinite(loss)):
            return False
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        if grads and not bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))):
            return False
        optimizer.step()
        return True

    def structure_distance(self, latent: Any, coords: Any, seed: int = _VAL_SEED) -> float:
        """:func:`binned_distance_w1` (nm) of frames decoded at ``latent`` vs the real ``coords``.

        ``coords`` are ``(N, n_atoms, 3)`` aligned coordinates in nm; one
        configuration is decoded per latent point, with noise from ``seed``.
        """
        psi = self._check_latent(latent)
        real = self._check_coords(coords, len(psi))
        fake = torch.as_tensor(self.decode(psi, seed=seed), device=real.device, dtype=real.dtype)
        return float(binned_distance_w1(psi, real, fake, self.val_bins, coordinates=self.alignment == "none"))

    def validation_score(self, data: Any) -> float:
        """``-structure_distance`` (nm) on held-out pairs (at most 20000, evenly spaced); higher is better."""
        latent, coords = _as_pairs(data)
        n = len(latent)
        if n > _VAL_FRAMES:
            rows = np.linspace(0, n - 1, _VAL_FRAMES).round().astype(np.int64)
            latent, coords = latent[rows], coords[rows]
        return -self.structure_distance(latent, coords)

    # -- decoding ------------------------------------------------------------------------
    def decode(
        self, latent: Any, seed: int | None = None, n_samples_per_point: int = 1, batch_size: int = EVAL_CHUNK
    ) -> np.ndarray:
        """Configurations for latent points, in nm, aligned like the training frames.

        Parameters
        ----------
        latent
            ``(N, D)`` latent coordinates.
        seed
            Seed of the noise (a private ``torch.Generator`` on the model's
            device; torch's global RNG is untouched).  ``None``: fresh entropy.
            The same inputs, seed and ``batch_size`` give the same output.
        n_samples_per_point
            Configurations per latent point.
        batch_size
            Points generated per forward pass.

        Returns
        -------
        numpy.ndarray
            ``(N * n_samples_per_point, n_atoms, 3)``, the samples of point
            ``i`` in rows ``i * n_samples_per_point`` to ``(i + 1) * n_samples_per_point - 1``.
        """
        self._require_fitted()
        n_samples = _whole(n_samples_per_point, "n_samples_per_point")
        batch_size = _whole(batch_size, "batch_size")
        psi = self._check_latent(latent)
        if seed is None:
            seed = fresh_seed()
        gen = torch.Generator(device=psi.device).manual_seed(_whole(seed, "seed", minimum=0))
        if n_samples > 1:
            psi = psi.repeat_interleave(n_samples, dim=0)
        out = np.empty((len(psi), self.n_atoms, 3), dtype=dtype_name(psi.dtype))
        with evaluating(self):
            for a in range(0, len(psi), batch_size):
                u = self._latent_in(psi[a : a + batch_size])
                noise = torch.randn((len(u), self.noise_dim), generator=gen, dtype=u.dtype, device=u.device)
                out[a : a + len(u)] = self._coords_out(self.generate(u, noise, averaged=True)).cpu().numpy()
        return out
