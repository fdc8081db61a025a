"""The helpers defined once in lss_engine._helpers: implied timescales, argument checks, seeds, JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lss_engine import _helpers as h
from lss_engine.errors import LssError, SpecError


def test_implied_timescale_edge_cases():
    lam = np.array([1.0, 1 + 1e-12, 1.5, 0.0, -0.3, -1.0, 1e-300, 0.5, np.nan])
    t = h.implied_timescales(lam, lag=2.0)
    assert t.dtype == np.float64 and t.shape == lam.shape
    assert np.isposinf(t[:3]).all()  # lambda >= 1: infinitely slow, no tolerance needed
    assert np.isnan(t[[3, 4, 5, 8]]).all()  # lambda <= 0 (and NaN): no relaxation timescale
    assert 0 < t[6] < 1e-2 and np.isfinite(t[6])  # tiny positive: small positive time
    assert t[7] == pytest.approx(-2.0 / np.log(0.5))
    # continuous from below at 1
    assert h.implied_timescales([1 - 1e-12], 1.0)[0] > 1e11


def test_implied_timescales_of_complex_eigenvalues_use_the_modulus():
    lam = np.array([0.5 + 0.5j, 0.25 + 0j, -0.25 + 0j])
    t = h.implied_timescales(lam, 1.0)
    np.testing.assert_allclose(t[:2], -1.0 / np.log([abs(lam[0]), 0.25]))
    assert np.isnan(t[2])  # a real negative eigenvalue stays NaN when the array is complex


def test_implied_timescales_agree_with_deeptime_on_ordinary_eigenvalues():
    import deeptime  # a test dependency (pyproject's [test] extra): a missing one is an error, not a skip
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 50, size=(5, 5)) + np.diag([400] * 5)
    msm = deeptime.markov.msm.MaximumLikelihoodMSM(reversible=True, lagtime=3).fit_from_counts(counts).fetch_model()
    lam = msm.eigenvalues()[1:]
    assert np.all((lam > 0) & (lam < 1))
    np.testing.assert_allclose(h.implied_timescales(lam, msm.lagtime), msm.timescales(), rtol=1e-12)


def test_every_timescale_user_follows_the_rule():
    from lss_engine.kinetics import timescales_from_eigenvalues
    from lss_engine.models.vampnet import koopman_model_from_moments

    lam = np.array([0.9, 1 + 1e-9, -0.4, 0.0])
    np.testing.assert_array_equal(timescales_from_eigenvalues(lam, 2, dt=0.5), h.implied_timescales(lam, 1.0))
    # a Koopman model with a negative eigenvalue (period-2 oscillation): NaN, as everywhere
    t = np.array([[0.1, 0.9], [0.9, 0.1]])
    km = koopman_model_from_moments(np.eye(2) / 2, t / 2, lag=1.0)
    assert km.eigenvalues[1] == pytest.approx(-0.8) and np.isnan(km.implied_timescales[0])


def test_positive_checks():
    assert h.positive_int(np.int64(3), "n") == 3
    assert h.positive_int(0, "n", minimum=0) == 0
    assert h.positive_int(" 4", "--dim", text=True) == 4
    for bad in (0, -1, True, 2.0, "3", None):
        with pytest.raises(LssError):
            h.positive_int(bad, "n")
    with pytest.raises(LssError, match="--dim must be an integer"):
        h.positive_int("x", "--dim", text=True)
    with pytest.raises(SpecError):
        h.positive_int(0, "n_in", error=SpecError)
    assert h.positive_float("2.5", "x") == 2.5
    assert h.positive_float(0, "x", allow_zero=True) == 0.0
    for bad in (0, -1.0, float("nan"), float("inf"), "a", None):
        with pytest.raises(LssError):
            h.positive_float(bad, "x")


def test_seeds_devices_and_messages():
    assert h.derive_seed(7, 1, 2) == h.derive_seed(7, 1, 2) != h.derive_seed(7, 2, 1)
    assert 0 <= h.derive_seed(7) < 2**63 and 0 <= h.fresh_seed() < 2**63
    assert h.resolve_device("cpu").type == "cpu" and h.resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(LssError):
        h.resolve_device("no-such-device")
    assert h.first_line(ValueError("one\ntwo")) == "one" and h.first_line(KeyError()) == "KeyError"


def test_strict_json(tmp_path):
    obj = {"a": np.arange(3), "b": (np.float32(1.5), np.nan, np.inf), 1: np.bool_(True), "c": np.int64(2)}
    assert h.jsonable(obj) == {"a": [0, 1, 2], "b": [1.5, None, None], "1": True, "c": 2}
    assert h.jsonable({"p": tmp_path}, default=str) == {"p": str(tmp_path)}
    h.atomic_write_json(tmp_path / "x.json", obj)
    assert json.loads((tmp_path / "x.json").read_text())["b"] == [1.5, None, None]
    assert not list(tmp_path.glob("*" + h.TEMP_SUFFIX))
