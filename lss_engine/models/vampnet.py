r"""VAMPNet: a neural network fuzzy Markov state model (Mardt, Pasquali, Wu & Noé 2018).

A lobe :math:`\chi: \mathbb R^{n_\mathrm{features}} \to \Delta^{n_\mathrm{states}-1}`
(a fully connected network with softmax output, :func:`~lss_engine.models.mlp.make_mlp`)
maps each frame to membership probabilities of ``n_states`` metastable states.
The instantaneous lobe :math:`\chi_0` sees :math:`x_t`, the time-lagged lobe
:math:`\chi_1` sees :math:`x_{t+\tau}`; by default (as in the paper) they are
one network with shared weights.  Training maximises the VAMP-2 score of
:math:`(\chi_0(x_t), \chi_1(x_{t+\tau}))` (optionally after pre-training on
VAMP-1, the paper's first third of the epochs), see :mod:`~lss_engine.models.vamp`.

From the memberships the Koopman matrix of the fuzzy MSM is estimated with
non-mean-free moments, :math:`K = C_{00}^{-1} C_{0\tau}`,
:math:`C_{00} = \frac1N \sum \chi_0 \chi_0^\top`,
:math:`C_{0\tau} = \frac1N \sum \chi_0 \chi_1^\top` (Eq. 5 of the paper).  For
one-hot memberships :math:`K` is the count-based transition matrix; for softmax
outputs its rows sum to one (:math:`C_{00}\mathbf 1 = C_{0\tau}\mathbf 1`
because memberships sum to one) but entries may be slightly negative.

Training protocol (called by :func:`lss_engine.train.fit`)::

    loss = model.training_loss((x0, xt))   # scalar, -score
    score = model.validation_score(val)    # float, higher is better
    cfg = model.config(); VAMPNet.from_config(cfg)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .._helpers import implied_timescales
from ..errors import LssError
from .base import LobeNetwork, Standardize
from .mlp import (
    EVAL_CHUNK,
    dtype_name,
    evaluating,
    lag_of,
    make_mlp,
    parse_dtype,
)
from .vamp import (check_method, check_mode, koopman_from_moments, vamp_score_from_covariances,
                   vampnet_loss)

__all__ = ["VAMPNet", "KoopmanModel", "koopman_model_from_memberships", "koopman_model_from_moments"]


# --------------------------------------------------------------------------
# the Koopman model of a fuzzy MSM


@dataclass(frozen=True)
class KoopmanModel:
    r"""A Markov model estimated from memberships (:func:`koopman_model_from_memberships`).

    Attributes
    ----------
    koopman_matrix
        ``(n, n)`` raw estimate :math:`K = C_{00}^{-1} C_{0\tau}` (rows sum to 1
        for memberships that sum to 1; entries may be slightly negative).
    transition_matrix
        ``(n, n)`` row-stochastic :math:`T`: ``koopman_matrix`` with negative
        entries set to 0 and rows renormalised to sum 1 (equal to ``K`` when
        ``K`` has no negative entries); a state no pair starts in gets a self-loop.
    stationary_distribution
        ``(n,)`` :math:`\pi` with :math:`\pi^\top T = \pi^\top`, :math:`\sum\pi = 1`.
    eigenvalues
        ``(n,)`` eigenvalues of ``transition_matrix`` by decreasing modulus
        (``eigenvalues[0]`` is 1); real dtype unless some are complex.
    implied_timescales
        ``(n - 1,)`` :math:`t_i = -\tau / \ln\lambda_i`, :math:`i \ge 1`
        (``inf`` for :math:`\lambda_i \ge 1`, NaN for a real :math:`\lambda_i \le 0`,
        the modulus for a complex one; :func:`lss_engine._helpers.implied_timescales`).
    lag
        :math:`\tau` in ``unit``.
    unit
        ``"ps"``, ``"frames"``, or ``"lags"`` (timescales in multiples of the lag).
    clipped
        Largest negative entry of ``koopman_matrix`` that was clipped (0 if none).
    """

    koopman_matrix: np.ndarray
    transition_matrix: np.ndarray
    stationary_distribution: np.ndarray
    eigenvalues: np.ndarray
    implied_timescales: np.ndarray
    lag: float
    unit: str
    clipped: float

    @property
    def n_states(self) -> int:
        return self.transition_matrix.shape[0]


def koopman_model_from_memberships(
    chi0: np.ndarray, chit: np.ndarray, lag: float = 1.0, unit: str = "lags"
) -> KoopmanModel:
    r"""Koopman model :math:`K = C_{00}^{-1} C_{0\tau}` from memberships of N pairs, in float64.

    Parameters
    ----------
    chi0, chit
        ``(N, n)`` memberships (or any features) of the earlier and later frames.
    lag, unit
        The lag time :math:`\tau` and its unit, for the implied timescales.

    Returns
    -------
    KoopmanModel
        See its attributes for what is clipped and renormalised.
    """
    chi0 = np.asarray(chi0, dtype=np.float64)
    chit = np.asarray(chit, dtype=np.float64)
    if chi0.ndim != 2 or chi0.shape != chit.shape or len(chi0) == 0:
        raise LssError(f"expected two (N, n) membership arrays of equal shape, got {chi0.shape} and {chit.shape}")
    n = chi0.shape[0]
    return koopman_model_from_moments(chi0.T @ chi0 / n, chi0.T @ chit / n, lag, unit)


def koopman_model_from_moments(c00: np.ndarray, c0t: np.ndarray, lag: float = 1.0, unit: str = "lags") -> KoopmanModel:
    r"""As :func:`koopman_model_from_memberships`, given the raw (not mean-free) moments
    :math:`C_{00} = \frac1N\sum\chi_0\chi_0^\top` and :math:`C_{0\tau} = \frac1N\sum\chi_0\chi_1^\top`."""
    c00 = np.asarray(c00, dtype=np.float64)
    c0t = np.asarray(c0t, dtype=np.float64)
    k = koopman_from_moments(c00, c0t)
    t = np.clip(k, 0.0, None)
    empty = ~(t.sum(axis=1) > 0) | ~(np.diag(c00) > 0)
    t[empty] = 0.0
    t[empty, np.flatnonzero(empty)] = 1.0
    t /= t.sum(axis=1, keepdims=True)
    eigvals, left = np.linalg.eig(t.T)
    order = np.lexsort((-eigvals.real, -np.abs(eigvals)))
    eigvals, left = eigvals[order], left[:, order]
    pi = np.real(left[:, 0])
    pi = np.clip(pi / pi.sum(), 0.0, None)
    pi /= pi.sum()
    if np.all(np.abs(eigvals.imag) <= 1e-12 * np.maximum(1.0, np.abs(eigvals))):
        eigvals = eigvals.real.copy()
    return KoopmanModel(
        koopman_matrix=k,
        transition_matrix=t,
        stationary_distribution=pi,
        eigenvalues=eigvals,
        implied_timescales=implied_timescales(eigvals[1:], float(lag)),
        lag=float(lag),
        unit=unit,
        clipped=float(min(0.0, k.min())),
    )


# --------------------------------------------------------------------------
# the network


class Softmax(nn.Module):
    """Softmax over the last axis (the states).

    Same values as ``nn.Softmax(dim=-1)``; for a ``(batch, n_states)`` input it
    normalises the transposed view along dim 0, which torch's CPU kernels do
    about twice as fast as a reduction over a short last axis (forward and
    backward; the result is a transposed view).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            return torch.softmax(x.transpose(0, 1), dim=0).transpose(0, 1)
        return torch.softmax(x, dim=-1)


class VAMPNet(LobeNetwork):
    r"""VAMPNet with softmax outputs (fuzzy metastable states).

    Parameters
    ----------
    n_features
        Input features per frame.
    n_states
        Softmax outputs (memberships of metastable states).
    hidden
        Hidden layer widths of a lobe.
    shared
        One lobe for :math:`x_t` and :math:`x_{t+\tau}` (the paper's setup);
        ``False`` adds a separate time-lagged lobe.
    activation
        Hidden activation (see :data:`~lss_engine.models.mlp.ACTIVATIONS`).
    score_method
        Training score: ``"VAMP2"``, or ``"VAMP1"`` for pre-training, or
        ``"VAMPE"``; an attribute the training loop may change between stages.
    epsilon, mode
        Robust inverse of the covariances (:func:`~lss_engine.models.vamp.sym_eig`);
        ``"regularize"`` (deeptime's VAMPNet default) or ``"trunc"``.
    batchnorm, dropout
        Of the hidden layers (:func:`~lss_engine.models.mlp.make_mlp`).
    dtype
        ``"float32"`` or ``"float64"`` parameters (default: torch's default dtype).

    Notes
    -----
    With shared lobes a training step sends ``[x0; xt]`` through the network
    in one forward pass (batch-norm statistics are then those of both halves).
    """

    def __init__(
        self,
        n_features: int,
        n_states: int,
        hidden: Sequence[int] = (64, 32, 16),
        shared: bool = True,
        activation: str = "elu",
        score_method: str = "VAMP2",
        epsilon: float = 1e-6,
        mode: str = "regularize",
        batchnorm: bool = False,
        dropout: float = 0.0,
        dtype: "str | torch.dtype | None" = None,
    ):
        super().__init__()
        if isinstance(n_states, bool) or not isinstance(n_states, int) or n_states < 2:
            raise LssError(f"n_states must be an integer >= 2, got {n_states!r}")
        self.n_features = int(n_features)
        self.n_states = int(n_states)
        self.hidden = tuple(int(h) for h in hidden)
        self.shared = bool(shared)
        self.activation = activation
        self.score_method = score_method
        self.epsilon = float(epsilon)
        self.mode = check_mode(mode)
        self.batchnorm = bool(batchnorm)
        self.dropout = float(dropout)
        torch_dtype = parse_dtype(dtype)

        def lobe() -> nn.Sequential:
            return nn.Sequential(
                make_mlp(self.n_features, self.hidden, self.n_states, activation, self.batchnorm, self.dropout),
                Softmax(),
            )

        self.standardize = Standardize(self.n_features)
        self.lobe = lobe().to(torch_dtype)
        # not a submodule when shared: state_dict must not hold the same tensors twice
        self.lobe_t = None if self.shared else lobe().to(torch_dtype)

    # -- protocol of the training loop -------------------------------------
    @property
    def score_method(self) -> str:
        return self._score_method

    @score_method.setter
    def score_method(self, value: str) -> None:
        self._score_method = check_method(value)

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Negative ``score_method`` score of one batch ``(x0, xt)``: a scalar to minimise."""
        chi0, chit = self.forward_pair(*batch)
        return vampnet_loss(chi0, chit, self.score_method, self.epsilon, self.mode)

    def validation_score(self, dataset: Any, chunk_size: int = EVAL_CHUNK) -> float:
        """VAMP-2 score of all pairs of ``dataset`` (higher is better).

        The network is evaluated (eval mode, no gradients) in chunks of
        ``chunk_size`` pairs; the covariances of all outputs are then
        estimated once in float64 (the score is not additive over batches).

        Parameters
        ----------
        dataset
            A :class:`~lss_engine.data.TimeLaggedDataset` or a tuple ``(x0, xt)``.
        """
        with evaluating(self):
            acc = self._accumulate(dataset, chunk_size)
            return float(vamp_score_from_covariances(*acc.covariances(), "VAMP2", self.epsilon, self.mode))

    def config(self) -> dict[str, Any]:
        """The constructor arguments as JSON-compatible values (``dtype``: current parameters')."""
        return {
            "n_features": self.n_features,
            "n_states": self.n_states,
            "hidden": list(self.hidden),
            "shared": self.shared,
            "activation": self.activation,
            "score_method": self.score_method,
            "epsilon": self.epsilon,
            "mode": self.mode,
            "batchnorm": self.batchnorm,
            "dropout": self.dropout,
            "dtype": dtype_name(self._ref().dtype),
        }

    # -- analysis ----------------------------------------------------------
    def memberships(self, x: Any, instantaneous: bool = True, chunk_size: int = EVAL_CHUNK) -> np.ndarray:
        """Memberships ``(n_frames, n_states)`` (float64 numpy) of frames ``x`` (array or tensor).

        ``instantaneous=False`` uses the time-lagged lobe (the same one when shared).
        """
        lobe = self.lobe if instantaneous else self.lobe_timelagged
        return self.map_chunks(lambda chunk: lobe(self.standardize(chunk)), x, self.n_states, chunk_size)

    def koopman_model(self, data: Any, lag: float | None = None, chunk_size: int = EVAL_CHUNK) -> KoopmanModel:
        r"""Koopman model of the fuzzy MSM over all pairs of ``data``.

        Memberships are computed in chunks (eval mode) and the moments
        accumulated in float64; see :func:`koopman_model_from_memberships`.

        Parameters
        ----------
        data
            A :class:`~lss_engine.data.TimeLaggedDataset` (timescales in ps if
            it knows its frame interval, else in frames) or a tuple ``(x0, xt)``.
        lag
            For arrays only: the lag in frames (default: timescales in lags).
        """
        tau, unit = lag_of(data, lag)
        with evaluating(self):
            acc = self._accumulate(data, chunk_size)
        c00, c0t, _ = acc.covariances(remove_mean=False)
        return koopman_model_from_moments(c00.cpu().numpy(), c0t.cpu().numpy(), tau, unit)

    def extra_repr(self) -> str:
        return f"score_method={self.score_method!r}, epsilon={self.epsilon:g}, mode={self.mode!r}"
