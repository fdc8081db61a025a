"""Adaptive sampling vs plain MD: total MD steps until all four states of the four-state potential are visited.

The LSTM paper's 2-D four-state potential (``lss_engine.systems.four_state``,
β = 9.5; barriers 5.3–5.5 kT between neighbouring wells, 8.1–8.3 kT across),
started in the well at (2, −1).  A state counts as visited when a frame (every
``report`` steps) lies within 0.6 of its minimum.

* Plain MD: ``walkers`` independent Langevin trajectories from the start
  (seeds differ), the same integrator and frame interval.  The steps until
  discovery are ``walkers × t``, with ``t`` the step at which the union of the
  walkers has visited all four states.
* Each ranker: an ``lss campaign`` of ``walkers × steps`` per round
  (the same walkers), an SRV retrained every round, walkers restarted from
  the frames the ranker picks.  Steps until discovery:
  ``round × walkers × steps + walkers × t_r`` with ``t_r`` the step within the
  discovering round.
  
Every method runs ``--seeds`` seeds; the table gives the median steps, a
bootstrap 95 % interval of the median, and the ratio plain MD / method with a
bootstrap 95 % interval (runs that hit the cap count as the cap: the ratio is
then a lower bound for plain MD).

Also printed: walkers per minute on a Dask LocalCluster of 1 and 2 workers,
and the per-walker set-up time with and without warm Contexts.

Run:  OMP_NUM_THREADS=1 python benchmarks/adaptive_vs_md.py --seeds 10 --workdir runs/adaptive_vs_md
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

WELLS = np.array([(2.03, -1.02), (0.51, 2.06), (-0.51, -2.06), (-2.03, 1.02)])
RADIUS = 0.6
DIM, CELLS, DIVERSITY = 3, 100, "farthest"  # set from the command line
EXPLORE = {"walkers": 0, "mode": "flood", "height": 2.0}  # biased explorers among the walkers (--explorers)


def visits(xy: np.ndarray) -> np.ndarray:
    """Index of the well each frame is in (−1: none)."""
    d = np.linalg.norm(xy[:, None, :] - WELLS[None], axis=-1)
    k = d.argmin(1)
    return np.where(d[np.arange(len(xy)), k] < RADIUS, k, -1)


def plain_md(seed: int, walkers: int, report: int, cap_steps: int) -> int:
    """Total steps (all walkers) until the walkers together have visited the four wells."""
    from lss_engine.systems import get_system

    system = get_system("four-state")
    first = np.full((walkers, 4), np.inf)
    per_walker_cap = cap_steps // walkers
    for w in range(walkers):
        sim = system.make_simulation(platform="Reference", seed=1000 * seed + w + 1, minimize=False)
        step = 0
        while step < per_walker_cap:
            n = min(10_000, per_walker_cap - step)
            xs = []
            for _ in range(n // report):
                sim.step(report)
                xs.append(sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value[0, :2])
            lab = visits(np.array(xs))
            for k in range(4):
                hit = np.flatnonzero(lab == k)
                if len(hit) and not np.isfinite(first[w, k]):
                    first[w, k] = step + (hit[0] + 1) * report
            step += n
            if np.isfinite(first[w]).all():
                break
    t = first.min(axis=0).max()  # the union of walkers: the last well's earliest visit
    return int(min(t * walkers, cap_steps)) if np.isfinite(t) else cap_steps


CONFIG = """
seed = {seed}
[system]
name = "four-state"
[md]
walkers = {walkers}
steps = {steps}
report_interval = {report}
features = "positions"
[model]
lag = 5
dim = {dim}
epochs = 10
ensemble = {ensemble}
[ranker]
name = "{ranker}"
cells = {cells}
diversity = "{diversity}"
dream_steps = 20
dream_walkers = 4
candidates = 300
[stop]
max_rounds = {rounds}
[explore]
walkers = {explorers}
mode = "{mode}"
height = {height}
"""


def discovery(campaign, walkers: int, steps: int, report: int, first: np.ndarray | None = None,
              round_: int | None = None) -> np.ndarray:
    """Total steps at which each well was first visited (inf: not yet): ``first`` updated with round ``round_``
    (default: all committed rounds)."""
    from lss_engine.store import TrajectoryStore

    first = np.full(4, np.inf) if first is None else first
    for c in campaign.state.committed():
        if round_ is not None and c["round"] != round_:
            continue
        lab = visits(TrajectoryStore(campaign.dir / c["folder"] / "md.zarr").positions()[:, 0, :2])
        for k in range(4):
            hit = np.flatnonzero(lab == k)
            if len(hit):
                first[k] = min(first[k], c["round"] * walkers * steps + walkers * (hit[0] + 1) * report)
    return first


def label(ranker: str) -> str:
    """The method's name in the table and its folder: the ranker, plus its explorers if any."""
    return f"{ranker}+{EXPLORE['walkers']}{EXPLORE['mode']}" if EXPLORE["walkers"] else ranker


def adaptive(ranker: str, seed: int, walkers: int, steps: int, report: int, cap_rounds: int, workdir: Path,
             executor) -> tuple[int, int]:
    """(total steps until all four wells are visited, rounds run); a finished run in ``workdir`` is reused."""
    from lss_engine.campaign.config import CampaignConfig
    from lss_engine.campaign.driver import Campaign, init_campaign
    import tomllib

    directory = workdir / label(ranker) / f"seed{seed}"
    text = CONFIG.format(seed=seed, walkers=walkers, steps=steps, report=report, rounds=cap_rounds, ranker=ranker,
                         ensemble=3 if ranker == "uncertainty" else 1, dim=DIM, cells=CELLS,
                         diversity=DIVERSITY, explorers=EXPLORE["walkers"], mode=EXPLORE["mode"],
                         height=EXPLORE["height"])
    config = CampaignConfig.from_mapping(tomllib.loads(text))
    if (directory / "campaign.json").exists():
        campaign = Campaign(directory)
        first = discovery(campaign, walkers, steps, report)
        if campaign.config == config and (np.isfinite(first).all() or campaign.state.stopped is not None):
            total = first.max()
            return (int(total) if np.isfinite(total) else cap_rounds * walkers * steps), len(campaign.state.models)
    shutil.rmtree(directory, ignore_errors=True)
    campaign = Campaign(init_campaign(directory, config))
    first = np.full(4, np.inf)
    for r in range(cap_rounds):
        campaign.run(executor=executor, max_rounds=1, progress=False)
        first = discovery(campaign, walkers, steps, report, first, r)
        if np.isfinite(first).all() or campaign.state.stopped is not None:
            break
    total = first.max()
    return (int(total) if np.isfinite(total) else cap_rounds * walkers * steps), r + 1


def bootstrap_median(x: np.ndarray, rng, n: int = 5000) -> tuple[float, float]:
    idx = rng.integers(len(x), size=(n, len(x)))
    med = np.median(x[idx], axis=1)
    return float(np.percentile(med, 2.5)), float(np.percentile(med, 97.5))


def bootstrap_ratio(a: np.ndarray, b: np.ndarray, rng, n: int = 5000) -> tuple[float, float]:
    ma = np.median(a[rng.integers(len(a), size=(n, len(a)))], axis=1)
    mb = np.median(b[rng.integers(len(b), size=(n, len(b)))], axis=1)
    ratio = ma / mb
    return float(np.percentile(ratio, 2.5)), float(np.percentile(ratio, 97.5))


def throughput(workdir: Path) -> None:
    """Walkers/min of alanine dipeptide walkers on a Dask LocalCluster of 1 and 2 workers; warm vs cold set-up."""
    from lss_engine.campaign.config import CampaignConfig
    from lss_engine.campaign.driver import Campaign, init_campaign
    from lss_engine.campaign.executors import DaskExecutor
    import tomllib

    text = """
seed = 1
[system]
name = "alanine-dipeptide"
[md]
walkers = 16
steps = 500
report_interval = 50
atoms = "heavy"
warm_contexts = {warm}
[model]
lag = 2
epochs = 1
[stop]
max_rounds = 1
"""
    print("\nthroughput: 16 alanine dipeptide walkers × 500 steps (1 ps), one round, Dask LocalCluster")
    for workers in (1, 2):
        for warm in ("true", "false"):
            directory = workdir / f"throughput_{workers}_{warm}"
            shutil.rmtree(directory, ignore_errors=True)
            campaign = Campaign(init_campaign(directory, CampaignConfig.from_mapping(
                tomllib.loads(text.format(warm=warm)))))
            with DaskExecutor(workers=workers) as ex:
                start = time.perf_counter()
                campaign._event("round_started", round=0, executor=ex.description)
                campaign._run_walkers(0, ex)
                wall = time.perf_counter() - start
            c = campaign.state.committed()
            setup = np.array([x["setup_s"] for x in c])
            total = np.array([x["wall_s"] for x in c])
            print(f"  {workers} worker(s), warm Contexts {warm:5s}: {len(c) / wall * 60:7.1f} walkers/min; "
                  f"set-up per walker median {1e3 * np.median(setup):7.1f} ms (first {1e3 * setup.max():.0f} ms), "
                  f"task wall median {1e3 * np.median(total):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--walkers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1000, help="steps per walker per round")
    parser.add_argument("--report", type=int, default=10)
    parser.add_argument("--cap-rounds", type=int, default=50, help="campaign rounds before a run counts as capped")
    parser.add_argument("--plain-cap", type=int, default=8_000_000, help="plain MD: total steps before capped")
    parser.add_argument("--rankers", default="counts,ucb,uncertainty,dream,random")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", default="runs/adaptive_vs_md")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--only-throughput", action="store_true")
    parser.add_argument("--dim", type=int, default=3, help="SRV latent dimensions")
    parser.add_argument("--cells", type=int, default=100, help="latent cells of the rankers")
    parser.add_argument("--diversity", default="farthest", help="batch choice: farthest or none")
    parser.add_argument("--explorers", type=int, default=0,
                        help="biased explorers among each round's walkers (lss_engine.bias; their MD counts)")
    parser.add_argument("--mode", default="flood", help="explorers: flood or push")
    parser.add_argument("--height", type=float, default=2.0, help="flood explorers: kJ/mol per ln(1 + N_c)")
    args = parser.parse_args()
    global DIM, CELLS, DIVERSITY
    DIM, CELLS, DIVERSITY = args.dim, args.cells, args.diversity
    EXPLORE.update(walkers=args.explorers, mode=args.mode, height=args.height)

    from lss_engine.campaign.executors import ProcessPoolExecutor

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.only_throughput:
        throughput(workdir)
        return
    cap = args.cap_rounds * args.walkers * args.steps
    results: dict[str, list[int]] = {"plain MD": []}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        results["plain MD"].append(plain_md(seed, args.walkers, args.report, args.plain_cap))
    print(f"plain MD done in {time.perf_counter() - t0:.0f} s: {results['plain MD']}", flush=True)
    rounds: dict[str, list[int]] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for ranker in args.rankers.split(","):
            t0 = time.perf_counter()
            name = label(ranker)
            results[name], rounds[name] = [], []
            for seed in range(args.seeds):
                steps, n = adaptive(ranker, seed, args.walkers, args.steps, args.report, args.cap_rounds, workdir,
                                    pool)
                results[name].append(steps)
                rounds[name].append(n)
            print(f"{name} done in {time.perf_counter() - t0:.0f} s: {results[name]}", flush=True)
            table(results, rounds, args, cap)
    if not args.skip_throughput:
        throughput(workdir)


def table(results: dict, rounds: dict, args, cap: int) -> None:
    rng = np.random.default_rng(0)
    plain = np.array(results["plain MD"], float)
    print(f"\nfour-state potential from (2, -1): total MD steps until all four wells are visited "
          f"({args.seeds} seeds, {args.walkers} walkers, {args.steps} steps per walker per round; campaigns capped "
          f"at {cap}, plain MD at {args.plain_cap}; SRV dim {args.dim}, {args.cells} cells)")
    print(f"  {'method':12s} {'median':>9s}  {'95% CI of median':>22s}  {'capped':>6s}  {'plain/method':>12s}  "
          f"{'95% CI':>16s}")
    summary = {}
    for name, values in results.items():
        x = np.array(values, float)
        lo, hi = bootstrap_median(x, rng)
        rlo, rhi = bootstrap_ratio(plain, x, rng)
        ratio = np.median(plain) / np.median(x)
        capped = int((x >= (args.plain_cap if name == "plain MD" else cap)).sum())
        print(f"  {name:12s} {np.median(x):9.0f}  [{lo:9.0f}, {hi:9.0f}]  {capped:6d}  {ratio:12.2f}  "
              f"[{rlo:6.2f}, {rhi:6.2f}]")
        summary[name] = {"steps": values, "median": float(np.median(x)), "ci95": [lo, hi], "capped": capped,
                         "ratio_plain_over_method": float(ratio), "ratio_ci95": [rlo, rhi],
                         "rounds": rounds.get(name)}
    (Path(args.workdir) / "results.json").write_text(json.dumps({"args": vars(args), "results": summary}, indent=1))


if __name__ == "__main__":
    main()
