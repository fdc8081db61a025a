"""Encoder.export_module: positions -> features -> standardisation -> lobe -> whitening as one scriptable module."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from lss_engine.bundle import ModelBundle
from lss_engine.data import Normalizer
from lss_engine.encoder import Encoder
from lss_engine.features import FeatureUnion
from lss_engine.features.featurizers import Distances, Torsions
from lss_engine.models import SRV, VAMPNet


@pytest.fixture(scope="module")
def ala2_positions():
    """Alanine dipeptide (the systems module's) start positions with 0.01 nm thermal-like noise, 80 frames."""
    from lss_engine.systems import get_system

    system = get_system("alanine-dipeptide")
    xyz = np.asarray(system.positions.value_in_unit(system.positions.unit), dtype=np.float64)
    rng = np.random.default_rng(0)
    return xyz[None] + 0.01 * rng.normal(size=(80, *xyz.shape))


def _featurizer():
    return FeatureUnion([
        Torsions([[4, 6, 8, 14], [6, 8, 14, 16]], n_atoms=22, form="sincos", name="phi_psi"),
        Distances([[1, 18], [8, 10], [5, 16], [4, 14]], n_atoms=22, name="dist"),
    ])


def _encoder(kind, positions):
    torch.manual_seed(0)
    featurizer = _featurizer()
    features = featurizer(torch.as_tensor(positions)).numpy()
    normalizer = Normalizer().fit(features)
    x = normalizer.transform(features)  # training happens on normalised features
    if kind == "srv":
        model = SRV(features.shape[1], 3, hidden=(16, 16), dtype="float64").fit_whitening(x, lag=1)
    else:
        model = VAMPNet(features.shape[1], 3, hidden=(16,), dtype="float64")
    model.eval()
    expected = model.transform(x) if kind == "srv" else model.memberships(x)
    encoder = Encoder(model, kind, normalizer, 1, 1.0, list(featurizer.names), featurizer.spec())
    return encoder, features, expected


@pytest.mark.parametrize("kind", ["srv", "vampnet"])
def test_normaliser_moves_into_the_network(kind, ala2_positions, tmp_path):
    encoder, features, expected = _encoder(kind, ala2_positions)
    assert not encoder.model.standardize.is_identity
    np.testing.assert_allclose(encoder.latent(features), expected, rtol=0, atol=1e-12)
    encoder.add_to(ModelBundle())  # metadata is JSON-ready
    bundle = ModelBundle()
    encoder.add_to(bundle)
    bundle.save(tmp_path / "m")
    again = Encoder.from_bundle(ModelBundle.load(tmp_path / "m"))
    np.testing.assert_allclose(again.latent(features), expected, rtol=0, atol=1e-12)


def test_old_bundle_without_standardisation_still_loads(ala2_positions, tmp_path):
    encoder, features, expected = _encoder("srv", ala2_positions)
    bundle = ModelBundle()
    encoder.add_to(bundle)
    bundle.save(tmp_path / "m")
    # rewrite the tensors as an older bundle had them: no standardisation buffers
    from safetensors.torch import load_file, save_file

    from lss_engine.bundle import sha256

    path = tmp_path / "m" / "encoder.safetensors"
    tensors = {k: v for k, v in load_file(str(path)).items() if not k.startswith("standardize.")}
    save_file(tensors, str(path))
    import json

    manifest = json.loads((tmp_path / "m" / "model.json").read_text())
    manifest["stages"]["encoder"]["sha256"] = sha256(path)
    del manifest["stages"]["encoder"]["meta"]["standardization"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(manifest))
    old = Encoder.from_bundle(ModelBundle.load(tmp_path / "m"))
    np.testing.assert_allclose(old.latent(features), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["srv", "vampnet"])
@pytest.mark.parametrize("export", ["script", "trace"])
def test_exported_module_matches_the_python_path(kind, export, ala2_positions):
    encoder, features, _ = _encoder(kind, ala2_positions)
    module = encoder.export_module()  # featurizer rebuilt from the spec
    positions = torch.as_tensor(ala2_positions)
    if export == "script":
        exported = torch.jit.script(module)
    else:
        exported = torch.jit.trace(module, (positions[:5],))
    buffer = io.BytesIO()
    torch.jit.save(exported, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        out = loaded(positions).numpy()
    assert out.dtype == np.float64 and out.shape == (len(positions), 3 if kind == "vampnet" else encoder.model.n_latent)
    np.testing.assert_allclose(out, encoder.latent(features), rtol=0, atol=1e-5)
    np.testing.assert_allclose(out, encoder.latent(features), rtol=0, atol=1e-10)  # float64 throughout
