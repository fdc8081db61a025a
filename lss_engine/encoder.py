"""A trained encoder with what it needs to read stores: normaliser, lag, feature spec.

:class:`Encoder` maps store features to the learned coordinates:

* SRV: the whitened slow eigenfunctions ψ1…ψm (``latent``);
* VAMPNet: the fuzzy memberships (``latent``) and, for analysis, the slow
  eigenfunctions of its Koopman matrix, :math:`\\phi_i(x) = \\chi(x)^\\top r_i`
  with :math:`K r_i = \\lambda_i r_i` (``slow_coordinates``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

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
        x = self.normalizer.transform(self._check(features).astype(np.float32))
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


def koopman_eigenvectors(transition_matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending |λ|) and right eigenvectors of a transition matrix, real parts."""
    evals, evecs = np.linalg.eig(np.asarray(transition_matrix, dtype=np.float64))
    order = np.argsort(-np.abs(evals))
    return np.real(evals[order]), np.real(evecs[:, order])


def features_of(stores: Sequence[Any]) -> list[np.ndarray]:
    """Feature arrays, one per store (trajectory)."""
    return [store.features() for store in stores]
