"""Reporter overhead on alanine dipeptide in vacuum (Reference platform).

One process, one simulation, one report interval (500 steps by default):
bare MD, OpenMM's DCDReporter, mdtraj's HDF5Reporter, and lss_engine's
ZarrReporter (backbone torsions + heavy-atom distances + heavy-atom
positions). Variants run round-robin for several rounds (the machine is
noisy); the median steps/s of each is printed with its ratio to bare MD.

Target (issue 2): ZarrReporter costs no more than DCDReporter and stays within
5 % of bare MD.

    python benchmarks/reporter_overhead.py [--steps 200000] [--rounds 5] [--interval 500]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000, help="steps per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--interval", type=int, default=500, help="report interval in steps")
    parser.add_argument("--temperature", type=float, default=450.0)
    args = parser.parse_args()

    from openmm.app import DCDReporter

    from lss_engine.reporters import ZarrReporter
    from lss_engine.systems import get_system

    try:
        from mdtraj.reporters import HDF5Reporter
        import tables  # noqa: F401  (HDF5Reporter needs PyTables)
    except ImportError:
        HDF5Reporter = None
        print("mdtraj HDF5Reporter unavailable (pip install tables); skipping it")

    test_system = get_system("alanine-dipeptide", temperature=args.temperature)
    sim = test_system.make_simulation(platform="Reference", seed=1)
    print(f"alanine dipeptide, vacuum, {args.temperature:g} K, platform "
          f"{sim.context.getPlatform().getName()}, report every {args.interval} steps, "
          f"{args.steps} steps x {args.rounds} rounds per variant")
    sim.step(5000)  # warm up

    workdir = Path(tempfile.mkdtemp(prefix="lss-bench-"))
    counter = iter(range(10**6))

    def make(variant: str):
        i = next(counter)
        if variant == "bare MD":
            return None
        if variant == "DCDReporter":
            return DCDReporter(str(workdir / f"{i}.dcd"), args.interval)
        if variant == "mdtraj HDF5Reporter":
            return HDF5Reporter(str(workdir / f"{i}.h5"), args.interval)
        return ZarrReporter(workdir / f"{i}.zarr", args.interval,
                            featurizer="backbone-torsions,heavy-atom-distances", atoms="heavy")

    variants = ["bare MD", "DCDReporter", "ZarrReporter"]
    if HDF5Reporter is not None:
        variants.insert(2, "mdtraj HDF5Reporter")
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            reporter = make(variant)
            sim.reporters.clear()
            if reporter is not None:
                sim.reporters.append(reporter)
            t0 = time.perf_counter()
            sim.step(args.steps)
            if hasattr(reporter, "close"):
                reporter.close()
            rates[variant].append(args.steps / (time.perf_counter() - t0))
    sim.reporters.clear()

    bare = statistics.median(rates["bare MD"])
    dcd = statistics.median(rates["DCDReporter"])
    print(f"\n{'variant':<22}{'steps/s (median)':>18}{'vs bare MD':>12}{'vs DCD':>10}   rounds")
    for variant in variants:
        med = statistics.median(rates[variant])
        rounds = " ".join(f"{r:,.0f}" for r in rates[variant])
        print(f"{variant:<22}{med:>18,.0f}{med / bare:>12.3f}{med / dcd:>10.3f}   {rounds}")
    zarr_rate = statistics.median(rates["ZarrReporter"])
    print(f"\nZarrReporter overhead vs bare MD: {100 * (1 - zarr_rate / bare):.1f} % "
          f"(target <= 5 %); vs DCDReporter: {100 * (1 - zarr_rate / dcd):+.1f} % (target <= 0 %)")


if __name__ == "__main__":
    main()
