"""Adaptive sampling campaigns: real OpenMM walkers on a real Dask LocalCluster and a process pool.

The campaign runs the four-state toy (LSTM paper, one particle, Reference
platform): 4 walkers × 1000 steps per round, an SRV retrained each round.  A
walker is deterministic given its velocity seed (the integrator is reseeded
per task), and training is deterministic given its seed on the CPU, so two
campaigns with one seed commit byte-identical stores: that is what the
resume and fault tests compare (store hashes in the event log).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lss_engine.campaign.config import CampaignConfig, load_config
from lss_engine.campaign.driver import Campaign, current_round, init_campaign
from lss_engine.campaign.events import CampaignLogError, EventLog, read_events
from lss_engine.campaign.executors import DaskExecutor, ProcessPoolExecutor
from lss_engine.campaign.report import status_table, write_report
from lss_engine.cli import main
from lss_engine.errors import LssError

CONFIG = """
seed = 7
[system]
name = "four-state"
[md]
walkers = 4
steps = 1000
report_interval = 10
restart_every = 2
features = "positions"
[model]
lag = 5
dim = 2
epochs = 5
[ranker]
name = "{ranker}"
cells = 10
[stop]
max_rounds = {rounds}
[cluster]
kind = "processes"
workers = 2
"""


def write_config(tmp_path, ranker="counts", rounds=2, extra="") -> str:
    path = tmp_path / f"{ranker}.toml"
    path.write_text(CONFIG.format(ranker=ranker, rounds=rounds) + extra)
    return str(path)


def committed(campaign) -> dict:
    """(round, walker) -> SHA-256 of the walker's data (steps, positions, features; not the provenance times)."""
    import hashlib

    from lss_engine.store import TrajectoryStore

    out = {}
    for c in campaign.state.committed():
        store = TrajectoryStore(campaign.dir / c["folder"] / "md.zarr")
        digest = hashlib.sha256()
        for array in (store.steps(), store.positions(), store.features()):
            digest.update(np.ascontiguousarray(array).tobytes())
        out[(c["round"], c["walker"])] = digest.hexdigest()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-round campaign on a process pool (the baseline of the resume tests)."""
    tmp = tmp_path_factory.mktemp("reference")
    directory = init_campaign(tmp / "c", write_config(tmp))
    campaign = Campaign(directory)
    with ProcessPoolExecutor(2) as pool:
        campaign.run(executor=pool, progress=False)
    return campaign


# --- config and event log -----------------------------------------------------
@pytest.mark.parametrize("bad, message", [
    ("[system]\nname='four-state'\n[md]\nwalkers=0\n", "md.walkers must be a positive integer"),
    ("[system]\nname='four-state'\n[ranker]\nname='best'\n", "ranker.name must be one of"),
    ("[system]\nname='four-state'\n[ranker]\nseed_from='explorers'\n", "ranker.seed_from must be any or unbiased"),
    ("[system]\nname='four-state'\n[md]\nwalkrs=2\n", "unknown key md.walkrs"),
    ("[md]\nwalkers=2\n", "needs a [system] table"),
    ("[system]\nxml='s.xml'\n", "xml needs pdb"),
    ("[system]\nname='four-state'\n[cluster]\nkind='address'\n", "needs cluster.address"),
    ("[system\n", "not valid TOML"),
    ("[system]\nname='four-state'\n[md]\nwalkers=2\n[explore]\nwalkers=3\n", "must not exceed md.walkers"),
    ("[system]\nname='four-state'\n[ranker]\nname='continue'\n[explore]\nwalkers=1\n", "needs a ranker"),
    ("[system]\nname='four-state'\n[explore]\nkappa=-1\n", "explore.kappa"),
    ("[system]\nname='four-state'\n[explore]\nmts=0\n", "explore.mts must be a positive integer"),
    ("[system]\nname='four-state'\n[explore]\nmts=1.5\n", "explore.mts must be a positive integer"),
    ("[system]\nname='four-state'\n[md]\nreport_interval=10\n[explore]\nmts=4\n",
     "md.report_interval (10 steps) must be a multiple of explore.mts (4)"),
])
def test_bad_configs_are_one_line_errors(tmp_path, capsys, bad, message):
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    with pytest.raises(LssError, match=re.escape(message)):
        load_config(path)
    assert main(["campaign", "init", str(tmp_path / "c"), "--config", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message.split()[0] in err and "Traceback" not in err


def test_a_bad_system_fails_at_init_before_any_md(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("[system]\nname='no-such-system'\n")
    assert main(["campaign", "init", str(tmp_path / "c"), "--config", str(path)]) == 1
    assert "unknown system" in capsys.readouterr().err
    assert not (tmp_path / "c" / "campaign.json").exists()


def test_builtin_system_takes_the_top_level_integrator_settings(tmp_path):
    """``[system] temperature = ...`` beside a built-in ``name`` is used, not silently dropped for 300 K;
    the same key given twice with different values is a one-line error before any file is written."""
    path = tmp_path / "c.toml"
    path.write_text("[system]\nname='four-state'\ntemperature=400\n")
    campaign = Campaign(init_campaign(tmp_path / "c", str(path)))
    assert campaign.resolved["temperature_K"] == 400
    assert campaign.resolved["system"]["parameters"]["temperature"] == 400
    path.write_text("[system]\nname='four-state'\ntemperature=400\n[system.parameters]\ntemperature=350\n")
    assert main(["campaign", "init", str(tmp_path / "d"), "--config", str(path)]) == 1
    with pytest.raises(LssError, match="disagree"):
        init_campaign(tmp_path / "e", str(path))
    assert not (tmp_path / "e" / "campaign.json").exists()


def test_event_log_drops_a_torn_tail_and_refuses_damage(tmp_path):
    """A torn last line (a kill mid-append) was never acknowledged: dropped.  Any other bad line is damage."""
    log = EventLog(tmp_path / "events.jsonl")
    log.append("a", x=1)
    log.append("b", y=[1.5, float("nan")])
    raw = (tmp_path / "events.jsonl").read_bytes()
    (tmp_path / "events.jsonl").write_bytes(raw + b'{"seq": 2, "type": "c"')  # torn
    again = EventLog(tmp_path / "events.jsonl")
    assert [e["type"] for e in again] == ["a", "b"] and again.events[1]["y"] == [1.5, None]
    assert (tmp_path / "events.jsonl").read_bytes() == raw  # truncated back to whole lines
    again.append("c")
    assert [e["seq"] for e in read_events(tmp_path / "events.jsonl")] == [0, 1, 2]

    flipped = bytearray(raw)
    flipped[raw.index(b'"x":1') + 4] = ord("2")  # x = 2: valid JSON, wrong checksum
    (tmp_path / "events.jsonl").write_bytes(bytes(flipped) + b"\n")
    with pytest.raises(CampaignLogError, match="line 1: checksum mismatch"):
        EventLog(tmp_path / "events.jsonl")
    lines = raw.splitlines(keepends=True)
    (tmp_path / "events.jsonl").write_bytes(lines[1] + lines[0])  # reordered
    with pytest.raises(CampaignLogError, match="line 1: event number 1, expected 0"):
        read_events(tmp_path / "events.jsonl")


# --- the loop -------------------------------------------------------------------
def test_campaign_on_a_process_pool_commits_every_walker(reference):
    state = reference.state
    assert state.stopped is not None and "2 rounds" in state.stopped["reason"]
    assert sorted(committed(reference)) == [(r, w) for r in range(2) for w in range(4)]
    assert current_round(state) == 1 and sorted(state.models) == [0, 1] and sorted(state.seeds) == [1]
    for c in state.committed():
        folder = reference.dir / c["folder"]
        assert c["frames"] == 100 and c["restart_frames"] == 50 and c["steps"] == 1000
        assert (folder / "done.json").is_file() and (folder / "md.zarr").is_dir()
    # no folder but the committed ones is left
    folders = sorted(p.relative_to(reference.dir).as_posix() for p in (reference.dir / "attempts").glob("r*/w*/a*"))
    assert folders == sorted(c["folder"] for c in state.committed())
    # round 1 starts from real frames the ranker chose, with fresh velocities, spread over cells
    seeds = state.seeds[1]["seeds"]
    assert state.seeds[1]["ranker"] == "counts" and len(seeds) == 4
    assert all(s["frame"]["kind"] == "store" and s["frame"]["path"].endswith("restarts.zarr") for s in seeds)
    assert len({tuple(s["latent"]) for s in seeds}) == 4
    model = state.models[1]
    assert model["n_frames"] == 800 and model["vamp2"] > 1.0 and len(model["timescales_ps"]) >= 1


def test_dask_local_cluster_gives_the_same_campaign(tmp_path, reference):
    """Executor choice does not change results: a Dask LocalCluster commits byte-identical stores."""
    campaign = Campaign(init_campaign(tmp_path / "c", write_config(tmp_path)))
    with DaskExecutor(workers=2) as dask:
        assert dask.n_workers == 2
        campaign.run(executor=dask, progress=False)
    assert committed(campaign) == committed(reference)
    assert campaign.state.models[1]["hashes"] == reference.state.models[1]["hashes"]
    assert {c["warm"] for c in campaign.state.committed()} == {False, True}  # contexts were reused per worker


KILLER = textwrap.dedent("""
    import os, signal, sys
    from lss_engine.campaign.driver import Campaign
    from lss_engine.campaign.executors import ProcessPoolExecutor

    def killer(kind, nth):
        seen = []
        def hook(event):
            if event["type"] == kind:
                seen.append(event)
                if len(seen) == nth:
                    os.kill(os.getpid(), signal.SIGKILL)
        return hook

    if __name__ == "__main__":
        campaign = Campaign(sys.argv[1])
        campaign.on_event = killer(sys.argv[2], int(sys.argv[3]))
        with ProcessPoolExecutor(2) as pool:
            campaign.run(executor=pool, progress=False)
""")


@pytest.mark.parametrize("kind, nth", [("walker_submitted", 3), ("walker_committed", 2), ("model_trained", 1),
                                       ("seeds_selected", 1), ("walker_committed", 6)])
def test_driver_sigkill_then_resume_equals_the_uninterrupted_campaign(tmp_path, reference, kind, nth):
    """SIGKILL the driver right after its n-th event of a kind; ``lss campaign resume`` finishes the same campaign.

    No committed walker is lost or run twice (each (round, walker) committed
    once, with the hash of the uninterrupted run), unfinished folders are gone.
    """
    directory = init_campaign(tmp_path / "c", write_config(tmp_path))
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    with open(tmp_path / "driver.log", "w") as log:  # a file, not a pipe: the pool's workers outlive the driver
        proc = subprocess.run([sys.executable, str(script), str(directory), kind, str(nth)], stdout=log,
                              stderr=subprocess.STDOUT, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "driver.log").read_text()[-2000:]
    events = read_events(directory / "events.jsonl")
    assert sum(e["type"] == kind for e in events) == nth
    assert main(["campaign", "resume", str(directory), "--no-progress"]) == 0
    campaign = Campaign(directory)
    events = campaign.log.events
    commits = [(e["round"], e["walker"]) for e in events if e["type"] == "walker_committed"]
    assert len(commits) == len(set(commits)) == 8
    assert committed(campaign) == committed(reference)
    folders = sorted(p.relative_to(directory).as_posix() for p in (directory / "attempts").glob("r*/w*/a*"))
    assert folders == sorted(c["folder"] for c in campaign.state.committed())


def test_a_pool_worker_whose_driver_is_already_gone_exits():
    """A pool worker set up after its driver died (already re-parented) exits instead of waiting forever.

    The driver's pid is handed to the worker, not read as its parent pid at
    set-up: a worker started just before a SIGKILL of the driver once found
    the reaper as its parent and watched that, outliving the campaign.
    """
    code = ("import time; from lss_engine.campaign.executors import _init_worker; "
            "_init_worker(-1); time.sleep(120)")  # -1: no process's pid, so never this one's parent
    proc = subprocess.run([sys.executable, "-c", code], timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr  # the watcher's os._exit(1), not a set-up error that also exits with 1


@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_a_dead_worker_or_a_failed_walker_is_rerun(tmp_path, reference, executor):
    """Walker (0, 1)'s worker dies at MD step 500 of 1000 and walker (1, 2) raises once: both re-run, nothing lost.

    A raised walker is retried with fresh velocities (the seed counts its
    failures), so its store differs from the reference; a worker death under
    Dask is re-run by Dask with the same task (same velocities), under a
    process pool it is a recorded failure and a new attempt.
    """
    campaign = Campaign(init_campaign(tmp_path / "c", write_config(tmp_path)))
    campaign.faults = {(0, 1): {"kind": "exit", "marker": str(tmp_path / "dead"), "at_step": 500},
                       (1, 2): {"kind": "raise", "marker": str(tmp_path / "raised")}}
    make = (lambda: ProcessPoolExecutor(2)) if executor == "processes" else (lambda: DaskExecutor(workers=2))
    with make() as ex:
        campaign.run(executor=ex, progress=False)
    state = campaign.state
    assert sorted(committed(campaign)) == sorted(committed(reference))
    failures = {k: w.failures for k, w in state.walkers.items() if w.failures}
    assert "injected failure" in failures[(1, 2)][0]
    if executor == "processes":
        assert "worker died" in failures[(0, 1)][0]
    else:
        assert (0, 1) not in failures and committed(campaign)[(0, 1)] == committed(reference)[(0, 1)]
    assert state.walkers[(1, 2)].committed["velocity_seed"] != state.walkers[(1, 2)].attempts[0]["velocity_seed"]
    folders = sorted(p.relative_to(campaign.dir).as_posix() for p in (campaign.dir / "attempts").glob("r*/w*/a*"))
    assert folders == sorted(c["folder"] for c in state.committed())


def test_walker_abandoned_after_retries_and_status_reports_it(tmp_path):
    cfg = write_config(tmp_path, rounds=1, extra="")
    text = open(cfg).read().replace('workers = 2', 'workers = 2\nretries = 0')
    open(cfg, "w").write(text)
    campaign = Campaign(init_campaign(tmp_path / "c", cfg))
    campaign.faults = {(0, 3): {"kind": "raise", "marker": str(tmp_path / "m")}}
    with ProcessPoolExecutor(2) as pool:
        campaign.run(executor=pool, progress=False)
    assert campaign.state.walkers[(0, 3)].abandoned
    table = status_table(campaign)
    assert "3/0/1 (1 abandoned)" in table


def test_plain_md_continues_each_walker_with_its_velocities(tmp_path):
    """Ranker ``continue`` (plain MD): round r + 1 of walker w starts from walker w's last state, velocities kept."""
    campaign = Campaign(init_campaign(tmp_path / "c", write_config(tmp_path, ranker="continue")))
    with ProcessPoolExecutor(2) as pool:
        campaign.run(executor=pool, progress=False)
    state = campaign.state
    for w, seed in enumerate(state.seeds[1]["seeds"]):
        assert seed["keep_velocities"] and seed["frame"]["path"].endswith("md.zarr.state.xml")
        assert f"w{w:03d}" in seed["frame"]["path"]
    from lss_engine.store import TrajectoryStore

    for w in range(4):
        first = TrajectoryStore(campaign.dir / state.walkers[(0, w)].committed["folder"] / "md.zarr")
        second = TrajectoryStore(campaign.dir / state.walkers[(1, w)].committed["folder"] / "md.zarr")
        step = np.abs(np.diff(first.positions()[:, 0, :2], axis=0)).max()
        assert np.abs(second.positions()[0, 0, :2] - first.positions()[-1, 0, :2]).max() < 3 * step


@pytest.mark.parametrize("ranker, extra", [("ucb", ""), ("uncertainty", "\n[model]\n"), ("dream", ""),
                                           ("timescales", "")])
def test_each_ranker_runs_a_round(tmp_path, ranker, extra):
    cfg = write_config(tmp_path, ranker=ranker)
    if ranker == "uncertainty":
        text = open(cfg).read().replace("epochs = 5", "epochs = 5\nensemble = 2")
        open(cfg, "w").write(text)
    if ranker == "dream":
        text = open(cfg).read().replace('cells = 10', 'cells = 10\ndream_steps = 5\ndream_walkers = 2\ncandidates = 50')
        open(cfg, "w").write(text)
    campaign = Campaign(init_campaign(tmp_path / "c", cfg))
    with ProcessPoolExecutor(2) as pool:
        campaign.run(executor=pool, progress=False)
    seeds = campaign.state.seeds[1]
    assert seeds["ranker"] == ranker and len(seeds["seeds"]) == 4
    assert all(np.isfinite(s["score"]) for s in seeds["seeds"])
    if ranker == "uncertainty":
        assert len(campaign.state.models[0]["hashes"]) == 2


def test_status_and_report_from_the_directory(reference, tmp_path, capsys):
    assert main(["campaign", "status", str(reference.dir)]) == 0
    out = capsys.readouterr().out
    assert "4/0/0" in out and "stopped: 2 rounds done" in out
    metrics = write_report(reference, tmp_path / "report")
    assert set(metrics["figures"]) == {"coverage.png", "discovery.png", "timescales.png", "fes_psi1.png"}
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert len(saved["rounds"]) == 2 and "markov_estimate" in saved


def test_a_second_driver_is_refused(reference):
    import fcntl

    fd = os.open(reference.dir / "driver.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(LssError, match="another driver"):
            Campaign(reference.dir).run(progress=False)
    finally:
        os.close(fd)


def test_config_round_trips_through_campaign_json(reference):
    doc = json.loads((reference.dir / "campaign.json").read_text())
    assert doc["schema_version"] == 1 and doc["resolved"]["restart_interval"] == 20
    cfg = dict(doc["config"])
    cfg.pop("schema_version")
    assert CampaignConfig.from_mapping(cfg) == reference.config


def test_a_users_system_xml_campaign_with_cold_contexts(tmp_path):
    """A campaign of a user's OpenMM System XML + PDB (alanine dipeptide serialised), warm Contexts off."""
    import openmm
    from openmm import app

    from lss_engine.systems import get_system

    ala2 = get_system("alanine-dipeptide")
    (tmp_path / "system.xml").write_text(openmm.XmlSerializer.serialize(ala2.system))
    with open(tmp_path / "start.pdb", "w") as f:
        app.PDBFile.writeFile(ala2.topology, ala2.positions, f)
    cfg = tmp_path / "c.toml"
    cfg.write_text(textwrap.dedent("""
        seed = 2
        [system]
        xml = "system.xml"
        pdb = "start.pdb"
        temperature = 400
        [md]
        walkers = 2
        steps = 200
        report_interval = 10
        atoms = "heavy"
        warm_contexts = false
        [model]
        lag = 2
        epochs = 2
        [stop]
        max_rounds = 1
        [cluster]
        kind = "processes"
        workers = 2
    """))
    campaign = Campaign(init_campaign(tmp_path / "c", str(cfg)))
    assert campaign.resolved["system"]["kind"] == "xml" and campaign.resolved["temperature_K"] == 400
    with ProcessPoolExecutor(2) as pool:
        campaign.run(executor=pool, progress=False)
    commits = campaign.state.committed()
    assert len(commits) == 2 and not any(c["warm"] for c in commits)
    from lss_engine.store import TrajectoryStore

    store = TrajectoryStore(campaign.dir / commits[0]["folder"] / "md.zarr")
    restarts = TrajectoryStore(campaign.dir / commits[0]["folder"] / "restarts.zarr")
    assert store.n_frames == 20 and store.positions().shape[1] == 10  # heavy atoms saved
    assert restarts.positions().shape[1] == 22  # restart frames keep every atom
    (tmp_path / "system.xml").write_text((tmp_path / "system.xml").read_text().replace("<System", "<System ", 1))
    with pytest.raises(LssError, match="changed"):  # the campaign's system must not change under it
        from lss_engine.systems import build_system

        build_system(campaign.resolved["system"])


def test_slurm_cluster_settings_are_checked_with_the_config(tmp_path):
    base = "[system]\nname='four-state'\n[cluster]\nkind='slurm'\n"
    path = tmp_path / "s.toml"
    path.write_text(base + "gpus = 1\n[cluster.slurm]\nwalltime = '01:00:00'\n")
    with pytest.raises(LssError, match="must both be 0 or both positive"):
        load_config(path)
    path.write_text(base + "[cluster.slurm]\nwalltime = 'an hour'\n")
    with pytest.raises(LssError, match="walltime"):
        load_config(path)
    path.write_text(base + "gpus = 1\n[cluster.slurm]\ngpus = 1\nprocesses = 1\ncores = 4\npartition = 'gpu'\n")
    assert load_config(path).cluster.slurm["partition"] == "gpu"


def test_stopping_rules():
    """Budget first; then a plateau needs no new cell for k rounds and timescale/VAMP-2 within their block errors."""
    from types import SimpleNamespace

    from lss_engine.campaign.driver import _stable

    stop = SimpleNamespace(timescale_tolerance=2.0)
    a = {"vamp2": 2.0, "vamp2_error": 0.05, "timescales_block_ps": [100.0], "timescales_error_ps": [10.0]}
    assert _stable([a, {**a, "vamp2": 2.1, "timescales_block_ps": [120.0]}], stop)  # within 2 combined SE
    assert not _stable([a, {**a, "timescales_block_ps": [150.0]}], stop)  # 50 ps > 2 × 14 ps
    assert not _stable([a, {**a, "vamp2_error": None}], stop)  # no error, no claim of stability


def test_killed_worker_is_a_recorded_failure_then_rerun(tmp_path):
    """A walker whose every execution kills its Dask worker ends in ``KilledWorker``: recorded, re-run, not a crash.

    Dask re-runs a task whose worker died until it has killed
    ``distributed.scheduler.allowed-failures`` + 1 workers (3 + 1); the fault kills
    the first 4 executions, so Dask gives up with ``KilledWorker``, the driver
    records it and submits a new attempt, which succeeds.
    """
    import dask

    campaign = Campaign(init_campaign(tmp_path / "c", write_config(tmp_path, rounds=1)))
    campaign.faults = {(0, 2): {"kind": "exit", "marker": str(tmp_path / "k"), "times": 4}}
    with dask.config.set({"distributed.scheduler.allowed-failures": 3}), DaskExecutor(workers=2) as ex:
        campaign.run(executor=ex, progress=False)
    rec = campaign.state.walkers[(0, 2)]
    assert rec.committed is not None and len(rec.attempts) == 2
    assert len(rec.failures) == 1 and "KilledWorker" in rec.failures[0]
    assert sorted(committed(campaign)) == [(0, w) for w in range(4)]


def test_candidate_subsample_keeps_every_cell():
    """A uniform subsample of 120 out of ~1250 frames would miss most of the 2-frame cells; the stratified one
    holds every cell (100 cells ≤ 120), at most one frame more per cell than any other, and no duplicates."""
    from lss_engine.campaign.rankers import stratified_subsample

    cells = np.r_[np.zeros(1000, int), np.ones(3, int), np.full(50, 2), np.arange(3, 100).repeat(2)]
    rng = np.random.default_rng(0)
    pick = stratified_subsample(cells, 120, rng)
    assert len(pick) == len(np.unique(pick)) == 120 and np.all(np.diff(pick) > 0)
    per_cell = np.bincount(cells[pick], minlength=100)
    assert per_cell.min() >= 1 and per_cell.max() <= 2
    assert np.array_equal(stratified_subsample(cells[:10], 120, rng), np.arange(10))


def test_seed_from_unbiased_keeps_explorer_frames_only_where_no_unbiased_frame_is():
    """``[ranker] seed_from = "unbiased"``: cell 0 has unbiased and explorer candidates (the explorer's go),
    cell 1 only an explorer's (kept: it is the frontier), cell 2 only unbiased ones."""
    from lss_engine.campaign.rankers import unbiased_first

    cells = np.array([0, 0, 0, 1, 1, 2])
    biased = np.array([False, True, True, True, True, False])
    assert unbiased_first(cells, biased).tolist() == [True, False, False, True, True, True]
    assert unbiased_first(cells, np.zeros(6, bool)).all() and unbiased_first(cells, np.ones(6, bool)).all()


def test_biased_explorers_move_toward_their_targets_and_stay_out_of_training(tmp_path):
    """``[explore] walkers = 2``: from round 1, two of the four walkers run under the latent restraint
    (lss_engine.bias, a real TorchForce in the walker's OpenMM System) centred ``reach`` = 1 latent unit beyond
    their seed, away from the data mean.  Their frames, in the coordinates of the model that set the restraint,
    end up nearer the centre than the seed was (mean distance over the second half < 0.6 of ``reach``; at
    κ = 500 the restraint's thermal spread is ~0.05 latent units, so an unbiased walker would have no reason to
    move that way); the unbiased walkers of the same round do not have a bias; training sees unbiased frames
    only, and the report's Markovian estimate is TRAM over all walkers (frame weights summing to 1)."""
    from lss_engine.reporters import read_latent_store

    extra = "\n[explore]\nwalkers = 2\nkappa = 500.0\nreach = 1.0\n"
    campaign = Campaign(init_campaign(tmp_path / "c", write_config(tmp_path, rounds=3, extra=extra)))
    with ProcessPoolExecutor(2) as pool:
        campaign.run(executor=pool, progress=False)
    state = campaign.state
    assert not any(c.get("bias") for c in state.committed(0))
    for r in (1, 2):
        seeds = state.seeds[r]["seeds"]
        assert [bool(s.get("bias")) for s in seeds] == [True, True, False, False]
        for w in range(4):
            c = state.walkers[(r, w)].committed
            assert bool(c.get("bias")) == (w < 2)
            if w >= 2:
                continue
            target = np.asarray(seeds[w]["bias"]["target"])
            z = campaign.latent_of(r - 1, features=campaign.features([c])[0])
            start = np.linalg.norm(np.asarray(seeds[w]["latent"]) - target)
            assert start == pytest.approx(1.0)
            assert np.linalg.norm(z[len(z) // 2:] - target, axis=1).mean() < 0.6 * start
            # bias.zarr (LatentReporter): the model's own latent (float64 in the force; 1e-4: the campaign's encoder
            # is float32) and the bias energy of every frame (float32 stores: rtol 1e-4)
            record = read_latent_store(campaign.dir / c["folder"] / "bias.zarr")
            raw = campaign.encoder(r - 1).slow_coordinates(campaign.features([c])[0])
            np.testing.assert_allclose(record.latent, raw, atol=1e-4)
            centre, kappa = np.asarray(seeds[w]["bias"]["centre"]), np.asarray(seeds[w]["bias"]["kappa"])
            expected = 0.5 * ((record.latent.astype(float) - centre) ** 2 * kappa).sum(1)
            np.testing.assert_allclose(record.bias_energy, expected, rtol=1e-4, atol=1e-3)
    unbiased_frames = sum(c["frames"] for c in state.unbiased(2))
    assert state.models[2]["n_frames"] == unbiased_frames < sum(c["frames"] for c in state.committed(2))
    # the report's Markovian model: TRAM over every walker, each explorer its own ensemble under its restraint
    metrics = write_report(campaign, tmp_path / "report", n_boot=0)
    estimate = metrics["markov_estimate"]
    assert estimate["method"].startswith("TRAM") and "4 biased explorers" in estimate["method"]
    assert estimate["n_frames"] == sum(c["frames"] for c in state.committed(2))
    assert estimate["n_trajectories"] == len(state.committed(2))
    assert sum(estimate["stationary"]) == pytest.approx(1.0)


def test_flooding_explorers_record_the_gaussian_bias_of_their_round(tmp_path):
    """``mode = "flood"``: the ranker's best seed explores under Gaussians on the round's cells, heights
    h ln(1 + N_c); its bias.zarr energies equal the Gaussian sum of its recorded latent (numpy, float32 stores:
    rtol 1e-4); training sees the unbiased walkers only."""
    from lss_engine.bias import GaussianSum
    from lss_engine.reporters import read_latent_store

    extra = "\n[explore]\nwalkers = 1\nmode = \"flood\"\nheight = 0.5\n"
    campaign = Campaign(init_campaign(tmp_path / "c", write_config(tmp_path, rounds=2, extra=extra)))
    with ProcessPoolExecutor(2) as pool:
        campaign.run(executor=pool, progress=False)
    state = campaign.state
    hills = state.seeds[1]["seeds"][0]["bias"]["gaussians"]
    assert [bool(s.get("bias")) for s in state.seeds[1]["seeds"]] == [True, False, False, False]
    c = state.walkers[(1, 0)].committed
    assert c["bias"]["gaussians"] == hills and not any(x.get("bias") for x in state.committed(0))
    record = read_latent_store(campaign.dir / c["folder"] / "bias.zarr")
    terms = GaussianSum(hills["centres"], hills["widths"], hills["heights"])
    np.testing.assert_allclose(record.bias_energy, terms.energy_of(record.latent.astype(float)), rtol=1e-4,
                               atol=1e-5)
    assert len(hills["heights"]) == 10 and min(hills["heights"]) >= 0.5 * np.log(2)  # every cell holds a frame
    # the report's TRAM estimate with bootstrap errors (TRAM refitted on walkers drawn within the unbiased walkers
    # and within the explorers; samples that do not converge as far as the full fit are left out)
    estimate = write_report(campaign, tmp_path / "report", n_boot=4)["markov_estimate"]
    assert estimate["method"].startswith("TRAM") and 2 <= estimate["n_bootstrap"] <= 4
    assert estimate["timescales_se_ps"][0] > 0 and any(x is not None and x > 0 for x in estimate["stationary_se"])
    assert state.models[1]["n_frames"] == sum(x["frames"] for x in state.unbiased(1))


# --- multiple-time-step explorers ([explore] mts) -------------------------------
@pytest.mark.parametrize("system, md, message", [
    ("four-state", "report_interval = '0.05ps'",  # dt = 0.01 ps: 5 steps
     "md.report_interval (5 steps) must be a multiple of explore.mts (2)"),
    ("four-well", "report_interval = 10", "explore.mts = 2 needs a Langevin system; four-well uses a Brownian"),
])
def test_mts_that_cannot_work_fails_at_init_in_one_line(tmp_path, capsys, system, md, message):
    """A report interval given as a time resolves to steps at init only, and only init builds the system (its
    integrator): both checks are one-line errors there, before any MD."""
    path = tmp_path / "c.toml"
    path.write_text(f"[system]\nname = '{system}'\n[md]\nsteps = 100\n{md}\n[explore]\nmts = 2\n")
    load_config(path)  # nothing to object to before the system is built
    with pytest.raises(LssError, match=re.escape(message)):
        init_campaign(tmp_path / "a", str(path))
    assert main(["campaign", "init", str(tmp_path / "c"), "--config", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "explore.mts" in err
    assert not (tmp_path / "c" / "campaign.json").exists()


@pytest.fixture(scope="module")
def ala2_encoder_dir(ala2_store, tmp_path_factory):
    """A small SRV (2 coordinates) on the 200-frame alanine dipeptide store of conftest (about a second)."""
    from lss_engine.pipeline import train_encoder
    from lss_engine.settings import EncoderSettings

    out = tmp_path_factory.mktemp("ala2_srv") / "model"
    train_encoder([ala2_store], EncoderSettings(kind="srv", lag=2, dim=2, hidden=(16,), epochs=2, restarts=1,
                                                batch_size=64, progress=False), out, analyze=False)
    return out


def ala2_task(ala2_system, tmp_path, **extra) -> dict:
    """A walker task of the 450 K alanine dipeptide from its minimised start (Reference platform)."""
    import openmm

    from lss_engine.features import build_featurizer
    from lss_engine.systems import system_spec

    start = tmp_path / "start.xml"
    if not start.exists():
        sim = ala2_system.make_simulation(platform="Reference", seed=3)
        start.write_text(openmm.XmlSerializer.serialize(sim.context.getState(getPositions=True)))
    return {"system": system_spec(ala2_system), "platform": "Reference",
            "seed_frame": {"kind": "state", "path": str(start)}, "velocity_seed": 5, "keep_velocities": False,
            "steps": 200, "report_interval": 20, "restart_interval": 40,
            "featurizer": build_featurizer("backbone-torsions", ala2_system.topology).spec(), "atoms": "heavy",
            "flush_interval": 4, "warm": True, **extra}


def test_an_mts_explorer_evaluates_its_bias_once_per_outer_step_and_keeps_frame_times(ala2_system,
                                                                                       ala2_encoder_dir, tmp_path):
    """``bias["mts"] = 4`` on alanine dipeptide (2 fs): the walker's integrator is an ``MTSLangevinIntegrator``
    with an 8 fs outer step whose program half-kicks with the bias group (30) twice per outer step at the outer
    step (``dt/1``: one evaluation per outer step; OpenMM reuses the forces of unchanged positions) and with the
    system's group 0 eight times at ``dt/4`` (evaluated every 2 fs).  The task's 200 steps, 20-step reports and
    40-step restarts are time steps: md.zarr, restarts.zarr and bias.zarr hold frames at the same times (ps) as an
    unbiased walker's stores of the same task (rtol 1e-12: OpenMM sums 50 outer steps of 8 fs there and 200 steps
    of 2 fs here, which differ by float64 rounding only), and done.json counts 200 steps."""
    from collections import Counter

    import openmm

    from lss_engine.campaign.walker import _WARM, run_walker, warm_cache_clear
    from lss_engine.store import TrajectoryStore

    warm_cache_clear()
    try:
        bias = {"model": str(ala2_encoder_dir), "centre": [0.0, 0.0], "kappa": [1.0, 1.0], "backend": "auto",
                "mts": 4}
        plain = run_walker(ala2_task(ala2_system, tmp_path, out=str(tmp_path / "plain")))
        explorer = run_walker(ala2_task(ala2_system, tmp_path, out=str(tmp_path / "explorer"), bias=bias))
        assert plain["steps"] == explorer["steps"] == 200 and explorer["mts"] == 4 and "mts" not in plain
        assert plain["frames"] == explorer["frames"] == 10 and plain["restart_frames"] == explorer["restart_frames"] == 5
        for name in ("md.zarr", "restarts.zarr"):
            ours, theirs = TrajectoryStore(f"{explorer['folder']}/{name}"), TrajectoryStore(f"{plain['folder']}/{name}")
            np.testing.assert_allclose(ours.times(), theirs.times(), rtol=1e-12)
            assert ours.frame_interval_ps == pytest.approx(theirs.frame_interval_ps, rel=1e-12)
        np.testing.assert_allclose(TrajectoryStore(f"{explorer['folder']}/bias.zarr").times(),
                                   TrajectoryStore(f"{plain['folder']}/md.zarr").times(), rtol=1e-12)
        np.testing.assert_allclose(TrajectoryStore(f"{plain['folder']}/md.zarr").times(), 0.04 * np.arange(1, 11),
                                   rtol=1e-12)
        (key,) = [k for k in _WARM if ":bias:" in k]
        assert key.endswith(":mts4")
        _, simulation, handle = _WARM[key]
        integrator = simulation.integrator
        assert isinstance(integrator, openmm.MTSLangevinIntegrator) and handle.force_group == 30
        assert integrator.getStepSize().value_in_unit(openmm.unit.picosecond) == pytest.approx(0.008)
        program = [integrator.getComputationStep(i)[2] for i in range(integrator.getNumComputations())]
        kicks = Counter((int(n), int(g)) for e in program for n, g in re.findall(r"\(dt/(\d+)\)\*f(\d+)/m", e))
        assert kicks == {(1, 30): 2, (4, 0): 8}
    finally:
        warm_cache_clear()


def test_an_mts_bias_needs_a_force_group_of_its_own(ala2_system, ala2_encoder_dir, tmp_path):
    """A user's system with a force already in the bias's group 30 cannot split the bias from it: one-line error."""
    import openmm
    from openmm import app

    from lss_engine.campaign.walker import _simulation
    from lss_engine.systems import from_xml, system_spec

    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(ala2_system.system))
    system.getForce(0).setForceGroup(30)
    (tmp_path / "s.xml").write_text(openmm.XmlSerializer.serialize(system))
    with open(tmp_path / "s.pdb", "w") as f:
        app.PDBFile.writeFile(ala2_system.topology, ala2_system.positions, f)
    spec = system_spec(from_xml(tmp_path / "s.xml", tmp_path / "s.pdb"))
    bias = {"model": str(ala2_encoder_dir), "centre": [0.0, 0.0], "kappa": [1.0, 1.0], "mts": 2}
    with pytest.raises(LssError, match="force group 30 holds forces of the system") as err:
        _simulation(spec, "Reference", False, bias)
    assert len(str(err.value).splitlines()) == 1
    _simulation(spec, "Reference", False, {**bias, "mts": 1})  # every step: nothing to split


def test_a_flooding_campaign_with_mts_explorers_counts_time_steps(tmp_path):
    """``[explore] mts = 2`` on the four-state toy (Langevin, 0.01 ps): the round-1 explorer's bias (in the log)
    says ``mts = 2`` and its walker ran 500 outer steps of 0.02 ps, recorded as the task's 1000 steps, so the MD
    budget counts every walker's 1000 steps (8000 in two rounds) and its 100 frames are 0.1 ps apart like the
    unbiased walkers' (rtol 1e-12: float64 rounding of the summed steps)."""
    from lss_engine.campaign.walker import read_done
    from lss_engine.store import TrajectoryStore

    extra = "\n[explore]\nwalkers = 1\nmode = \"flood\"\nheight = 0.5\nmts = 2\n"
    campaign = Campaign(init_campaign(tmp_path / "c", write_config(tmp_path, rounds=2, extra=extra)))
    with ProcessPoolExecutor(2) as pool:
        campaign.run(executor=pool, progress=False)
    state = campaign.state
    assert [s.get("bias", {}).get("mts") for s in state.seeds[1]["seeds"]] == [2, None, None, None]
    explorer, plain = state.walkers[(1, 0)].committed, state.walkers[(1, 1)].committed
    assert explorer["bias"]["mts"] == 2 and read_done(campaign.dir / explorer["folder"])["mts"] == 2
    assert [c["steps"] for c in state.committed()] == [1000] * 8 and state.md_steps() == 8000
    ours, theirs = (TrajectoryStore(campaign.dir / c["folder"] / "md.zarr") for c in (explorer, plain))
    assert ours.timestep_ps == pytest.approx(0.02) and theirs.timestep_ps == pytest.approx(0.01)
    np.testing.assert_allclose(ours.times(), theirs.times(), rtol=1e-12)
    assert ours.n_frames == 100 and explorer["restart_frames"] == plain["restart_frames"] == 50

    # Campaign.bias_energies: the explorer's row, recomputed from its stored features with its round's encoder,
    # is the bias the OpenMM force applied (its bias.zarr); 1e-3 kJ/mol absolute + 1e-4 relative covers the
    # float32 features and stored energies.  The unbiased ensemble's row is 0, every walker one trajectory.
    from lss_engine.reporters.latent_reporter import read_latent_store

    committed = state.committed()
    bias_kn, run_of_frame, lengths = campaign.bias_energies(committed)
    assert bias_kn.shape == (2, 800) and lengths == [100] * 8 and not bias_kn[0].any()
    k = [c["folder"] for c in committed].index(explorer["folder"])
    frames = slice(100 * k, 100 * (k + 1))
    assert (run_of_frame[frames] == 1).all() and (np.delete(run_of_frame, np.r_[frames]) == 0).all()
    recorded = read_latent_store(campaign.dir / explorer["folder"] / "bias.zarr").bias_energy
    assert recorded.max() > 0.05  # the hills were felt
    np.testing.assert_allclose(bias_kn[1, frames], recorded, rtol=1e-4, atol=1e-3)
