"""Learned collective variables in the MD engine: OpenMM forces in an encoder's latent space.

* :mod:`~lss_engine.bias.potentials` -- the energies in latent space
  (harmonic restraint with global centre/stiffness, flat-bottom walls,
  Gaussian sum), torch modules with the math in their docstrings;
* :mod:`~lss_engine.bias.module` -- :class:`LatentBiasModule`: the encoder
  export (positions [+ box] → latent) followed by the terms, one module;
* :mod:`~lss_engine.bias.backends` -- one small interface making an OpenMM
  force of it: openmm-torch ``TorchForce`` or OpenMM's ``PythonForce``;
* :mod:`~lss_engine.bias.forces` -- :func:`latent_bias_force` (from a model
  directory) and its :class:`LatentBias` handle (global parameters, latent
  read-back from energy-parameter derivatives); :func:`latent_cv_force` and
  :func:`latent_bias_variable` for OpenMM's own ``Metadynamics``;
* :mod:`~lss_engine.bias.metadynamics` -- :class:`LatentMetadynamics`:
  continuous (well-tempered) metadynamics, hills grown in place on the
  ``PythonForce`` backend;
* :mod:`~lss_engine.bias.reweight` -- unbiased weights of biased runs
  (MBAR; deeptime's TRAM) and the reweighted free energy with bootstrap errors.

Names are imported lazily, so ``import lss_engine.bias.<submodule>`` loads
only what that submodule needs.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "LatentTerm": "potentials", "HarmonicRestraint": "potentials", "FlatBottomWalls": "potentials",
    "GaussianSum": "potentials",
    "LatentBiasModule": "module", "TorchForceModule": "module",
    "ForceBackend": "backends", "TorchForceBackend": "backends", "PythonForceBackend": "backends",
    "choose_backend": "backends",
    "LatentBias": "forces", "latent_bias_force": "forces", "latent_cv_force": "forces",
    "latent_bias_variable": "forces", "latent_training_range": "forces", "DEFAULT_FORCE_GROUP": "forces",
    "ReweightResult": "reweight", "ReweightedProfile": "reweight", "mbar_weights": "reweight",
    "tram_weights": "reweight", "reweighted_fes": "reweight", "tram_bootstrap": "reweight", "run_labels": "reweight",
    "LatentMetadynamics": "metadynamics",
}

__all__ = ["DEFAULT_FORCE_GROUP", "FlatBottomWalls", "ForceBackend", "GaussianSum", "HarmonicRestraint",
           "LatentBias", "LatentBiasModule", "LatentTerm", "PythonForceBackend", "TorchForceBackend",
           "TorchForceModule", "choose_backend", "latent_bias_force", "latent_bias_variable", "latent_cv_force",
           "latent_training_range", "ReweightResult", "ReweightedProfile", "mbar_weights", "tram_weights",
           "reweighted_fes", "tram_bootstrap", "run_labels", "LatentMetadynamics"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
