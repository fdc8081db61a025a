"""A trained encoder with what it needs to read stores: normaliser, lag, feature spec.

The input normaliser lives inside the network (its
:class:`~lss_engine.models.base.Standardize` block): when an :class:`Encoder`
is made from a network whose standardisation is still the identity (freshly
trained on normalised data, or loaded from a bundle written before the block
existed), the normaliser's mean and std are moved into it, and from then on
the network takes raw features.  :meth:`Encoder.export_module` gives
positions → features → standardisation → lobe → whitening as one
``nn.Module`` for ``torch.jit.script``/``torch.jit.trace``.

:class:`Encoder` maps store features to the learned coordinates:

* SRV: the whitened slow eigenfunctions ψ1…ψm (``latent``);
* VAMPNet: the fuzzy memberships (``latent``) and, for analysis, the slow
  eigenfunctions of its Koopman matrix, :math:`\\phi_i(x) = \\chi(x)^\\top r_i`
  with :math:`K r_i = \\lambda_i r_i` (``slow_coordinates``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .bundle import ModelBundle
from .data import Normalizer
from .errors import LssError


@dataclass
class Encoder:
    """A trained SRV or VAMPNet plus its input normaliser and metadata."""

    model: Any
    kind: str  # "srv" | "vampnet"
    normalizer: Normalizer
    lag_frames: int
    frame_interval_ps: float
    feature_names: list[str]
    feature_spec: dict | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        standardize = getattr(self.model, "standardize", None)
        if standardize is not None and standardize.is_identity and self.normalizer.fitted:
            self.model.set_standardization(self.normalizer.mean, self.normalizer.std)

    @property
    def lag_ps(self) -> float:
        return self.lag_frames * self.frame_interval_ps

    def _check(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            raise LssError(
                f"the encoder expects {len(self.feature_names)} features per frame, got array of shape {features.shape}"
            )
        return features

    def latent(self, features: np.ndarray) -> np.ndarray:
        """SRV: ψ ``(n, n_latent)``; VAMPNet: memberships ``(n, n_states)``."""
        x = self._check(features)  # the network standardises its input itself
        if self.kind == "srv":
            return self.model.transform(x)
        return self.model.memberships(x)

    def slow_coordinates(self, features: np.ndarray) -> np.ndarray:
        """Slow eigenfunctions, slowest first (SRV: ψ; VAMPNet: Koopman right eigenvectors of χ)."""
        z = self.latent(features)
        if self.kind == "srv":
            return z
        vectors = np.asarray(self.extra["koopman_right_eigenvectors"])
        return (z @ vectors)[:, 1:]  # drop the constant eigenfunction

    def matches(self, store) -> None:
        """Refuse a store whose features are not the ones the encoder was trained on."""
        if list(store.feature_names) != list(self.feature_names):
            raise LssError(f"{store.path}: its features differ from the ones the model was trained on")
        if not np.isclose(store.frame_interval_ps, self.frame_interval_ps, rtol=1e-9):
            raise LssError(
                f"{store.path}: frame interval {store.frame_interval_ps:g} ps differs from the model's "
                f"{self.frame_interval_ps:g} ps"
            )

    # -- bundle ------------------------------------------------------------
    def add_to(self, bundle: ModelBundle, **training: Any) -> None:
        bundle.add(
            "encoder",
            self.model,
            kind=self.kind,
            lag_frames=self.lag_frames,
            lag_ps=self.lag_ps,
            frame_interval_ps=self.frame_interval_ps,
            feature_names=list(self.feature_names),
            feature_spec=self.feature_spec,
            normalizer=self.normalizer.state_dict(),
            standardization="in-network",
            extra=self.extra,
            training=training,
        )

    @classmethod
    def from_bundle(cls, bundle: ModelBundle) -> "Encoder":
        stage = bundle["encoder"]
        meta = stage.meta
        return cls(
            model=stage.model,
            kind=meta["kind"],
            normalizer=Normalizer.from_state_dict(meta["normalizer"]),
            lag_frames=int(meta["lag_frames"]),
            frame_interval_ps=float(meta["frame_interval_ps"]),
            feature_names=list(meta["feature_names"]),
            feature_spec=meta.get("feature_spec"),
            extra=dict(meta.get("extra", {})),
        )


    def export_module(self, featurizer: Optional[nn.Module] = None, dim: int | None = None, *,
                      dtype: Optional[torch.dtype] = None) -> "EncoderModule":
        """Positions → latent as one ``nn.Module`` (:class:`EncoderModule`), scriptable and traceable.

        Parameters
        ----------
        featurizer
            The torch featurizer of the features the encoder was trained on
            (default: rebuilt from :attr:`feature_spec`).
        dim
            SRV: leading eigenfunctions (default ``n_latent``).  VAMPNet: ignored
            (the output is the memberships, as :meth:`latent`).
        dtype
            The network's dtype in the module (default: the trained network's);
            ``torch.float64`` for forces on OpenMM's Reference/CPU platforms.
        """
        if featurizer is None:
            if self.feature_spec is None:
                raise LssError("the encoder has no feature spec; pass featurizer=")
            from .features import featurizer_from_spec

            featurizer = featurizer_from_spec(self.feature_spec)
        n = getattr(featurizer, "n_features", None)
        if n is not None and int(n) != len(self.feature_names):
            raise LssError(f"the featurizer gives {n} features, the encoder expects {len(self.feature_names)}")
        return EncoderModule(featurizer, self.model, self.kind, dim, dtype)


class EncoderModule(nn.Module):
    r"""Featurizer → standardisation → lobe → whitening, positions ``(n_frames, n_atoms, 3)`` nm → latent.

    SRV: :math:`\psi(x) = (z(\tilde f(x)) - \mu)^\top V_{:, :m}` in float64 with
    :math:`\tilde f = (f - \mu_f)/\sigma_f`; VAMPNet: the memberships
    :math:`\chi(\tilde f(x))`.  Features are computed in the dtype of the
    positions and cast to the network's dtype.  The parts are copies of the
    encoder's (changing the encoder later does not change this module).
    """

    def __init__(self, featurizer: nn.Module, model: Any, kind: str, dim: int | None = None,
                 dtype: Optional[torch.dtype] = None):
        super().__init__()
        import copy

        if kind not in ("srv", "vampnet"):
            raise LssError(f"unknown encoder kind {kind!r}")
        self.featurizer = copy.deepcopy(featurizer)
        self.standardize = copy.deepcopy(model.standardize)
        self.lobe = copy.deepcopy(model.lobe)
        self.is_srv = kind == "srv"
        self.dtype = model.reference_tensor().dtype if dtype is None else dtype
        self.lobe.to(self.dtype)
        if self.is_srv:
            model._check_whitened()
            d = model._dim(dim)
            self.register_buffer("whiten_mean", model.whiten_mean.detach().clone().to(torch.float64))
            self.register_buffer("whiten_vectors", model.whiten_vectors[:, :d].detach().clone().to(torch.float64))
        else:
            self.register_buffer("whiten_mean", torch.zeros(0, dtype=torch.float64))
            self.register_buffer("whiten_vectors", torch.zeros(0, 0, dtype=torch.float64))
        self.eval()

    def forward(self, positions: torch.Tensor, box: Optional[torch.Tensor] = None) -> torch.Tensor:
        features = self.featurizer(positions, box)
        z = self.lobe(self.standardize(features.to(self.dtype)))
        if self.is_srv:
            return (z.to(torch.float64) - self.whiten_mean) @ self.whiten_vectors
        return z


def koopman_eigenvectors(transition_matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending |λ|) and right eigenvectors of a transition matrix, real parts."""
    evals, evecs = np.linalg.eig(np.asarray(transition_matrix, dtype=np.float64))
    order = np.argsort(-np.abs(evals))
    return np.real(evals[order]), np.real(evecs[:, order])


def features_of(stores: Sequence[Any]) -> list[np.ndarray]:
    """Feature arrays, one per store (trajectory)."""
    return [store.features() for store in stores]
