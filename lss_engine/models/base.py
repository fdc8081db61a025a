r"""What the networks share: config round trip, reference tensor, chunked scoring, standardisation.

:class:`Network` is the small base class of every network of the package
(VAMPNet, SRV, MDN, LSTM, cWGAN):

* ``config()`` returns the constructor arguments as JSON values and
  ``from_config(config)`` rebuilds an untrained network from them (weights
  come from ``load_state_dict``), so that ``cls.from_config(json.loads(json.dumps(m.config())))``
  has the same architecture as ``m``;
* :meth:`Network.reference_tensor` is the tensor whose dtype and device inputs are cast to;
* :meth:`Network.map_chunks` evaluates a function of frames over a big
  array chunk by chunk (eval mode, no gradients) into one float64 array.

:class:`LobeNetwork` adds what VAMPNet and SRV share: a :class:`Standardize`
block in front of the lobe(s), pairs sent through the lobe(s) in one pass,
and covariances of the outputs accumulated over a whole data set.

Standardisation.  :class:`Standardize` holds per-feature ``mean`` and ``std``
buffers (float64, like the SRV whitening) and computes

.. math:: \tilde x = (x - \mu) / \sigma

in float64, cast back to the input's dtype (what
:meth:`lss_engine.data.Normalizer.transform` does to float32 features).  It is
the identity (:math:`\mu = 0`, :math:`\sigma = 1`) until
:meth:`Standardize.set` is called; a network trained on already standardised
data gets its normaliser moved in afterwards
(:class:`lss_engine.encoder.Encoder` does), so that featurizer →
standardisation → lobe → whitening is one ``nn.Module``.  A state dict without
the buffers (bundles written before they existed) loads as the identity.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import LssError
from .mlp import EVAL_CHUNK, as_input, evaluating, iter_frames, iter_pairs, model_from_config
from .vamp import CovarianceAccumulator

__all__ = ["Network", "LobeNetwork", "Standardize"]

Tensor = torch.Tensor


class Network(nn.Module):
    """Base class of the package's networks: config round trip, reference tensor, chunked scoring."""

    def config(self) -> dict[str, Any]:
        """The constructor arguments as JSON-compatible values."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Network":
        """A fresh network from :meth:`config`'s output (load weights with ``load_state_dict``)."""
        return model_from_config(cls, config)

    def reference_tensor(self) -> Tensor:
        """A tensor with the dtype and device of the network's parameters (inputs are cast to it)."""
        for p in self.parameters():
            return p
        for b in self.buffers():
            if b.is_floating_point():
                return b
        raise LssError(f"{type(self).__name__} has no parameters")

    # the name the lobe models used before the base class existed
    def _ref(self) -> Tensor:
        return self.reference_tensor()

    def map_chunks(self, fn: Callable[[Tensor], Tensor], x: Any, n_out: int,
                   chunk_size: int = EVAL_CHUNK) -> np.ndarray:
        """``fn`` of frames ``x`` ``(n_frames, n_features)``, chunk by chunk, as float64 numpy ``(n_frames, n_out)``.

        Evaluated in eval mode without gradients; each chunk is cast to the
        dtype and device of :meth:`reference` first.
        """
        ref = self.reference_tensor()
        with evaluating(self):
            parts = [fn(as_input(chunk, ref)).to(torch.float64).cpu().numpy() for chunk in iter_frames(x, chunk_size)]
        return np.concatenate(parts) if parts else np.zeros((0, n_out))


class Standardize(nn.Module):
    r"""Per-feature :math:`(x - \mu)/\sigma` with float64 ``mean`` and ``std`` buffers (identity by default).

    Parameters
    ----------
    n_features
        Number of input features.
    """

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("std", torch.ones(n_features, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return ((x.to(torch.float64) - self.mean) / self.std).to(x.dtype)

    def set(self, mean: Any, std: Any) -> "Standardize":
        """Set :math:`\\mu` and :math:`\\sigma` (e.g. of a :class:`~lss_engine.data.Normalizer`)."""
        mean = torch.as_tensor(np.asarray(mean, dtype=np.float64))
        std = torch.as_tensor(np.asarray(std, dtype=np.float64))
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise LssError(f"standardisation of {self.mean.shape[0]} features given {tuple(mean.shape)} "
                           f"and {tuple(std.shape)} statistics")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise LssError("standardisation needs finite means and positive, finite stds")
        self.mean.copy_(mean)
        self.std.copy_(std)
        return self

    @property
    def is_identity(self) -> bool:
        return bool((self.mean == 0).all() and (self.std == 1).all())

    def _apply(self, fn: Callable, recurse: bool = True) -> "Standardize":
        # stay float64 under .float()/.to(dtype); follow device moves
        keep = dict(self._buffers)
        super()._apply(fn, recurse)
        for name, value in keep.items():
            self._buffers[name] = value.to(device=self._buffers[name].device)
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # older bundles have no standardisation: load them as the identity
        if prefix + "mean" not in state_dict and prefix + "std" not in state_dict:
            state_dict[prefix + "mean"] = torch.zeros_like(self.mean)
            state_dict[prefix + "std"] = torch.ones_like(self.std)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return f"n_features={self.mean.shape[0]}" + (", identity" if self.is_identity else "")


class LobeNetwork(Network):
    """A :class:`Network` of lobes on standardised frames (VAMPNet, SRV).

    Subclasses set ``self.standardize`` (a :class:`Standardize`), ``self.lobe``
    and ``self.lobe_t`` (``None`` when the time-lagged lobe is the same network).
    """

    standardize: Standardize
    lobe: nn.Module
    lobe_t: "nn.Module | None"  # set by the subclass (a class default would shadow the submodule)

    @property
    def lobe_timelagged(self) -> nn.Module:
        """The lobe of :math:`x_{t+\\tau}` (the instantaneous one when shared)."""
        return self.lobe if self.lobe_t is None else self.lobe_t

    def forward(self, x: Tensor) -> Tensor:
        """Outputs ``(batch, n_out)`` of the instantaneous lobe on standardised frames ``x``."""
        return self.lobe(self.standardize(x))

    def forward_pair(self, x0: Tensor, xt: Tensor) -> tuple[Tensor, Tensor]:
        """Outputs of both frames of pairs; one forward pass of ``[x0; xt]`` when the lobes are shared."""
        ref = self.reference_tensor()
        x0, xt = self.standardize(as_input(x0, ref)), self.standardize(as_input(xt, ref))
        if self.lobe_t is None:
            both = self.lobe(torch.cat((x0, xt)))
            return both[: x0.shape[0]], both[x0.shape[0] :]
        return self.lobe(x0), self.lobe_t(xt)

    def _accumulate(self, data: Any, chunk_size: int) -> CovarianceAccumulator:
        """Float64 covariances of the outputs of all pairs of ``data`` (call inside :func:`evaluating`)."""
        acc = CovarianceAccumulator(self.reference_tensor().device)
        for x0, xt in iter_pairs(data, chunk_size):
            acc.update(*self.forward_pair(x0, xt))
        return acc

    def set_standardization(self, mean: Any, std: Any) -> None:
        """Move an input normaliser into the network: frames are then given unstandardised."""
        self.standardize.set(mean, std)
