r"""State-free reversible VAMPnet (SRV; Chen, Sidky & Ferguson 2019), the LSS encoder.

One lobe :math:`z: \mathbb R^{n_\mathrm{features}} \to \mathbb R^{n}` with
continuous outputs is trained on the reversible VAMP-2 loss
(:func:`~lss_engine.models.vamp.reversible_vamp_score`): the pairs are used in
both directions, which estimates a self-adjoint transfer operator.  The default
architecture is the LSS paper's (Sidky, Chen & Ferguson 2020, Trp-cage): two
hidden layers of 100 neurons, tanh activations and batch normalisation, with
a linear output layer.

After training, :meth:`SRV.fit_whitening` solves, in float64 over all pairs,
the generalised eigenproblem of the symmetrised mean-free covariances of the
outputs,

.. math:: C^s_{01} v_i = \lambda_i C^s_{00} v_i, \qquad v_i^\top C^s_{00} v_j = \delta_{ij},

sorted by :math:`\lambda_1 \ge \lambda_2 \ge \dots`, and defines the slow
eigenfunction estimates :math:`\psi_i(x) = (z(x) - \mu)^\top v_i` with implied
timescales :math:`t_i = -\tau / \ln\lambda_i`.  Over the 2N frames of the pairs
(earlier and later frames pooled) the :math:`\psi_i` have mean 0 and
:math:`\tfrac12(C_{00}(\psi) + C_{11}(\psi)) = I` (each half normalised by
:math:`1/(N-1)`, about the pooled mean), and
:math:`\tfrac12(C_{01}(\psi) + C_{10}(\psi)) = \mathrm{diag}(\lambda)`.

Sign convention: each :math:`\psi_i` is oriented to have a positive third
moment (skewness) over the pooled frames, so the result does not depend on the
sign LAPACK gives an eigenvector nor on a sign flip of a network output.

Latent dimension: ``n_latent`` given by the user, else :meth:`SRV.choose_dim`:
the largest gap in the implied timescale spectrum, measured as the ratio
:math:`t_i / t_{i+1}` of consecutive timescales.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from .._helpers import implied_timescales
from ..errors import LssError
from .base import LobeNetwork, Standardize
from .mlp import (
    EVAL_CHUNK,
    as_input,
    dtype_name,
    evaluating,
    iter_pairs,
    lag_of,
    make_mlp,
    parse_dtype,
)
from .vamp import (
    check_mode,
    reversible_eigh,
    reversible_vamp_score,
    reversible_vamp_score_from_covariances,
)

__all__ = ["SRV"]

#: buffers that stay float64 whatever dtype the network is cast to
_F64_BUFFERS = ("whiten_mean", "whiten_vectors", "whiten_eigenvalues", "whiten_lag")
#: units of the lag, stored by index in the ``whiten_lag_unit`` buffer
_UNITS = ("frames", "ps", "lags")


class SRV(LobeNetwork):
    r"""State-free reversible VAMPnet with whitened, ordered eigenfunction outputs.

    Parameters
    ----------
    n_features
        Input features per frame.
    n_outputs
        Network outputs = number of eigenfunctions estimated (the latent space
        uses the first ``n_latent`` of them).
    hidden, activation, batchnorm, dropout
        The lobe (:func:`~lss_engine.models.mlp.make_mlp`); defaults follow the
        LSS paper: ``(100, 100)``, ``"tanh"``, batch normalisation.
    epsilon, mode
        Robust inverse in the training loss (:func:`~lss_engine.models.vamp.sym_eig`).
    n_latent
        Latent dimension; ``None``: chosen by :meth:`choose_dim` in :meth:`fit_whitening`.
    dtype
        ``"float32"`` or ``"float64"`` parameters (default: torch's default).

    Notes
    -----
    The whitening (mean, eigenvectors, eigenvalues, lag, chosen dimension) is
    held in buffers, so it travels with ``state_dict``; the float buffers stay
    float64 when the network is cast with ``.float()``/``.to(dtype)``.
    """

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        hidden: Sequence[int] = (100, 100),
        activation: str = "tanh",
        batchnorm: bool = True,
        dropout: float = 0.0,
        epsilon: float = 1e-6,
        mode: str = "regularize",
        n_latent: int | None = None,
        dtype: "str | torch.dtype | None" = None,
    ):
        super().__init__()
        if isinstance(n_outputs, bool) or not isinstance(n_outputs, int) or n_outputs < 1:
            raise LssError(f"n_outputs must be a positive integer, got {n_outputs!r}")
        if n_latent is not None and (
            isinstance(n_latent, bool) or not isinstance(n_latent, int) or not 1 <= n_latent <= n_outputs
        ):
            raise LssError(f"n_latent must be an integer in [1, n_outputs={n_outputs}] or None, got {n_latent!r}")
        self.n_features = int(n_features)
        self.n_outputs = int(n_outputs)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.batchnorm = bool(batchnorm)
        self.dropout = float(dropout)
        self.epsilon = float(epsilon)
        self.mode = check_mode(mode)
        self.requested_n_latent = n_latent
        self.standardize = Standardize(self.n_features)
        self.lobe = make_mlp(self.n_features, self.hidden, self.n_outputs, activation, self.batchnorm, self.dropout)
        self.lobe.to(parse_dtype(dtype))
        self.lobe_t = None  # one lobe for both frames of a pair
        f64 = torch.float64
        self.register_buffer("whiten_mean", torch.zeros(self.n_outputs, dtype=f64))
        self.register_buffer("whiten_vectors", torch.eye(self.n_outputs, dtype=f64))
        self.register_buffer("whiten_eigenvalues", torch.full((self.n_outputs,), float("nan"), dtype=f64))
        self.register_buffer("whiten_lag", torch.tensor(float("nan"), dtype=f64))
        self.register_buffer("whiten_lag_unit", torch.tensor(0, dtype=torch.int64))  # index in _UNITS
        self.register_buffer("whiten_fitted", torch.tensor(False))
        self.register_buffer("whiten_n_latent", torch.tensor(0, dtype=torch.int64))

    def _apply(self, fn: Callable, recurse: bool = True) -> "SRV":
        # keep the whitening in float64 under .float()/.half()/.to(dtype); follow device moves
        keep = {name: self._buffers[name] for name in _F64_BUFFERS}
        super()._apply(fn, recurse)
        for name, value in keep.items():
            self._buffers[name] = value.to(device=self._buffers[name].device)
        return self

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Negative reversible VAMP-2 score of one batch ``(x0, xt)``."""
        z0, zt = self.forward_pair(*batch)
        return -reversible_vamp_score(z0, zt, "VAMP2", self.epsilon, self.mode)

    def validation_score(self, dataset: Any, chunk_size: int = EVAL_CHUNK) -> float:
        """Reversible VAMP-2 score of all pairs of ``dataset`` (higher is better).

        Outputs are computed in chunks (eval mode, no gradients) and the
        symmetrised covariances estimated once over all pairs in float64.
        """
        with evaluating(self):
            acc = self._accumulate(dataset, chunk_size)
            c00s, c01s, _ = acc.symmetrized()
            return float(reversible_vamp_score_from_covariances(c00s, c01s, "VAMP2", self.epsilon, self.mode))

    def config(self) -> dict[str, Any]:
        """The constructor arguments as JSON-compatible values (``dtype``: current parameters')."""
        return {
            "n_features": self.n_features,
            "n_outputs": self.n_outputs,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "batchnorm": self.batchnorm,
            "dropout": self.dropout,
            "epsilon": self.epsilon,
            "mode": self.mode,
            "n_latent": self.requested_n_latent,
            "dtype": dtype_name(self._ref().dtype),
        }

    # -- whitening -----------------------------------------------------------
    @property
    def is_whitened(self) -> bool:
        """Whether :meth:`fit_whitening` has run (or its buffers were loaded)."""
        return bool(self.whiten_fitted)

    def _check_whitened(self) -> None:
        if not self.is_whitened:
            raise LssError("the SRV has no whitening yet; call fit_whitening(data) after training")

    def fit_whitening(self, data: Any, lag: int | None = None, chunk_size: int = EVAL_CHUNK) -> "SRV":
        r"""Order and whiten the outputs: solve :math:`C^s_{01} v = \lambda C^s_{00} v` over all pairs.

        Two passes over the data in eval mode: the symmetrised covariances of
        the outputs (float64), then the third moments of the whitened
        coordinates for the sign convention (see the module docstring).

        Parameters
        ----------
        data
            A :class:`~lss_engine.data.TimeLaggedDataset`; a *tuple* ``(x0, xt)``
            of pair arrays; or trajectories - an ``(n_frames, n_features)``
            array or a *list* of them - together with ``lag``.
        lag
            With trajectories (required) or ``(x0, xt)`` arrays (optional, for
            timescales in frames): the lag in frames.

        Returns
        -------
        self

        Raises
        ------
        LssError
            Bad data, or outputs that are constant over the data.
        """
        if isinstance(data, (np.ndarray, torch.Tensor, list)):
            if lag is None:
                raise LssError("give lag= (in frames) with trajectories")
            from ..data import TimeLaggedDataset

            data, lag = TimeLaggedDataset(data, int(lag), dtype=self._ref().dtype), None
        tau, unit = lag_of(data, lag)
        with evaluating(self):
            acc = self._accumulate(data, chunk_size)
            c00s, c01s, mean = (t.cpu().numpy() for t in acc.symmetrized())
            eigvals, vectors = reversible_eigh(c00s, c01s)
            order = np.argsort(-eigvals, kind="stable")
            eigvals, vectors = eigvals[order], vectors[:, order]
            # sign: positive third moment of psi over the pooled 2N frames
            v = torch.as_tensor(vectors, device=self._ref().device)
            mu = torch.as_tensor(mean, device=self._ref().device)
            third = torch.zeros(self.n_outputs, dtype=torch.float64, device=mu.device)
            for x0, xt in iter_pairs(data, chunk_size):
                for z in self.forward_pair(x0, xt):
                    third += ((z.to(torch.float64) - mu) @ v).pow(3).sum(0)
            flip = np.where(third.cpu().numpy() < 0, -1.0, 1.0)
            vectors = vectors * flip
        dev = self.whiten_mean.device
        self.whiten_mean.copy_(torch.as_tensor(mean, device=dev))
        self.whiten_vectors.copy_(torch.as_tensor(vectors, device=dev))
        self.whiten_eigenvalues.copy_(torch.as_tensor(eigvals, device=dev))
        self.whiten_lag.fill_(tau)
        self.whiten_lag_unit.fill_(_UNITS.index(unit))
        n = self.requested_n_latent if self.requested_n_latent is not None else self.choose_dim(eigvals)
        self.whiten_n_latent.fill_(int(n))
        self.whiten_fitted.fill_(True)
        return self

    @staticmethod
    def choose_dim(eigenvalues: Sequence[float]) -> int:
        r"""Latent dimension at the largest gap of the implied timescale spectrum.

        With the eigenvalues sorted descending and :math:`t_i = -\tau/\ln\lambda_i`
        for the :math:`k` of them in :math:`(0, 1)` (:math:`\lambda \ge 1` counts
        as :math:`t = \infty`), returns :math:`m = \arg\max_{1 \le i < k} t_i / t_{i+1}`
        (1-based): the slow processes before the largest timescale separation.
        The lag cancels in the ratios.  With fewer than two such eigenvalues,
        ``max(k, 1)``.
        """
        lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
        lam = lam[lam > 0]
        t = implied_timescales(lam, 1.0)
        k = len(t)
        if k < 2:
            return max(k, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = t[:-1] / t[1:]
        ratio = np.where(np.isnan(ratio), 1.0, ratio)  # inf/inf: no gap between two stationary modes
        return int(np.argmax(ratio)) + 1

    @property
    def n_latent(self) -> int:
        """Latent dimension: the user's, else the one :meth:`fit_whitening` chose (0 before)."""
        if self.requested_n_latent is not None:
            return self.requested_n_latent
        return int(self.whiten_n_latent)

    @property
    def eigenvalues(self) -> np.ndarray:
        r"""Eigenvalues :math:`\lambda_1 \ge \dots \ge \lambda_n` of the whitened outputs."""
        self._check_whitened()
        return self.whiten_eigenvalues.cpu().numpy().copy()

    @property
    def lag(self) -> float:
        """Lag of the whitening data, in :attr:`timescale_unit`."""
        self._check_whitened()
        return float(self.whiten_lag)

    @property
    def timescale_unit(self) -> str:
        """``"ps"`` when the whitening data knew its frame interval, else ``"frames"``
        (``"lags"``: ``(x0, xt)`` arrays without ``lag``, timescales in multiples of the lag)."""
        self._check_whitened()
        return _UNITS[int(self.whiten_lag_unit)]

    @property
    def implied_timescales(self) -> np.ndarray:
        r""":math:`t_i = -\tau/\ln\lambda_i` in :attr:`timescale_unit` (NaN for :math:`\lambda_i \le 0`)."""
        return implied_timescales(self.eigenvalues, self.lag)

    def latent(self, x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
        r"""Whitened coordinates :math:`\psi_{1..dim}(x)` as a differentiable float64 tensor.

        Parameters
        ----------
        x
            ``(batch, n_features)`` frames.
        dim
            Leading eigenfunctions to return (default :attr:`n_latent`; at most ``n_outputs``).
        """
        self._check_whitened()
        dim = self._dim(dim)
        z = self.lobe(self.standardize(as_input(x, self._ref()))).to(torch.float64)
        return (z - self.whiten_mean) @ self.whiten_vectors[:, :dim]

    def _dim(self, dim: int | None) -> int:
        dim = self.n_latent if dim is None else dim
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= self.n_outputs:
            raise LssError(f"dim must be an integer in [1, {self.n_outputs}], got {dim!r}")
        return dim

    def transform(self, x: Any, dim: int | None = None, chunk_size: int = EVAL_CHUNK) -> np.ndarray:
        """Whitened latent coordinates ``(n_frames, dim)`` (float64 numpy) of frames ``x``.

        Evaluated in eval mode without gradients; ``dim`` as in :meth:`latent`.
        """
        self._check_whitened()
        dim = self._dim(dim)
        return self.map_chunks(lambda chunk: self.latent(chunk, dim), x, dim, chunk_size)

    def extra_repr(self) -> str:
        state = f"whitened, n_latent={self.n_latent}" if self.is_whitened else "not whitened"
        return f"epsilon={self.epsilon:g}, mode={self.mode!r}, {state}"
