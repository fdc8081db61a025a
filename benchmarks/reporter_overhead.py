"""Reporter overhead on alanine dipeptide in vacuum (Reference platform).

One process, one simulation, one report interval (500 steps by default):
bare MD, OpenMM's DCDReporter, mdtraj's HDF5Reporter, and lss_engine's
ZarrReporter (backbone torsions + heavy-atom distances + heavy-atom
positions). Variants run round-robin for several rounds (the machine is
noisy); each reporter stays attached to one file throughout, and the median
steps/s over segments of each is printed with its ratio to bare MD.

Target (issue 2): ZarrReporter costs no more than DCDReporter and stays within
5 % of bare MD.

    python benchmarks/reporter_overhead.py [--steps 100000] [--rounds 15] [--interval 500]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000, help="steps per variant per segment")
    parser.add_argument("--rounds", type=int, default=15)
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
          f"{args.rounds} segments of {args.steps} steps per variant")
    sim.step(5000)  # warm up

    workdir = Path(tempfile.mkdtemp(prefix="lss-bench-"))
    reporters = {
        "bare MD": None,
        "DCDReporter": DCDReporter(str(workdir / "md.dcd"), args.interval),
        "ZarrReporter": ZarrReporter(workdir / "md.zarr", args.interval,
                                     featurizer="backbone-torsions,heavy-atom-distances", atoms="heavy"),
    }
    if HDF5Reporter is not None:
        reporters["mdtraj HDF5Reporter"] = HDF5Reporter(str(workdir / "md.h5"), args.interval)
    variants = [v for v in ("bare MD", "DCDReporter", "mdtraj HDF5Reporter", "ZarrReporter") if v in reporters]
    # Each reporter stays attached to its own file for the whole benchmark (set-up costs are paid
    # once, as in a real run); variants take turns in short segments so that machine noise hits
    # them alike, and the median segment rate of each is compared.
    for variant in variants:  # first report: file creation, imports
        sim.reporters[:] = [reporters[variant]] if reporters[variant] else []
        sim.step(args.interval * 2)
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            sim.reporters[:] = [reporters[variant]] if reporters[variant] else []
            t0 = time.perf_counter()
            sim.step(args.steps)
            rates[variant].append(args.steps / (time.perf_counter() - t0))
    sim.reporters.clear()
    for reporter in reporters.values():
        if hasattr(reporter, "close"):
            reporter.close()

    bare = statistics.median(rates["bare MD"])
    dcd = statistics.median(rates["DCDReporter"])
    print(f"\n{'variant':<22}{'steps/s (median)':>18}{'vs bare MD':>12}{'vs DCD':>10}   interquartile range")
    for variant in variants:
        med = statistics.median(rates[variant])
        q1, q3 = statistics.quantiles(rates[variant], n=4)[0], statistics.quantiles(rates[variant], n=4)[2]
        print(f"{variant:<22}{med:>18,.0f}{med / bare:>12.3f}{med / dcd:>10.3f}   {q1:,.0f} – {q3:,.0f}")
    zarr_rate = statistics.median(rates["ZarrReporter"])
    print(f"\nZarrReporter overhead vs bare MD: {100 * (1 - zarr_rate / bare):.1f} % "
          f"(target <= 5 %); vs DCDReporter: {100 * (1 - zarr_rate / dcd):+.1f} % (target <= 0 %)")


if __name__ == "__main__":
    main()
