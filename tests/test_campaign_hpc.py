"""``lss_engine.campaign.hpc``: SLURM settings, the rendered job script, and the dask-jobqueue cluster.

No SLURM is needed: job scripts are rendered without a scheduler, the one
cluster test starts only a local Dask scheduler (no job is submitted), and the
lifetime test submits to stand-in ``sbatch``/``scancel`` scripts that run the
job script as a local process group.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("dask_jobqueue")

from lss_engine.campaign import hpc
from lss_engine.campaign.hpc import PLACEHOLDER_SCHEDULER, SlurmSettings, render_job_script, slurm_cluster
from lss_engine.errors import LssError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "hpc.md"


def _children() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def _new_threads(before: set[int], wait: float = 5.0) -> list[str]:
    """Names of threads not in ``before`` that are still alive after up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        extra = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.1)


def _dask_worker_line(script: str) -> str:
    (line,) = [x for x in script.splitlines() if "distributed.cli.dask_worker" in x]
    return line


def test_cpu_job_script_has_partition_account_walltime_threads_and_lifetime():
    settings = SlurmSettings(partition="compute", account="proj42", walltime="02:00:00", cores=8, processes=8,
                             memory="32GiB", job_script_prologue=["module load openmm", "source ~/lss/bin/activate"],
                             local_directory="$TMPDIR", job_extra_directives=["--qos=normal"])
    script = render_job_script(settings)
    assert script.startswith("#!/usr/bin/env bash")
    for line in ("#SBATCH -p compute", "#SBATCH -A proj42", "#SBATCH -t 02:00:00", "#SBATCH -n 1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G", "#SBATCH --qos=normal", "#SBATCH -J lss-worker"):
        assert line in script.splitlines(), line
    assert "--gres" not in script
    lines = script.splitlines()
    # The thread exports come first, then the user's prologue, then the worker command.
    assert lines.index("export OMP_NUM_THREADS=1") < lines.index("module load openmm") < lines.index(
        _dask_worker_line(script))
    for var in hpc.THREAD_VARIABLES:
        assert f"export {var}=1" in lines
    worker = _dask_worker_line(script)
    assert PLACEHOLDER_SCHEDULER in worker
    assert "--nthreads 1" in worker and "--nworkers 8" in worker
    assert "--memory-limit 4.00GiB" in worker
    assert "--lifetime 115m" in worker and "--lifetime-stagger 4m" in worker
    assert "--lifetime-restart" not in worker and "--resources" not in worker
    assert "--local-directory $TMPDIR" in worker


def test_gpu_job_script_books_gpus_and_tags_the_workers():
    settings = SlurmSettings(partition="gpu", account="proj42", cores=1, processes=1, gpus=1, memory="8GiB",
                             walltime="04:00:00")
    script = render_job_script(settings)
    lines = script.splitlines()
    assert "#SBATCH --gres=gpu:1" in lines and "#SBATCH -p gpu" in lines and "#SBATCH -t 04:00:00" in lines
    assert "export OMP_NUM_THREADS=1" in lines
    worker = _dask_worker_line(script)
    assert "--resources GPU=1" in worker and "--nthreads 1" in worker
    assert "--nworkers" not in worker  # one worker per job
    assert "--lifetime 235m" in worker and "--lifetime-stagger 4m" in worker

    # Extra CPUs per worker go to the task's thread pools; a site's own GPU directive.
    typed = SlurmSettings(cores=4, processes=1, gpus=2, gpu_directive="--gres=gpu:a100:{gpus}",
                          lifetime_restart=True)
    script = render_job_script(typed)
    assert "#SBATCH --gres=gpu:a100:2" in script.splitlines() and "#SBATCH --cpus-per-task=4" in script
    assert "export OMP_NUM_THREADS=4" in script.splitlines()
    worker = _dask_worker_line(script)
    assert "--resources GPU=2" in worker and "--nthreads 1" in worker and "--lifetime-restart" in worker

    # Several workers may share one GPU: each advertises it.
    shared = render_job_script(SlurmSettings(cores=2, processes=2, gpus=1))
    assert "--resources GPU=1" in _dask_worker_line(shared) and "--nworkers 2" in shared


@pytest.mark.parametrize("walltime, expected", [
    ("02:00:00", ("115m", "4m")),
    ("01:00:00", ("55m", "4m")),
    ("00:30:00", ("1650s", "2m")),  # margin walltime/12 = 150 s, stagger 4/5 of it
    ("48:00:00", ("2875m", "4m")),
    ("00:01:00", ("55s", "4s")),
])
def test_lifetime_is_derived_from_the_walltime(walltime, expected):
    from dask.utils import parse_timedelta

    settings = SlurmSettings(walltime=walltime)
    settings.check()
    assert settings.worker_lifetime() == expected
    life, stagger = (parse_timedelta(x) for x in expected)
    assert life + stagger < settings.walltime_seconds  # retired before SLURM's kill, even the latest one
    assert life - stagger > 0


def test_explicit_lifetime_and_round_trips():
    settings = SlurmSettings(walltime="03:00:00", lifetime="2h", lifetime_stagger="10m", partition="p",
                             job_script_prologue=["conda activate lss"])
    assert settings.worker_lifetime() == ("2h", "10m")
    assert "--lifetime 2h --lifetime-stagger 10m" in render_job_script(settings)
    mapping = settings.to_mapping()
    assert "account" not in mapping  # None fields are left out (TOML has no null)
    assert SlurmSettings.from_mapping(json.loads(json.dumps(mapping))) == settings
    toml = "\n".join(f"{k} = {json.dumps(v)}" for k, v in mapping.items())  # JSON scalars/lists are TOML too
    assert SlurmSettings.from_mapping(tomllib.loads(toml)) == settings
    assert SlurmSettings.from_mapping({}) == SlurmSettings()


@pytest.mark.parametrize("mapping, key", [
    ({"cores": -2}, "cores"),
    ({"cores": 0}, "cores"),
    ({"cores": True}, "cores"),
    ({"cores": "4"}, "cores"),
    ({"processes": 3, "cores": 4}, "cores"),
    ({"gpus": -1}, "gpus"),
    ({"gpus": 2, "processes": 2, "cores": 2}, "gpus"),
    ({"nodes": 2}, "nodes"),
    ({"queue": "gpu"}, "queue"),
    ({"walltime": "2:00"}, "walltime"),
    ({"walltime": "1-00:00:00"}, "walltime"),
    ({"walltime": "02:75:00"}, "walltime"),
    ({"walltime": 7200}, "walltime"),
    ({"walltime": "00:00:30"}, "walltime"),
    ({"memory": "lots"}, "memory"),
    ({"memory": 16}, "memory"),
    ({"partition": ""}, "partition"),
    ({"account": "my account"}, "account"),
    ({"job_script_prologue": "module load x"}, "job_script_prologue"),
    ({"job_script_prologue": ["ok", 3]}, "job_script_prologue"),
    ({"job_extra_directives": ["--a\n--b"]}, "job_extra_directives"),
    ({"gpu_directive": "--gres=gpu:1"}, "gpu_directive"),
    ({"lifetime": "soon"}, "lifetime"),
    ({"lifetime": "55 m"}, "lifetime"),
    ({"local_directory": "/scratch/my dir"}, "local_directory"),
    ({"lifetime": "2h"}, "lifetime"),  # 2h + 4m stagger >= 2h walltime
    ({"lifetime": "30m", "lifetime_stagger": "40m"}, "lifetime_stagger"),
    ({"lifetime_restart": "yes"}, "lifetime_restart"),
])
def test_bad_settings_are_one_line_errors_naming_the_key(mapping, key):
    with pytest.raises(LssError) as info:
        SlurmSettings.from_mapping(mapping)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    assert f"cluster.slurm.{key}" in message, message


def test_from_mapping_refuses_a_non_table_and_uses_the_prefix():
    with pytest.raises(LssError, match=r"^\[slurm\] must be a table"):
        SlurmSettings.from_mapping(["cores", 4], where="slurm")
    with pytest.raises(LssError, match=r"^unknown key slurm\.bogus \(valid: partition, account, "):
        SlurmSettings.from_mapping({"bogus": 1}, where="slurm")
    # Settings built directly are checked when used.
    with pytest.raises(LssError, match="cluster.slurm.cores"):
        render_job_script(SlurmSettings(cores=-1))


def test_script_for_a_running_scheduler():
    script = render_job_script(SlurmSettings(processes=1, cores=1), scheduler_address="tcp://10.1.2.3:8786",
                               worker_name="lss-$SLURM_JOB_ID")
    assert "distributed.cli.dask_worker tcp://10.1.2.3:8786 --name lss-$SLURM_JOB_ID " in script
    with pytest.raises(LssError, match="^worker_name must be"):
        render_job_script(SlurmSettings(), worker_name="two words")


def test_rendering_starts_nothing():
    threads, children = {t.ident for t in threading.enumerate()}, _children()
    for settings in (SlurmSettings(), SlurmSettings(gpus=1, processes=1, cores=2)):
        render_job_script(settings)
    assert _new_threads(threads, wait=0) == []
    assert _children() - children == set()


def test_cluster_renders_the_same_script_and_closes_cleanly():
    from dask_jobqueue import SLURMCluster

    settings = SlurmSettings(partition="gpu", account="proj42", cores=2, processes=2, gpus=1)
    threads, children = {t.ident for t in threading.enumerate()}, _children()
    with slurm_cluster(settings, scheduler_options={"dashboard_address": ":0"}) as cluster:
        assert isinstance(cluster, SLURMCluster)
        assert cluster.worker_spec == {}  # nothing submitted
        assert cluster.job_script() == render_job_script(settings, scheduler_address=cluster.scheduler.address)
    assert _new_threads(threads) == []
    assert _children() - children == set()


def test_missing_dask_jobqueue_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # makes "import dask_jobqueue" fail
    monkeypatch.setattr(hpc, "_CLUSTER_CLASS", None)
    for call in (lambda: render_job_script(SlurmSettings()), lambda: slurm_cluster(SlurmSettings())):
        with pytest.raises(LssError, match=r"pip install lss_engine\[hpc\]$"):
            call()


def test_docs_toml_snippets_are_valid_settings():
    text = DOCS.read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)
    slurm_tables = [tomllib.loads(b)["cluster"]["slurm"] for b in blocks if "[cluster.slurm]" in b]
    assert slurm_tables
    for table in slurm_tables:
        render_job_script(SlurmSettings.from_mapping(table))


FAKE_SBATCH = """#!/bin/bash
# Stand-in for sbatch: run a copy of the job script as its own process group; its id is the job id.
id=$(date +%s%N)
cp "$1" "{dir}/job-$id.sh"
setsid bash "{dir}/job-$id.sh" > "{dir}/job-$id.log" 2>&1 < /dev/null &
echo $! >> "{dir}/jobs"
echo "Submitted batch job $!"
"""
FAKE_SCANCEL = """#!/bin/bash
kill -TERM -- "-$1" 2>/dev/null
exit 0
"""


@pytest.mark.timeout(180)
def test_jobs_of_several_workers_are_replaced_after_their_lifetime(tmp_path, monkeypatch):
    """Workers retire at --lifetime; adapt() submits a new job once all workers of the old one left."""
    import dask
    from distributed import Client

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH.format(dir=tmp_path))
    (bin_dir / "scancel").write_text(FAKE_SCANCEL)
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    jobs_file = tmp_path / "jobs"

    def submitted() -> list[int]:
        return [int(x) for x in jobs_file.read_text().split()] if jobs_file.exists() else []

    settings = SlurmSettings(walltime="00:05:00", cores=2, processes=2, memory="1GiB", lifetime="8s",
                             lifetime_stagger="1s")
    try:
        with dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}), \
                slurm_cluster(settings, scheduler_options={"dashboard_address": ":0"}) as cluster, \
                Client(cluster) as client:
            cluster.adapt(minimum_jobs=1, maximum_jobs=1, interval="500ms")
            deadline = time.monotonic() + 150
            first_workers: set[str] = set()
            while time.monotonic() < deadline:
                workers = {w["name"] for w in client.scheduler_info()["workers"].values()}
                if len(submitted()) == 1 and len(workers) == 2:
                    first_workers = workers
                if len(submitted()) >= 2 and len(workers) == 2 and first_workers:
                    break
                time.sleep(0.5)
            else:
                logs = "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("job-*.log")))
                pytest.fail(f"no replacement job with 2 workers: submitted {submitted()}, workers {workers}\n{logs}")
            assert all(re.fullmatch(r"LssSLURMCluster-\d+-[01]", str(n)) for n in first_workers | workers)
    finally:
        for pgid in submitted():
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
