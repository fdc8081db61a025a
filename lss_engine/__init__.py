"""lss_engine: learn kinetic models from live OpenMM molecular dynamics.

The package follows the path the data travels (see ``ARCHITECTURE.md``):
``systems`` → ``reporters`` (featurize with ``features``) → ``store`` (zarr)
→ ``data`` → ``models`` + ``train`` → ``kinetics`` / ``simulator``.

Submodules are imported on first use so that ``import lss_engine`` stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ZarrReporter": "lss_engine.reporters",
    "LatentReporter": "lss_engine.reporters",
    "TrajectoryStore": "lss_engine.store",
    "open_store": "lss_engine.store",
    "open_stores": "lss_engine.store",
    "get_system": "lss_engine.systems",
    "TimeLaggedDataset": "lss_engine.data",
    "LatentSimulation": "lss_engine.replay",
    "LatentSpaceSimulator": "lss_engine.simulator",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lss_engine' has no attribute {name!r}")
