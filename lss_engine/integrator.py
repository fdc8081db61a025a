"""Deprecated alias of :mod:`lss_engine.replay` (the module holds no integrator).

``from lss_engine.integrator import LatentSimulation`` keeps working and gives
the same objects as ``lss_engine.replay``; import from ``lss_engine.replay``.
"""
from __future__ import annotations

import warnings

from .replay import ArrayFrameSource, FrameSource, LatentSimulation

__all__ = ["ArrayFrameSource", "FrameSource", "LatentSimulation"]

warnings.warn("lss_engine.integrator is renamed lss_engine.replay; import LatentSimulation, FrameSource and "
              "ArrayFrameSource from there", DeprecationWarning, stacklevel=2)
