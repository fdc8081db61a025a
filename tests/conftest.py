"""Shared fixtures: short real OpenMM runs of alanine dipeptide."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def ala2_system():
    from lss_engine.systems import get_system

    return get_system("alanine-dipeptide", temperature=450.0)


@pytest.fixture
def ala2_simulation(ala2_system):
    """A fresh, minimised 450 K alanine dipeptide simulation on the Reference platform."""
    return ala2_system.make_simulation(platform="Reference", seed=7)


@pytest.fixture(scope="session")
def ala2_store(ala2_system, tmp_path_factory):
    """A 200-frame store (every 50 steps) with torsions and heavy-atom distances."""
    from lss_engine.reporters import ZarrReporter

    path = tmp_path_factory.mktemp("stores") / "ala2.zarr"
    sim = ala2_system.make_simulation(platform="Reference", seed=3)
    with ZarrReporter(path, 50, featurizer="backbone-torsions,heavy-atom-distances", atoms="heavy",
                      flush_interval=64) as rep:
        sim.reporters.append(rep)
        sim.step(200 * 50)
    return path


def finite(a) -> bool:
    return bool(np.isfinite(np.asarray(a)).all())
