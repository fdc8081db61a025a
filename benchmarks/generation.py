"""Generation speed of the latent propagators vs the MD that makes their training data.

One process, side by side:

* MDN (2-D latent, 8 components, 100-100 hidden) with 1,000 walkers: latent
  steps per second (target ≥ 1e6 on a 2-core CPU);
* the same MDN into one trajectory store per walker end to end
  (``sample_to_stores``, 1,000 walkers × ``--store-steps`` steps in chunks of
  10,000: store creation and commits included; target ≥ 1e6 too);
* LSTM language model (32 labels, M = 8, L = 64) with 1,000 sequences: tokens/s;
* OpenMM alanine dipeptide in vacuum at 450 K on the Reference platform:
  integration steps/s;

and simulated time per wall-clock second of each, with the propagators taking
one lag (default 10 ps) per step and MD 2 fs per step.

    OMP_NUM_THREADS=1 python benchmarks/generation.py [--walkers 1000] [--steps 2000] [--store-steps 20000] [--lag-ps 10]

``benchmarks/latent_stores.py`` breaks the store line down.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _rate(fn, units: float, repeats: int = 3) -> float:
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = max(best, units / (time.perf_counter() - t0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walkers", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=2000, help="propagator steps per walker")
    parser.add_argument("--store-steps", type=int, default=20_000, help="steps per walker into stores")
    parser.add_argument("--lstm-steps", type=int, default=500)
    parser.add_argument("--md-steps", type=int, default=50_000)
    parser.add_argument("--lag-ps", type=float, default=10.0)
    args = parser.parse_args()

    from lss_engine.models import LSTMLanguageModel, MDNPropagator
    from lss_engine.systems import get_system

    from lss_engine.data import TimeLaggedDataset
    from lss_engine.train import TrainConfig, fit

    # an MDN fitted (briefly) to a 2-D Ornstein-Uhlenbeck process, so generation is stable
    rng = np.random.default_rng(0)
    x = np.zeros((20_000, 2), dtype=np.float32)
    for t in range(1, len(x)):
        x[t] = 0.9 * x[t - 1] + np.sqrt(1 - 0.81) * rng.standard_normal(2)
    data = TimeLaggedDataset([x], 1)
    train, val = data.split(0.2)
    mdn = fit(lambda seed: MDNPropagator(2, 8, hidden=(100, 100)).fit_normalization(train), train, val,
              TrainConfig(epochs=3, progress=False)).model.eval()
    start = np.zeros(2, dtype=np.float32)
    mdn.propagate(start, 10, n_walkers=args.walkers, seed=0)  # warm up
    mdn_rate = _rate(lambda: mdn.propagate(start, args.steps, n_walkers=args.walkers, seed=1),
                     args.steps * args.walkers)

    from lss_engine.latent_sampling import sample_to_stores

    out = Path(tempfile.mkdtemp(prefix=".lss-generation-"))
    try:
        t0 = time.perf_counter()
        sample_to_stores(mdn, start, args.store_steps, args.walkers, out_dir=out / "stores", frame_interval_ps=args.lag_ps,
                         seed=2, chunk_steps=10_000, progress=False)
        stores_rate = args.store_steps * args.walkers / (time.perf_counter() - t0)
    finally:
        shutil.rmtree(out, ignore_errors=True)

    lstm = LSTMLanguageModel(32, embedding_dim=8, hidden=64).eval()
    lstm.generate(10, n_sequences=args.walkers, seed=0)
    lstm_rate = _rate(lambda: lstm.generate(args.lstm_steps, n_sequences=args.walkers, seed=1),
                      args.lstm_steps * args.walkers)

    sim = get_system("alanine-dipeptide", temperature=450.0).make_simulation(platform="Reference", seed=1)
    sim.step(1000)
    md_rate = _rate(lambda: sim.step(args.md_steps), args.md_steps, repeats=2)
    timestep_ps = sim.integrator.getStepSize()._value

    md_ps = md_rate * timestep_ps
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; lag {args.lag_ps:g} ps per propagator step")
    print(f"{'':<42}{'steps/s':>14}{'simulated ns per wall s':>26}{'vs MD':>10}")
    print(f"{'OpenMM MD (ala2, Reference, 2 fs)':<42}{md_rate:>14,.0f}{md_ps / 1000:>26.4g}{1:>10.3g}")
    for name, rate in ((f"MDN, {args.walkers} walkers", mdn_rate),
                       (f"MDN → stores end to end, {args.walkers} walkers", stores_rate),
                       (f"LSTM, {args.walkers} sequences", lstm_rate)):
        ps = rate * args.lag_ps
        print(f"{name:<42}{rate:>14,.0f}{ps / 1000:>26.4g}{ps / md_ps:>10.3g}")
    print(f"\nMDN latent steps/s target >= 1e6: {'PASS' if mdn_rate >= 1e6 else 'FAIL'} ({mdn_rate:.3g})")
    print(f"MDN → stores end to end target >= 1e6: {'PASS' if stores_rate >= 1e6 else 'FAIL'} ({stores_rate:.3g}, "
          f"{stores_rate / mdn_rate:.2f} of the MDN alone)")


if __name__ == "__main__":
    main()
