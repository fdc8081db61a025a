r"""Mixture density network (MDN) propagator of the latent space simulator (LSS).

The propagator learns the transition density of latent coordinates
:math:`\psi \in \mathbb R^D` at the lag :math:`\tau` as a mixture of
:math:`C` Gaussians with diagonal covariances (LSS paper, Sidky, Chen &
Ferguson 2020, Eq. 5),

.. math::

    p_\tau(\psi_{t+\tau} \mid \psi_t)
      = \sum_{c=1}^{C} \alpha_c(\psi_t)\,
        \prod_{d=1}^{D} \mathcal N\bigl(\psi_{t+\tau,d};\ \mu_{cd}(\psi_t),\ \sigma_{cd}^2(\psi_t)\bigr),

whose weights :math:`\alpha_c = \operatorname{softmax}(\ell)_c`, means and
standard deviations come from one fully connected network
(:func:`~lss_engine.models.mlp.make_mlp`) with :math:`C(1 + 2D)` outputs
:math:`(\ell_c,\ m_{cd},\ s_{cd})`.  Training minimises the negative
log-likelihood of the time-lagged pairs (the paper's :math:`\mathcal L_\mathrm{MDN}`),

.. math::

    \mathcal L = -\frac1N \sum_{n} \log p_\tau(\psi^{(n)}_{t+\tau} \mid \psi^{(n)}_t),
    \qquad
    \log p = \operatorname{logsumexp}_c\Bigl[\log\alpha_c
      - \sum_d \Bigl(\frac{(y_d - \mu_{cd})^2}{2\sigma_{cd}^2} + \log\sigma_{cd}
      + \tfrac12\log 2\pi\Bigr)\Bigr],

evaluated with log-sum-exp.  The standard deviations have a smooth floor
``min_std`` (in the network's normalised units, below),

.. math:: \sigma_{cd} = \sqrt{e^{2 s_{cd}} + \sigma_\mathrm{min}^2}
          \quad(\log\sigma_{cd} = \tfrac12\operatorname{logaddexp}(2 s_{cd}, 2\log\sigma_\mathrm{min})),

so that no component collapses onto single training points.

Two formulations of the means
-----------------------------
``bounded=False`` (default)
    Coordinates are standardised, :math:`z = (\psi - \bar\psi)/s_\psi`
    (mean and standard deviation of the training frames), and the means are
    a residual :math:`\mu_c(z_t) = z_t + \Delta_c(z_t)`, unbounded; samples
    are not clipped.  Short lags then start from the identity map, and
    nothing piles up at the edges of the training range.
``bounded=True`` (the LSS reference code)
    Coordinates are min-max scaled to :math:`u = (\psi - \psi_\mathrm{min}) /
    (\psi_\mathrm{max} - \psi_\mathrm{min}) \in [0, 1]`, the means are
    :math:`\mu_c = \operatorname{sigmoid}(m_c)` and samples are clipped to
    :math:`[0, 1]`.  The likelihood is that of the unclipped mixture (as in
    the reference); the clipped mass of the Gaussian tails reaching beyond
    the bounds ends up *on* the bounds, see :meth:`MDNPropagator.at_bound_fraction`.

In both cases :meth:`~MDNPropagator.log_prob` and the scores are densities of
:math:`\psi` in the original units, :math:`\log p_\psi = \log p_z - \sum_d
\log s_d` (:math:`s_d` the scale of the normalisation), so the two
formulations have comparable scores.  The normalisation statistics live in
buffers (``norm_shift``, ``norm_scale``, ``data_min``, ``data_max``,
``norm_fitted``): ``config()`` + ``state_dict()`` rebuild the model exactly.

Training protocol (called by :func:`lss_engine.train.fit`)::

    model = MDNPropagator(n_dim=2, n_components=8).fit_normalization(train)
    loss = model.training_loss((x0, xt))   # mean NLL of the batch
    score = model.validation_score(val)    # -mean NLL per pair, higher is better
    MDNPropagator.from_config(model.config()).load_state_dict(model.state_dict())

Generation: :meth:`MDNPropagator.propagate` for in-memory runs, and
:meth:`MDNPropagator.sampler` (an :class:`MDNSampler`) to continue a run chunk
by chunk, as :func:`lss_engine.latent_sampling.sample_to_stores` does.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .._helpers import fresh_seed, positive_int, resolve_device
from ..errors import LssError, NonFiniteError
from .base import Network
from .mlp import EVAL_CHUNK, as_input, dtype_name, evaluating, iter_pairs, make_mlp, parse_dtype

__all__ = ["MDNPropagator", "MDNSampler", "mixture_log_prob"]

_LOG_2PI = math.log(2.0 * math.pi)
#: random numbers drawn per block of steps are capped at about this many values
_NOISE_BLOCK_VALUES = 1 << 21
_NOISE_BLOCK_STEPS = 256


def mixture_log_prob(
    y: torch.Tensor, log_weights: torch.Tensor, means: torch.Tensor, log_stds: torch.Tensor
) -> torch.Tensor:
    r"""Log density of a diagonal Gaussian mixture at ``y``.

    .. math::

        \log p(y) = \operatorname{logsumexp}_c \Bigl[\log\alpha_c - \sum_d \Bigl(
            \frac{(y_d - \mu_{cd})^2}{2\sigma_{cd}^2} + \log\sigma_{cd} + \tfrac12\log 2\pi\Bigr)\Bigr]

    Parameters
    ----------
    y
        ``(N, D)`` points.
    log_weights
        ``(N, C)`` normalised log mixture weights :math:`\log\alpha_c`.
    means, log_stds
        ``(N, C, D)`` :math:`\mu_{cd}` and :math:`\log\sigma_{cd}`.

    Returns
    -------
    torch.Tensor
        ``(N,)`` :math:`\log p(y)`.
    """
    scaled = (y.unsqueeze(1) - means) * torch.exp(-log_stds)
    log_comp = -0.5 * scaled.square().sum(-1) - log_stds.sum(-1) - 0.5 * means.shape[-1] * _LOG_2PI
    return torch.logsumexp(log_weights + log_comp, dim=-1)


def _seed_value(seed: int | None) -> int:
    if seed is None:
        return fresh_seed()
    return positive_int(seed, "seed", minimum=0)


# in-place activations for the sampling loop (same function as the module of that name)
_INPLACE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu_,
    "tanh": torch.tanh_,
    "sigmoid": torch.sigmoid_,
    "elu": lambda x: F.elu(x, inplace=True),
    "selu": lambda x: F.selu(x, inplace=True),
    "silu": lambda x: F.silu(x, inplace=True),
    "swish": lambda x: F.silu(x, inplace=True),
    "leaky_relu": lambda x: F.leaky_relu(x, inplace=True),
}


def quantile_knots(x: np.ndarray, n_knots: int, linear_weight: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    r"""Knots of the marginal Gaussianisation of ``(N, D)`` data, blended with standard scores.

    .. math:: z_d(x) = (1 - \lambda)\,\Phi^{-1}\bigl(F_d(x)\bigr) + \lambda\,\frac{x - \bar x_d}{s_d}

    with the empirical CDF :math:`F_d`, the data's mean :math:`\bar x_d` and
    standard deviation :math:`s_d`, and :math:`\lambda` = ``linear_weight``.
    The Gaussianising part gives narrow basins a width that Gaussian
    components resolve; the linear part keeps an empty gap :math:`\Delta x`
    of the data a barrier of width :math:`\lambda\,\Delta x / s_d` in
    :math:`z`.  (Pure Gaussianisation, :math:`\lambda = 0`, closes gaps:
    basins that MD never connects directly become neighbours in :math:`z` and
    Gaussian steps cross between them far too often.)

    The knots are the empirical quantiles :math:`x_{kd}` at ``n_knots``
    equally spaced levels :math:`p_k \in [0, 1]` (minimum and maximum
    included), with the levels kept in :math:`[\tfrac{1}{2N}, 1 -
    \tfrac{1}{2N}]` for :math:`\Phi^{-1}`.  Knots closer than
    :math:`10^{-6}` of the data's scale (ties) are spread apart so the map
    stays strictly increasing, also in float32.  Returns ``(K, D)`` ``x`` and ``z`` knots.
    """
    from scipy.special import ndtri

    n = len(x)
    levels = np.linspace(0.0, 1.0, n_knots)[:, None]
    knots_x = np.quantile(x, levels[:, 0], axis=0)  # (K, D)
    # at least 1e-6 of the scale between knots, so segments keep a width in float32 too
    scale = np.maximum(knots_x[-1] - knots_x[0], np.abs(knots_x).max(axis=0))
    step = 1e-6 * np.maximum(scale, 1e-12) * np.arange(n_knots)[:, None]
    knots_x = np.maximum.accumulate(knots_x - step, axis=0) + step
    gauss = ndtri(np.clip(levels, 0.5 / n, 1.0 - 0.5 / n))
    standard = (knots_x - x.mean(axis=0)) / x.std(axis=0)
    knots_z = (1.0 - linear_weight) * gauss + linear_weight * standard
    knots_z = np.maximum.accumulate(knots_z - step, axis=0) + step  # clipped levels stay increasing
    return knots_x, knots_z


def _piecewise_linear(x: torch.Tensor, knots_in: torch.Tensor, knots_out: torch.Tensor,
                      slope: bool = False) -> torch.Tensor:
    """Per-coordinate piecewise-linear map of ``(N, D)`` ``x`` through ``(K, D)`` knots, linear beyond the ends.

    Both knot arrays increase along ``K``, so swapping them gives the inverse.
    ``slope=True``: the ``(N, D)`` derivatives instead of the values.
    """
    k_in, k_out = knots_in.t().contiguous(), knots_out.t().contiguous()  # (D, K)
    xt = x.t().contiguous()  # (D, N)
    i = torch.searchsorted(k_in, xt).clamp_(1, k_in.shape[1] - 1)
    x0, x1 = k_in.gather(1, i - 1), k_in.gather(1, i)
    z0, z1 = k_out.gather(1, i - 1), k_out.gather(1, i)
    gradient = (z1 - z0) / (x1 - x0)
    return (gradient if slope else z0 + (xt - x0) * gradient).t()


class MDNPropagator(Network):
    r"""Mixture density network for :math:`p_\tau(\psi_{t+\tau} \mid \psi_t)` (see the module docs).

    Parameters
    ----------
    n_dim
        :math:`D`, the latent dimension (inputs and outputs).
    n_components
        :math:`C`, Gaussians in the mixture (the LSS paper used 8 for the
        four-well potential and 24 for Trp-cage).
    hidden
        Hidden layer widths (the paper: two layers of 100).
    activation
        Hidden activation, a key of :data:`~lss_engine.models.mlp.ACTIVATIONS`
        (the paper: ReLU).
    bounded
        ``False``: standardised coordinates, residual unbounded means, no
        clipping.  ``True``: the reference formulation - min-max scaling to
        :math:`[0, 1]`, sigmoid means, samples clipped to :math:`[0, 1]`.
    min_std
        Floor :math:`\sigma_\mathrm{min}` of the component standard
        deviations in normalised units (standard scores for
        ``bounded=False``, fractions of the data range for ``bounded=True``).
    dtype
        ``"float32"`` or ``"float64"`` parameters (default: torch's default).
    transform
        Map from :math:`\psi` to the network's coordinates for
        ``bounded=False``: ``"standard"`` (standard scores) or ``"quantile"``
        (marginal Gaussianisation, :math:`z_d = \Phi^{-1}(F_d(\psi_d))`
        with the empirical CDF :math:`F_d`, piecewise linear between
        ``n_knots`` quantiles, blended with standard scores by
        ``linear_weight``; see :func:`quantile_knots`).  ``"quantile"`` suits
        coordinates with sharp edges and empty gaps, such as an SRV
        coordinate that is nearly an indicator of two basins: narrow basins
        get a width Gaussian components can resolve, and a gap shrinks to a
        thin barrier, so the components no longer spread mass over it.
    n_knots
        Quantiles of the ``"quantile"`` transform (per coordinate).
    linear_weight
        :math:`\lambda` of :func:`quantile_knots`: the share of standard
        scores blended into the ``"quantile"`` map, so an empty gap keeps a
        width (a barrier for the Gaussian steps) in the network's coordinates.

    Notes
    -----
    Call :meth:`fit_normalization` with the training data before training:
    until then the normalisation is the identity (for ``bounded=True``: the
    data are taken to lie in :math:`[0, 1]` already).
    """

    def __init__(
        self,
        n_dim: int,
        n_components: int = 8,
        hidden: Sequence[int] = (100, 100),
        activation: str = "relu",
        bounded: bool = False,
        min_std: float = 1e-3,
        dtype: "str | torch.dtype | None" = None,
        transform: str = "standard",
        n_knots: int = 2048,
        linear_weight: float = 0.5,
    ):
        super().__init__()
        self.n_dim = positive_int(n_dim, "n_dim")
        self.n_components = positive_int(n_components, "n_components")
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = str(activation)
        if not isinstance(bounded, (bool, np.bool_)):
            raise LssError(f"bounded must be True or False, got {bounded!r}")
        self.bounded = bool(bounded)
        min_std = float(min_std)
        if not (math.isfinite(min_std) and min_std > 0):
            raise LssError(f"min_std must be a positive number, got {min_std!r}")
        self.min_std = min_std
        if transform not in ("standard", "quantile"):
            raise LssError(f"transform must be 'standard' or 'quantile', got {transform!r}")
        if bounded and transform != "standard":
            raise LssError("bounded=True uses its own min-max scaling; transform must be 'standard'")
        self.transform = str(transform)
        self.n_knots = positive_int(n_knots, "n_knots", minimum=3)
        linear_weight = float(linear_weight)
        if not 0.0 <= linear_weight <= 1.0:
            raise LssError(f"linear_weight must be in [0, 1], got {linear_weight!r}")
        self.linear_weight = linear_weight
        torch_dtype = parse_dtype(dtype)
        d, c = self.n_dim, self.n_components
        self.net = make_mlp(d, self.hidden, c * (1 + 2 * d), self.activation).to(torch_dtype)
        self.register_buffer("norm_shift", torch.zeros(d, dtype=torch_dtype))
        self.register_buffer("norm_scale", torch.ones(d, dtype=torch_dtype))
        self.register_buffer("data_min", torch.zeros(d, dtype=torch_dtype))
        self.register_buffer("data_max", torch.ones(d, dtype=torch_dtype))
        self.register_buffer("norm_fitted", torch.tensor(False))
        if self.transform == "quantile":
            # knots (x_k, z_k) of the monotone piecewise-linear map, identity until fitted
            z = torch.linspace(-4.0, 4.0, self.n_knots, dtype=torch_dtype).unsqueeze(1).repeat(1, d)
            self.register_buffer("knots_z", z.contiguous())
            self.register_buffer("knots_x", z.clone())

    # -- normalisation -------------------------------------------------------
    def reference_tensor(self) -> torch.Tensor:
        """The normalisation scale: its dtype and device are the model's."""
        return self.norm_scale

    def fit_normalization(self, data: Any) -> "MDNPropagator":
        r"""Set the normalisation from training data; returns ``self``.

        ``bounded=False``: shift = mean, scale = standard deviation (population);
        ``bounded=True``: shift = minimum, scale = maximum − minimum.  The
        data range (``data_min``, ``data_max``) is recorded in both cases.
        Statistics are computed in float64.

        Parameters
        ----------
        data
            A :class:`~lss_engine.data.TimeLaggedDataset` (both frames of all
            its pairs, with its normaliser applied), a tuple ``(x0, xt)``, an
            ``(n_frames, D)`` array or tensor, or a list of such arrays.
        """
        if hasattr(data, "batches") and hasattr(data, "pair_indices") or (
            isinstance(data, tuple) and len(data) == 2
        ):
            chunks = (part for pair in iter_pairs(data) for part in pair)
        elif isinstance(data, (list, tuple)):
            chunks = iter(data)
        else:
            chunks = iter([data])
        count, total, total_sq = 0, np.zeros(self.n_dim), np.zeros(self.n_dim)
        kept: list[np.ndarray] = []  # the frames, for the quantile transform
        lo, hi = np.full(self.n_dim, np.inf), np.full(self.n_dim, -np.inf)
        shift_guess = None
        for chunk in chunks:
            if isinstance(chunk, torch.Tensor):
                chunk = chunk.detach().cpu().numpy()
            x = np.asarray(chunk, dtype=np.float64)
            if x.ndim != 2 or x.shape[1] != self.n_dim:
                raise LssError(f"expected (n_frames, {self.n_dim}) data, got shape {x.shape}")
            if not len(x):
                continue
            if not np.isfinite(x).all():
                raise LssError("the data contain NaN or Inf")
            if shift_guess is None:
                shift_guess = x[0].copy()  # shifted sums: no cancellation for data far from 0
            xs = x - shift_guess
            count += len(x)
            total += xs.sum(axis=0)
            total_sq += np.square(xs).sum(axis=0)
            lo, hi = np.minimum(lo, x.min(axis=0)), np.maximum(hi, x.max(axis=0))
            if self.transform == "quantile":
                kept.append(x)
        if count < 2:
            raise LssError("need at least two frames to fit the normalisation")
        mean_s = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean_s**2, 0.0))
        if self.bounded:
            shift, scale = lo, hi - lo
        else:
            shift, scale = mean_s + shift_guess, std
        if np.any(scale <= 1e-12 * np.maximum(1.0, np.abs(shift))):
            raise LssError("a latent coordinate is constant in the data; cannot normalise it")
        with torch.no_grad():
            for name, value in (("norm_shift", shift), ("norm_scale", scale), ("data_min", lo), ("data_max", hi)):
                buf = getattr(self, name)
                buf.copy_(torch.as_tensor(value, dtype=buf.dtype))
            if self.transform == "quantile":
                knots_x, knots_z = quantile_knots(np.concatenate(kept), self.n_knots, self.linear_weight)
                self.knots_x.copy_(torch.as_tensor(knots_x, dtype=self.knots_x.dtype))
                self.knots_z.copy_(torch.as_tensor(knots_z, dtype=self.knots_z.dtype))
            self.norm_fitted.fill_(True)
        return self

    def _to_internal(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform == "quantile":
            return _piecewise_linear(x, self.knots_x, self.knots_z)
        return (x - self.norm_shift) / self.norm_scale

    def _from_internal(self, z: torch.Tensor) -> torch.Tensor:
        if self.transform == "quantile":
            return _piecewise_linear(z, self.knots_z, self.knots_x)
        return z * self.norm_scale + self.norm_shift

    def _log_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        r"""``(N,)`` :math:`\log\lvert\det \partial z / \partial\psi\rvert` at ``x`` (original units)."""
        if self.transform == "quantile":
            return torch.log(_piecewise_linear(x, self.knots_x, self.knots_z, slope=True)).sum(-1)
        return -torch.log(self.norm_scale).sum().expand(x.shape[0])

    # -- the mixture -----------------------------------------------------------
    def _training_range(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Internal coordinates of the training data's range (``None`` before :meth:`fit_normalization`)."""
        if not bool(self.norm_fitted):
            return None
        lo_hi = self._to_internal(torch.stack([self.data_min, self.data_max]))
        return lo_hi[0], lo_hi[1]

    def _clamp_to_training_range(self, z: torch.Tensor) -> torch.Tensor:
        """The network's input: ``z`` held inside the training range.

        Outside the data the mixture is that of the nearest point of the range
        (the network never extrapolates); the state itself is not clipped: a
        residual mean :math:`z + \\Delta` still starts from the true ``z``, so
        a walker beyond the data drifts back or on at the boundary's rate
        instead of running into an extrapolated network.
        """
        bounds = self._training_range()
        return z if bounds is None else torch.maximum(torch.minimum(z, bounds[1]), bounds[0])

    def _raw(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits ``(N, C)``, internal means ``(N, C, D)`` and log stds ``(N, C, D)`` for internal inputs."""
        c, d = self.n_components, self.n_dim
        out = self.net(self._clamp_to_training_range(z))
        logits = out[:, :c]
        params = out[:, c:].reshape(-1, 2, c, d)
        m, s = params[:, 0], params[:, 1]
        means = torch.sigmoid(m) if self.bounded else z.unsqueeze(1) + m
        log_stds = 0.5 * torch.logaddexp(2.0 * s, torch.full_like(s, 2.0 * math.log(self.min_std)))
        return torch.log_softmax(logits, dim=-1), means, log_stds

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""The mixture of :math:`p_\tau(\cdot \mid x)` in the original units.

        Parameters
        ----------
        x
            ``(N, D)`` latent coordinates :math:`\psi_t`.

        Returns
        -------
        log_weights, means, stds
            ``(N, C)`` :math:`\log\alpha_c`, ``(N, C, D)`` :math:`\mu_{cd}` and
            ``(N, C, D)`` :math:`\sigma_{cd}` of :math:`\psi_{t+\tau}` (for
            ``bounded=True`` those of the unclipped mixture).
        """
        if self.transform != "standard":
            raise LssError("with transform='quantile' the mixture is Gaussian in the transformed coordinates "
                           "only: use log_prob, conditional_moments or propagate")
        log_w, means, log_stds = self._raw(self._to_internal(as_input(x, self._ref())))
        return log_w, self._from_internal(means), torch.exp(log_stds) * self.norm_scale

    def log_prob(self, x0: Any, xt: Any) -> torch.Tensor:
        r"""``(N,)`` :math:`\log p_\tau(x_t \mid x_0)`, a density of :math:`\psi` in the original units."""
        ref = self._ref()
        x0, xt = as_input(x0, ref), as_input(xt, ref)
        log_w, means, log_stds = self._raw(self._to_internal(x0))
        return mixture_log_prob(self._to_internal(xt), log_w, means, log_stds) + self._log_jacobian(xt)

    def conditional_moments(self, x: Any, n_samples: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        r"""Mean and variance of :math:`\psi_{t+\tau}` given :math:`\psi_t = x`, per coordinate.

        .. math:: \mathrm E = \sum_c \alpha_c \mu_c, \qquad
                  \mathrm{Var} = \sum_c \alpha_c (\sigma_c^2 + \mu_c^2) - \mathrm E^2

        (of the unclipped mixture for ``bounded=True``).  With
        ``transform="quantile"`` the moments are Monte Carlo estimates from
        ``n_samples`` draws per point (seeded).  Returns two ``(N, D)``
        float64 arrays.
        """
        if self.transform != "standard":
            x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
            draws = self.propagate(np.repeat(x, n_samples, axis=0), 1, seed=seed)[:, -1]
            draws = draws.reshape(len(x), n_samples, self.n_dim).astype(np.float64)
            return draws.mean(1), draws.var(1)
        with evaluating(self):
            log_w, means, stds = self(x)
        w = torch.exp(log_w).to(torch.float64).unsqueeze(-1)
        means, stds = means.to(torch.float64), stds.to(torch.float64)
        mean = (w * means).sum(1)
        var = (w * (stds.square() + means.square())).sum(1) - mean.square()
        return mean.cpu().numpy(), var.clamp_min(0.0).cpu().numpy()

    # -- protocol of the training loop -----------------------------------------
    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Mean negative log-likelihood of a batch ``(x0, xt)`` (original units)."""
        x0, xt = batch
        return -self.log_prob(x0, xt).mean()

    def validation_score(self, dataset: Any, chunk_size: int = EVAL_CHUNK) -> float:
        r"""Mean log-likelihood per pair over all pairs of ``dataset`` (higher is better).

        .. math:: S = \frac1N \sum_n \log p_\tau(\psi^{(n)}_{t+\tau} \mid \psi^{(n)}_t)

        evaluated in chunks of ``chunk_size`` pairs, eval mode, no gradients,
        and summed in float64.

        Parameters
        ----------
        dataset
            A :class:`~lss_engine.data.TimeLaggedDataset` or a tuple ``(x0, xt)``.
        """
        total, count = 0.0, 0
        with evaluating(self):
            for x0, xt in iter_pairs(dataset, chunk_size):
                lp = self.log_prob(x0, xt)
                total += float(lp.to(torch.float64).sum())
                count += lp.shape[0]
        return total / count

    def config(self) -> dict[str, Any]:
        """The constructor arguments as JSON-compatible values (``dtype``: current parameters')."""
        return {
            "n_dim": self.n_dim,
            "n_components": self.n_components,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "bounded": self.bounded,
            "min_std": self.min_std,
            "dtype": dtype_name(self._ref().dtype),
            "transform": self.transform,
            "n_knots": self.n_knots,
            "linear_weight": self.linear_weight,
        }

    # -- generation --------------------------------------------------------------
    def sampler(
        self,
        start: Any,
        *,
        n_walkers: int | None = None,
        seed: int | None = None,
        device: "str | torch.device | None" = None,
        threads: int | None = 1,
    ) -> "MDNSampler":
        """An :class:`MDNSampler` positioned at ``start``; see :meth:`propagate` for the arguments."""
        return MDNSampler(self, start, n_walkers=n_walkers, seed=seed, device=device, threads=threads)

    def propagate(
        self,
        start: Any,
        n_steps: int,
        *,
        n_walkers: int | None = None,
        seed: int | None = None,
        device: "str | torch.device | None" = None,
        threads: int | None = 1,
    ) -> np.ndarray:
        r"""Synthetic trajectories: ``n_steps`` draws from :math:`p_\tau` per walker.

        Every step samples all walkers in one network call: a component
        :math:`c \sim \alpha(\psi_t)` by the Gumbel-max trick, then
        :math:`\psi_{t+\tau} = \mu_c + \sigma_c \odot \varepsilon`,
        :math:`\varepsilon \sim \mathcal N(0, I)` (clipped to the bounds for
        ``bounded=True``).

        Parameters
        ----------
        start
            ``(D,)`` start of every walker, or ``(W, D)`` one start per walker.
        n_steps
            Steps of length :math:`\tau` after the start.
        n_walkers
            Walkers for a ``(D,)`` start (default 1); for ``(W, D)`` it must be
            ``None`` or ``W``.
        seed
            Seed of the run's own ``torch.Generator``: one seed gives one
            trajectory, on every call and whatever the chunking (on one kind
            of device).  ``None``: fresh entropy.
        device
            ``None``/``"auto"`` (CUDA when available, else CPU), ``"cpu"``,
            ``"cuda"``, ...  The model itself is not moved.
        threads
            torch threads of the loop on the CPU, set while it runs (``None``:
            torch's current setting).  The default 1 is about as fast as more
            threads for a few thousand walkers (the per-step operations are
            small), does not stall when other processes share the cores, and
            makes the result independent of the machine's thread count.

        Returns
        -------
        numpy.ndarray
            ``(W, n_steps + 1, D)`` in the model's dtype; row 0 is ``start``.
        """
        n_steps = positive_int(n_steps, "n_steps", minimum=0)
        sampler = self.sampler(start, n_walkers=n_walkers, seed=seed, device=device, threads=threads)
        out = np.empty((n_steps + 1, sampler.n_walkers, self.n_dim), dtype=sampler.numpy_dtype)
        out[0] = sampler.state()
        sampler.run(n_steps, out=out[1:])
        return np.ascontiguousarray(out.transpose(1, 0, 2))

    def at_bound_fraction(self, samples: Any, rtol: float = 1e-6) -> float:
        r"""Fraction of frames with a coordinate at or beyond the training range.

        A frame counts when some :math:`u_d = (\psi_d - \psi_{\min,d}) /
        (\psi_{\max,d} - \psi_{\min,d})` is :math:`\le` ``rtol`` or
        :math:`\ge 1 -` ``rtol``: for ``bounded=True`` the samples clipped onto
        a bound, for ``bounded=False`` those at or outside the range of the
        training data (:meth:`fit_normalization`).

        Parameters
        ----------
        samples
            ``(..., D)`` latent coordinates (e.g. :meth:`propagate`'s output).
        """
        if not bool(self.norm_fitted):
            raise LssError("the training range is unknown: call fit_normalization first")
        x = np.asarray(samples, dtype=np.float64)
        if x.shape[-1] != self.n_dim:
            raise LssError(f"expected (..., {self.n_dim}) samples, got shape {x.shape}")
        lo = self.data_min.detach().cpu().double().numpy()
        hi = self.data_max.detach().cpu().double().numpy()
        u = (x - lo) / (hi - lo)
        at = ((u <= rtol) | (u >= 1.0 - rtol)).reshape(-1, self.n_dim).any(axis=1)
        return float(at.mean()) if at.size else 0.0

    def extra_repr(self) -> str:
        return (f"n_dim={self.n_dim}, n_components={self.n_components}, bounded={self.bounded}, "
                f"min_std={self.min_std:g}, transform={self.transform!r}")


class MDNSampler:
    r"""A running synthetic trajectory of :class:`MDNPropagator` walkers.

    Holds the walkers' current state (in the network's normalised units), a
    private ``torch.Generator`` and a block of pre-drawn random numbers, so
    that :meth:`run` can be called any number of times and the concatenated
    output equals one long run with the same seed.  Random numbers are drawn
    in blocks of a fixed number of steps (depending on the walkers and the
    network only): Gumbel noise :math:`G = -\log(-\log U)`, :math:`U \sim
    \mathcal U[0, 1)`, of shape ``(steps, W, C)`` first, then normal noise
    ``(steps, W, D)``.

    One step for all walkers (inference mode, preallocated buffers):

    .. math::

        k_w = \arg\max_c (\ell_{wc} + G_{wc}), \qquad
        z_{w} \leftarrow \mu_{w k_w} + \sigma_{w k_w} \odot \varepsilon_w

    (clipped to :math:`[0, 1]` for ``bounded=True``), then the states of a
    chunk are mapped back to :math:`\psi` at once.
    """

    def __init__(
        self,
        model: MDNPropagator,
        start: Any,
        *,
        n_walkers: int | None = None,
        seed: int | None = None,
        device: "str | torch.device | None" = None,
        threads: int | None = 1,
    ):
        self.device = resolve_device(device)
        self.threads = None if threads is None else positive_int(threads, "threads")
        if model.norm_scale.device != self.device:
            model = copy.deepcopy(model).to(self.device)
        self.model = model
        self.seed = _seed_value(seed)
        dtype = model.norm_scale.dtype
        self.dtype = dtype
        self.numpy_dtype = np.dtype(str(dtype).replace("torch.", ""))
        d, c = model.n_dim, model.n_components
        x = torch.as_tensor(np.asarray(start, dtype=np.float64), dtype=dtype)
        if x.ndim == 1:
            if x.shape[0] != d:
                raise LssError(f"start has {x.shape[0]} coordinates, the model has {d}")
            w = 1 if n_walkers is None else positive_int(n_walkers, "n_walkers")
            x = x.unsqueeze(0).expand(w, d)
        elif x.ndim == 2:
            if x.shape[1] != d:
                raise LssError(f"start has {x.shape[1]} coordinates, the model has {d}")
            if n_walkers is not None and positive_int(n_walkers, "n_walkers") != x.shape[0]:
                raise LssError(f"start has {x.shape[0]} walkers but n_walkers={n_walkers}")
            if x.shape[0] < 1:
                raise LssError("start has no walkers")
        else:
            raise LssError(f"start must be (D,) or (W, D), got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise LssError("start contains NaN or Inf")
        self.n_walkers = w = int(x.shape[0])
        self._start = x.contiguous().to(self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.block_steps = max(1, min(_NOISE_BLOCK_STEPS, _NOISE_BLOCK_VALUES // (w * (c + d))))
        self._gumbel = torch.empty((self.block_steps, w, c), dtype=dtype, device=self.device)
        self._eps = torch.empty((self.block_steps, w, d), dtype=dtype, device=self.device)
        self._used = self.block_steps  # noise of the current block consumed so far
        with torch.inference_mode():
            z = model._to_internal(self._start)
            if model.bounded:
                z = z.clamp(0.0, 1.0)
            self._z = z.contiguous()
        self.steps_done = 0
        self._layers = self._plan()

    # -- the network, without allocations ------------------------------------
    def _plan(self) -> list[tuple[str, Any]]:
        """The layers of ``make_mlp``'s network: linear layers (run with ``addmm(out=)``) and activations."""
        layers: list[tuple[str, Any]] = []
        inplace = _INPLACE.get(self.model.activation)
        for module in self.model.net:
            if isinstance(module, nn.Linear):
                layers.append(("linear", module))
            elif isinstance(module, nn.Dropout):
                continue  # identity at inference
            elif inplace is not None:
                layers.append(("inplace", inplace))
            else:
                layers.append(("module", module))
        return layers

    def _buffers(self) -> list[torch.Tensor]:
        out = []
        for kind, layer in self._layers:
            if kind == "linear":
                out.append(torch.empty((self.n_walkers, layer.out_features), dtype=self.dtype, device=self.device))
        return out

    def _forward(self, z: torch.Tensor, bufs: list[torch.Tensor]) -> torch.Tensor:
        h, i = z, 0
        for kind, layer in self._layers:
            if kind == "linear":
                torch.addmm(layer.bias, h, layer.weight.t(), out=bufs[i])
                h, i = bufs[i], i + 1
            elif kind == "inplace":
                layer(h)
            else:
                h = layer(h)
        return h

    def _refill(self) -> None:
        g = self.generator
        # G = -log(-log U), U ~ U[0, 1): U = 0 gives G = -inf (never chosen); the largest U
        # below 1 caps G near 17 (float32), a truncation of probability ~1e-7
        self._gumbel.uniform_(generator=g)
        self._gumbel.log_().neg_().log_().neg_()
        self._eps.normal_(generator=g)
        self._used = 0

    # -- public ---------------------------------------------------------------
    def state(self) -> np.ndarray:
        """``(W, D)`` current positions in the original units (the start before any step)."""
        if self.steps_done == 0:
            return self._start.cpu().numpy().copy()
        with torch.inference_mode():
            return self.model._from_internal(self._z).cpu().numpy()

    def run(self, n_steps: int, out: np.ndarray | None = None) -> np.ndarray:
        """Advance all walkers by ``n_steps`` steps of :math:`\\tau`.

        Parameters
        ----------
        n_steps
            Steps to take.
        out
            Optional ``(n_steps, W, D)`` array (of the model's dtype) to fill.

        Returns
        -------
        numpy.ndarray
            ``(n_steps, W, D)``: the positions after each step, original units.
        """
        n_steps = positive_int(n_steps, "n_steps", minimum=0)
        model, w, d, c = self.model, self.n_walkers, self.model.n_dim, self.model.n_components
        shape = (n_steps, w, d)
        if out is None:
            out = np.empty(shape, dtype=self.numpy_dtype)
        elif out.shape != shape or out.dtype != self.numpy_dtype:
            raise LssError(f"out must be a {shape} array of {self.numpy_dtype}, got {out.shape} {out.dtype}")
        if n_steps == 0:
            return out
        bounded = model.bounded
        min_std = torch.tensor(model.min_std, dtype=self.dtype, device=self.device)
        # the chunk's states, in internal units, on the device
        traj = torch.empty(shape, dtype=self.dtype, device=self.device)
        bufs = self._buffers()
        n_out = c * (1 + 2 * d)
        # flat indices of the chosen component's means in the network output:
        # w * n_out + C + k_w * D + j; its log stds follow C * D later
        base = (torch.arange(w, device=self.device) * n_out + c).unsqueeze(1) + torch.arange(d, device=self.device)
        index = torch.empty((w, d), dtype=torch.int64, device=self.device)
        mu = torch.empty((w, d), dtype=self.dtype, device=self.device)
        sigma = torch.empty((w, d), dtype=self.dtype, device=self.device)
        score = torch.empty((w, c), dtype=self.dtype, device=self.device)
        k = torch.empty((w,), dtype=torch.int64, device=self.device)
        was_training = model.training
        threads = torch.get_num_threads()
        set_threads = self.device.type == "cpu" and self.threads is not None and self.threads != threads
        model.eval()
        try:
            if set_threads:
                torch.set_num_threads(self.threads)
            with torch.inference_mode():
                # the state lives in one aligned buffer: BLAS results may depend on the
                # alignment of their input, and a run must not depend on its chunking
                z = torch.empty((w, d), dtype=self.dtype, device=self.device)
                z.copy_(self._z)
                bounds = None if bounded else model._training_range()
                z_in = torch.empty_like(z)
                for t in range(n_steps):
                    if self._used == self.block_steps:
                        self._refill()
                    b = self._used
                    self._used += 1
                    if bounds is None:
                        h = self._forward(z, bufs)
                    else:  # the network sees z held inside the training range (see _clamp_to_training_range)
                        torch.maximum(torch.minimum(z, bounds[1], out=z_in), bounds[0], out=z_in)
                        h = self._forward(z_in, bufs)
                    torch.add(h[:, :c], self._gumbel[b], out=score)  # Gumbel-max: k ~ softmax(logits)
                    torch.argmax(score, dim=1, out=k)
                    torch.add(base, k.unsqueeze(1), alpha=d, out=index)
                    torch.take(h, index, out=mu)
                    index.add_(c * d)
                    torch.take(h, index, out=sigma)
                    sigma.exp_()
                    torch.hypot(sigma, min_std, out=sigma)  # sqrt(exp(2 s) + min_std^2)
                    if bounded:
                        torch.sigmoid(mu, out=z)
                        z.addcmul_(sigma, self._eps[b]).clamp_(0.0, 1.0)
                    else:
                        z.add_(mu).addcmul_(sigma, self._eps[b])
                    traj[t].copy_(z)
                self._z = z
                finite = torch.isfinite(traj).flatten(1).all(1)
                if not bool(finite.all()):
                    bad = int(torch.argmin(finite.to(torch.uint8)))
                    raise NonFiniteError(
                        f"the synthetic trajectory became NaN or Inf at step {self.steps_done + bad + 1}: "
                        "the propagator diverges there (start outside the training data, or an unconverged model)"
                    )
                if model.transform == "standard":
                    traj.mul_(model.norm_scale).add_(model.norm_shift)
                else:
                    traj = model._from_internal(traj.view(-1, d)).view(shape)
                out[...] = traj.cpu().numpy()
        finally:
            model.train(was_training)
            if set_threads:
                torch.set_num_threads(threads)
        self.steps_done += n_steps
        return out
