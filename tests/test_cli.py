"""The ``lss`` command line: simulate, info, help and one-line errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    assert "frames         100" in text and "backbone_torsions (2)" in text and "schema         1" in text


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
