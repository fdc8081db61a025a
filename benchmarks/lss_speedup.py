"""Speed of a latent space simulator vs the OpenMM run that made its training data, side by side.

One process, same machine, measured back to back:

* OpenMM MD of the training system (alanine dipeptide in vacuum, 450 K,
  Reference platform, 2 fs): steps/s → simulated ns per wall-clock second;
* ``LatentSpaceSimulator.generate`` to DCD (OpenMM's DCDReporter through
  ``LatentSimulation``) and to zarr: decoded frames/s → simulated ns per
  wall-clock second at the model's lag;
* the latent propagator alone (no decoding).

    OMP_NUM_THREADS=1 python benchmarks/lss_speedup.py --model runs/demo/model
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path



def md_rate(seconds: float) -> float:
    """OpenMM MD steps/s of the demo's system (alanine dipeptide, vacuum, 450 K, Reference)."""
    from lss_engine.systems import get_system

    sim = get_system("alanine-dipeptide", temperature=450.0).make_simulation(platform="Reference", seed=1)
    sim.step(2000)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sim.step(20_000)
        n += 20_000
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/demo/model")
    parser.add_argument("--walkers", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10_000, help="lag steps per walker")
    parser.add_argument("--md-seconds", type=float, default=20.0)
    args = parser.parse_args()

    import torch

    from lss_engine.simulator import LatentSpaceSimulator

    torch.set_num_threads(1)
    sim = LatentSpaceSimulator.load(args.model)
    lag_ns = sim.lag_ps / 1000.0
    rows = []
    steps_per_s = md_rate(args.md_seconds)
    md_ns_per_s = steps_per_s * 0.002 / 1000.0
    rows.append(("OpenMM MD (Reference, 2 fs)", f"{steps_per_s:,.0f} steps/s", md_ns_per_s))
    tmp = Path(tempfile.mkdtemp(prefix="lss_speedup_"))
    try:
        for suffix in (".dcd", ".zarr"):
            t0 = time.perf_counter()
            sim.generate(args.steps, args.walkers, tmp / f"synth{suffix}", seed=1, progress=False)
            wall = time.perf_counter() - t0
            frames = args.walkers * args.steps
            rows.append((f"lss generate → {suffix} ({args.walkers} walkers, decoded)", f"{frames / wall:,.0f} frames/s",
                         frames * lag_ns / wall))
        start = sim.start_latent(None, args.walkers * 100, seed=0)
        t0 = time.perf_counter()
        sim.propagate(start, args.steps, seed=1)
        wall = time.perf_counter() - t0
        steps = args.walkers * 100 * args.steps
        rows.append((f"latent propagation only ({args.walkers * 100} walkers)", f"{steps / wall:,.0f} steps/s",
                     steps * lag_ns / wall))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"model {args.model}: lag {sim.lag_ps:g} ps, {sim.n_atoms} decoded atoms, latent dim {sim.n_latent}")
    print(f"{'run':<52} {'rate':>22} {'ns / wall s':>12} {'vs MD':>10}")
    for name, rate, ns in rows:
        print(f"{name:<52} {rate:>22} {ns:>12.4g} {ns / md_ns_per_s:>10.3g}")


if __name__ == "__main__":
    main()
