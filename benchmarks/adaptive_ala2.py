"""Adaptive sampling on alanine dipeptide in vacuum at 300 K: how much MD until the φ > 0 basin?

Plain MD from C7eq almost never visits φ > 0 at 300 K (0.02 % of frames in
50 ns).  An ``lss campaign`` (walkers × walker time per round, an SRV on
backbone torsions retrained every round, the ``--ranker``) runs until a frame
lies in the cored φ > 0 basin (0.5 < φ < 1.8 rad) or the MD budget is spent.
Total MD at discovery = round × walkers × walker time + walkers × t_r (all
walkers of a round advance together; t_r is the time within the round).

Plain MD beside it: the same number of walkers from the same minimised
start, each ``budget / walkers`` long (``--plain-seeds`` seeds), with the same
test on every frame.

Run:  OMP_NUM_THREADS=1 python benchmarks/adaptive_ala2.py --seeds 10 --budget-ns 20 --workdir runs/adaptive_ala2
Biased exploration (issue 12): add  --explorers 2 --features backbone-torsions-sincos
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

BASIN = (0.5, 1.8)


def phi_indices() -> np.ndarray:
    import mdtraj

    from lss_engine.systems import get_system

    system = get_system("alanine-dipeptide", temperature=300)
    top = mdtraj.Topology.from_openmm(system.topology)
    xyz = np.asarray(system.positions._value, dtype=np.float32)[None]
    indices, _ = mdtraj.compute_phi(mdtraj.Trajectory(xyz, top))
    return indices[0]


def phi_of(positions: np.ndarray, quartet: np.ndarray) -> np.ndarray:
    """φ (rad) of frames ``(n, atoms, 3)`` by the package's one dihedral kernel."""
    import torch

    from lss_engine.features.geometry import dihedrals

    x = torch.as_tensor(np.asarray(positions, dtype=np.float64))
    return dihedrals(x, torch.as_tensor(quartet[None], dtype=torch.long)).numpy()[:, 0]


def store_phi(store, quartet: np.ndarray) -> np.ndarray:
    """φ of every frame of a store that saved (at least) the φ atoms; ``quartet`` in system atom indices."""
    where = {int(a): i for i, a in enumerate(store.atom_indices)}
    return phi_of(store.positions(), np.array([where[int(a)] for a in quartet]))


def plain_md(seed: int, walkers: int, budget_ps: float, quartet: np.ndarray, report_ps: float = 1.0) -> float | None:
    """Total MD (ns, all walkers) until a frame is in the basin; ``None`` if not within the budget."""
    from lss_engine.systems import get_system

    system = get_system("alanine-dipeptide", temperature=300)
    dt = system.timestep._value
    every = int(round(report_ps / dt))
    per_walker = int(budget_ps / walkers / dt)
    best = np.inf
    for w in range(walkers):
        sim = system.make_simulation(platform="Reference", seed=10_000 * seed + w + 1)
        steps, xs = 0, []
        while steps < per_walker:
            sim.step(every)
            steps += every
            xs.append(sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value)
            if len(xs) == 1000 or steps >= per_walker:
                phi = phi_of(np.array(xs), quartet)
                hit = np.flatnonzero((phi > BASIN[0]) & (phi < BASIN[1]))
                if len(hit):
                    best = min(best, (steps - (len(xs) - 1 - hit[0]) * every) * dt)
                    break
                xs = []
    return None if not np.isfinite(best) else best * walkers / 1000.0


CONFIG = """
seed = {seed}
[system]
name = "alanine-dipeptide"
[system.parameters]
temperature = 300
[md]
walkers = {walkers}
steps = "{walker_ps}ps"
report_interval = "1ps"
features = "{features}"
atoms = "heavy"
[model]
lag = 2
dim = {dim}
epochs = 15
[ranker]
name = "{ranker}"
cells = 100
[stop]
max_rounds = 1000
md_budget = "{budget_ns}ns"
[explore]
walkers = {explorers}
mode = "{mode}"
height = {height}
kappa = {kappa}
reach = {reach}
"""


def campaign_run(seed: int, args, quartet: np.ndarray, executor) -> tuple[float | None, int]:
    """(total MD ns at the first basin frame or None, rounds run)."""
    from lss_engine.campaign.config import CampaignConfig
    from lss_engine.campaign.driver import Campaign, init_campaign
    from lss_engine.store import TrajectoryStore
    import tomllib

    directory = Path(args.workdir) / (args.ranker + (f"_{args.mode}{args.explorers}" if args.explorers else "")) / f"seed{seed}"
    shutil.rmtree(directory, ignore_errors=True)
    text = CONFIG.format(seed=seed, walkers=args.walkers, walker_ps=args.walker_ps, ranker=args.ranker,
                         budget_ns=args.budget_ns, dim=args.dim, features=args.features, explorers=args.explorers,
                         kappa=args.kappa, reach=args.reach, mode=args.mode, height=args.height)
    campaign = Campaign(init_campaign(directory, CampaignConfig.from_mapping(tomllib.loads(text))))
    r = 0
    while True:
        campaign.run(executor=executor, max_rounds=1, progress=False)
        state = campaign.state
        first = np.inf
        for w in state.round_walkers(r):
            if w.committed is None:
                continue
            store = TrajectoryStore(campaign.dir / w.committed["folder"] / "md.zarr")
            phi = store_phi(store, quartet)
            hit = np.flatnonzero((phi > BASIN[0]) & (phi < BASIN[1]))
            if len(hit):
                first = min(first, store.times()[hit[0]])
        if np.isfinite(first):
            return (r * args.walkers * args.walker_ps + args.walkers * first) / 1000.0, r + 1
        if state.stopped is not None:
            return None, r + 1
        r += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0, help="campaign seeds first-seed … first-seed + seeds − 1")
    parser.add_argument("--plain-seeds", type=int, default=3)
    parser.add_argument("--budget-ns", type=float, default=20.0)
    parser.add_argument("--walkers", type=int, default=8)
    parser.add_argument("--walker-ps", type=float, default=50.0)
    parser.add_argument("--ranker", default="counts")
    parser.add_argument("--dim", type=int, default=4, help="SRV latent dimensions (4: sin/cos of φ and ψ)")
    parser.add_argument("--features", default="backbone-torsions",
                        help="campaign features (biased explorers need smooth ones: backbone-torsions-sincos)")
    parser.add_argument("--explorers", type=int, default=0, help="biased explorer walkers per round (lss_engine.bias)")
    parser.add_argument("--mode", default="push", help="explorers: push (restraint past the frontier) or flood")
    parser.add_argument("--height", type=float, default=2.0, help="flood: kJ/mol per ln(1 + cell count)")
    parser.add_argument("--kappa", type=float, default=50.0, help="explorers' latent restraint, kJ/mol per unit^2")
    parser.add_argument("--reach", type=float, default=1.0, help="explorers' target beyond their seed, latent units")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", default="runs/adaptive_ala2")
    args = parser.parse_args()

    from lss_engine.campaign.executors import ProcessPoolExecutor

    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    quartet = phi_indices()
    results = {"campaign": [], "plain": []}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            ns, rounds = campaign_run(seed, args, quartet, pool)
            results["campaign"].append({"seed": seed, "ns": ns, "rounds": rounds})
            print(f"campaign seed {seed}: {'not reached' if ns is None else f'{ns:.2f} ns'} ({rounds} rounds, "
                  f"{time.perf_counter() - t0:.0f} s so far)", flush=True)
    for seed in range(args.plain_seeds):
        ns = plain_md(seed, args.walkers, args.budget_ns * 1000.0, quartet)
        results["plain"].append({"seed": seed, "ns": ns})
        print(f"plain MD seed {seed}: {'not reached' if ns is None else f'{ns:.2f} ns'}", flush=True)
    reached = [r["ns"] for r in results["campaign"] if r["ns"] is not None]
    plain = [r["ns"] for r in results["plain"] if r["ns"] is not None]
    print(f"\nalanine dipeptide, vacuum, 300 K, from C7eq; basin {BASIN[0]} < φ < {BASIN[1]}; budget "
          f"{args.budget_ns:g} ns of total MD; {args.walkers} walkers × {args.walker_ps:g} ps per round")
    how = f"κ={args.kappa:g} reach={args.reach:g}" if args.mode == "push" else f"height={args.height:g}"
    label = args.ranker + (f", {args.explorers} {args.mode} explorers {how}" if args.explorers else "")
    print(f"  campaign ({label}; features {args.features}): reached in {len(reached)} of {args.seeds} seeds"
          + (f"; median {np.median(reached):.2f} ns, range {min(reached):.2f}-{max(reached):.2f} ns" if reached else ""))
    print(f"  plain MD ({args.walkers} walkers × {args.budget_ns / args.walkers:g} ns): reached in {len(plain)} of "
          f"{args.plain_seeds} seeds" + (f"; at {', '.join(f'{x:.2f}' for x in plain)} ns" if plain else ""))
    (Path(args.workdir) / f"results_{args.first_seed}.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
