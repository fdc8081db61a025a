"""The ``lss`` command line: simulate, info, help and one-line errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lss_engine.cli import main
from lss_engine.store import TrajectoryStore

LSS = [sys.executable, "-m", "lss_engine.cli"]


def test_simulate_then_info(tmp_path, capsys):
    out = tmp_path / "ala2.zarr"
    code = main(["simulate", "--system", "alanine-dipeptide", "--temperature", "450", "--ns", "0.01",
                 "--report-interval", "0.1ps", "--features", "backbone-torsions,heavy-atom-distances",
                 "--save-atoms", "heavy", "--seed", "3", "--out", str(out), "--no-progress",
                 "--equilibrate", "0ps"])
    assert code == 0
    store = TrajectoryStore(out)
    assert store.n_frames == 100
    assert store.observable_names == ["backbone_torsions", "heavy_atom_distances"]
    assert len(store.atom_indices) == 10
    assert store.temperature_K == pytest.approx(450)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "frames         100" in text and "backbone_torsions (2)" in text and "schema         2" in text


def test_resume_continues_to_the_requested_length(tmp_path, capsys):
    out = tmp_path / "toy.zarr"
    common = ["simulate", "--system", "four-well", "--report-interval", "10steps", "--out", str(out),
              "--no-progress", "--flush-interval", "20", "--seed", "1"]
    assert main(common + ["--steps", "600"]) == 0
    assert main(common + ["--steps", "1500", "--resume"]) == 0
    store = TrajectoryStore(out)
    np.testing.assert_array_equal(store.steps(), np.arange(1, 151) * 10)
    assert store.observable_names == ["positions"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["simulate", "--system", "nosuch", "--out", "x.zarr"], "nosuch"),
        (["simulate", "--report-interval", "0.3fs", "--out", "x.zarr"], "report-interval"),
        (["simulate", "--ns", "abc", "--out", "x.zarr"], "--ns"),
        (["simulate", "--features", "bogus", "--ns", "0.001", "--out", "x.zarr"], "bogus"),
        (["info", "does-not-exist.zarr"], "not an lss_engine trajectory store"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line(tmp_path, argv, message):
    result = subprocess.run(LSS + argv, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode in (1, 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_existing_output_is_not_clobbered(tmp_path):
    out = tmp_path / "keep.zarr"
    assert main(["simulate", "--system", "double-well", "--steps", "100", "--report-interval", "10steps",
                 "--out", str(out), "--no-progress"]) == 0
    result = subprocess.run(LSS + ["simulate", "--system", "double-well", "--steps", "100", "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "exists" in result.stderr
    assert TrajectoryStore(out).n_frames == 10


def test_help_documents_every_option():
    text = subprocess.run(LSS + ["simulate", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--system", "--temperature", "--ns", "--report-interval", "--features", "--save-atoms",
                   "--out", "--seed", "--platform", "--resume", "--flush-interval"):
        assert option in text
    assert "four-well" in text
    assert subprocess.run(LSS + ["info", "--help"], capture_output=True, text=True).returncode == 0


def test_every_system_is_selectable(tmp_path):
    from lss_engine.systems import list_systems

    for name in list_systems():
        out = tmp_path / f"{name}.zarr"
        assert main(["simulate", "--system", name, "--steps", "40", "--report-interval", "10steps",
                     "--out", str(out), "--no-progress", "--equilibrate", "0ps"]) == 0, name
        assert TrajectoryStore(out).n_frames == 4


def test_ctrl_c_then_resume(tmp_path):
    import signal
    import time

    out = tmp_path / "int.zarr"
    argv = LSS + ["simulate", "--system", "alanine-dipeptide", "--report-interval", "1ps", "--out", str(out),
                  "--seed", "4", "--no-progress", "--flush-interval", "20"]
    child = subprocess.Popen(argv + ["--ns", "50"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            if TrajectoryStore(out).n_frames >= 60:
                break
        except Exception:  # not created yet
            pass
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130 and "--resume" in err
    done = TrajectoryStore(out).n_frames
    assert done >= 60
    total_ps = done + 30
    result = subprocess.run(argv + ["--ns", str(total_ps / 1000), "--resume"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    store = TrajectoryStore(out)
    np.testing.assert_array_equal(store.steps(), np.arange(1, total_ps + 1) * 500)


def test_simulate_walkers_run_in_parallel_processes_with_their_own_seeds(tmp_path, capsys):
    out = tmp_path / "md.zarr"
    argv = ["simulate", "--system", "alanine-dipeptide", "--temperature", "450", "--ns", "0.004",
            "--report-interval", "0.2ps", "--features", "backbone-torsions", "--save-atoms", "heavy",
            "--equilibrate", "0ps", "--seed", "7", "--walkers", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    stores = [TrajectoryStore(tmp_path / f"md_{k}.zarr") for k in range(2)]
    assert not out.exists()
    assert [s.n_frames for s in stores] == [20, 20]
    assert [s.provenance["seed"] for s in stores] == [7, 8]
    assert not np.allclose(stores[0].features(), stores[1].features())  # independent walkers
    assert all((tmp_path / f"md_{k}.zarr.state.xml").is_file() for k in range(2))
    assert "2 walkers" in capsys.readouterr().out
    assert main(argv) == 1  # existing walker stores are not clobbered ...
    assert "--overwrite" in capsys.readouterr().err
    assert main(argv[:6] + ["0.006"] + argv[7:] + ["--resume"]) == 0  # ... but resumed, each from its checkpoint
    assert [TrajectoryStore(tmp_path / f"md_{k}.zarr").n_frames for k in range(2)] == [30, 30]


def test_demo_closing_lines_compare_with_the_shipped_long_md_reference(tmp_path):
    import importlib.resources
    import json

    from lss_engine.cli import DEMO_REFERENCE, _demo_comparison

    reference = json.loads(importlib.resources.files("lss_engine").joinpath("resources", DEMO_REFERENCE).read_text())
    assert reference["slowest_timescale_ps"] == 770 and reference["mfpt_ns"]["C7eq->C7ax"] == 12.8
    assert "OpenMM 8.6.1" in reference["provenance"] and "seeds 101 and 202" in reference["provenance"]
    model = tmp_path / "model"
    (model / "validation").mkdir(parents=True)
    (model / "metrics.json").write_text(json.dumps({"model_implied_timescales_ps": [289.4, 40.0]}))
    part = {"time_ns": 20.0, "msm_grid": [24, 24], "msm_lag_ps": 10.0, "slowest_timescale_ps": 512.0,
            "fraction_phi_positive": 0.041,
            "mfpt_ps": {"C7eq->C7ax": {"mean": 9100.0, "n": 1, "n_censored": 1},
                        "C7ax->C7eq": {"mean": None, "n": 0, "n_censored": 0}}}
    (model / "validation" / "metrics.json").write_text(json.dumps({"torsion_kinetics": {"md": part, "lss": part}}))
    text = _demo_comparison(model)
    assert "770 ps" in text and "12.8 ns (n=36)" in text and "5.9 %" in text
    assert "289 ps" in text and "512 ps" in text and "9.10 ns (n=1)" in text and "none seen" in text
    assert "no comparison" in _demo_comparison(tmp_path / "nothing")
