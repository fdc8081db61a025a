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


@pytest.fixture(scope="session")
def ala2_model(ala2_store, tmp_path_factory):
    """A small simulator (SRV, MDN, cWGAN) trained on the 200-frame alanine dipeptide store (a few seconds).

    Read-only for the tests that use it: copy it before changing anything.
    """
    from lss_engine.pipeline import (DecoderSettings, EncoderSettings, PropagatorSettings, train_decoder,
                                     train_encoder, train_propagator)

    out = tmp_path_factory.mktemp("lss") / "model"
    train_encoder([ala2_store], EncoderSettings(kind="srv", lag=2, dim=2, hidden=(16,), epochs=3, restarts=1,
                                                batch_size=64, progress=False), out, analyze=False)
    train_propagator(out, [ala2_store], PropagatorSettings(kind="mdn", n_components=3, hidden=(16,), epochs=3,
                                                           batch_size=64, progress=False))
    train_decoder(out, [ala2_store], DecoderSettings(hidden=(32,), noise_dim=8, n_critic=2, epochs=2,
                                                     batch_size=32, progress=False))
    return out


@pytest.fixture(scope="session")
def encoder(ala2_model):
    """The :class:`~lss_engine.encoder.Encoder` of ``ala2_model``, read through its checked bundle."""
    from lss_engine.bundle import ModelBundle
    from lss_engine.encoder import Encoder

    return Encoder.from_bundle(ModelBundle.load(ala2_model))


def finite(a) -> bool:
    return bool(np.isfinite(np.asarray(a)).all())
