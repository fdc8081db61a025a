"""``configure_threads``: the torch thread count of training and generation, and the ``--threads`` options."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lss_engine.errors import LssError

PROBE = (
    "import json, os, torch\n"
    "from lss_engine._helpers import configure_threads, usable_cores\n"
    "arg = json.loads(os.environ['PROBE_ARG'])\n"
    "n = configure_threads(arg)\n"
    "print(json.dumps([n, torch.get_num_threads(), torch.get_num_interop_threads(), usable_cores()]))\n"
)


def probe(arg, omp=None):
    """``configure_threads(arg)`` in a fresh process (thread settings are process-wide)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PROBE_ARG"] = json.dumps(arg)
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_rule_explicit_count_and_environment():
    n, intra, interop, cores = probe(None)
    assert n == intra == min(4, max(1, cores // 2)) and interop == 1
    assert probe(3)[:2] == [3, 3]  # an explicit count wins, also over the machine's size
    assert probe(None, omp="2")[:2] == [2, 2]  # the user's OMP_NUM_THREADS is the default when set


def test_bad_counts_are_clear_errors():
    from lss_engine._helpers import configure_threads

    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(LssError, match="threads"):
            configure_threads(bad)


def test_cli_commands_take_threads():
    from lss_engine.cli import _build_parser

    parser = _build_parser()
    for argv in (["train", "s.zarr", "--out", "m"], ["generate", "m", "--steps", "1", "--out", "x.dcd"],
                 ["sample-latent", "m", "--steps", "1", "--out", "d"], ["demo"]):
        assert parser.parse_args(argv).threads is None
        assert parser.parse_args([*argv, "--threads", "2"]).threads == 2
