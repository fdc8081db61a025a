"""cWGAN decoder epochs per second: torch's default threads vs ``configure_threads``, alone and beside a busy process.

torch starts one intra-op thread per core.  For the small networks of the
latent space simulator that gains little alone, and it collapses when
another process wants a core: every parallel region waits for a thread that
is descheduled.  :func:`lss_engine._helpers.configure_threads` (called by
``lss train``, ``lss generate`` and ``lss sample-latent``) picks
``OMP_NUM_THREADS`` if set, else half the usable cores (1 to 4).

Each measurement runs in a fresh Python process (``OMP_NUM_THREADS`` removed
from its environment, so "torch default" really is torch's default) that
trains a :class:`lss_engine.models.CWGANDecoder` with the pipeline's settings
(3 x 200 Swish, 50 noise dimensions, critic distances and torsions, batch
128) on a fixed synthetic data set of an alanine-dipeptide-sized molecule
(10 atoms, 2 latent dimensions, ``--frames`` frames) and reports epochs per
second over ``--epochs`` epochs after one warm-up epoch.  "Beside a busy
process": meanwhile another Python process multiplies matrices with numpy in
a loop on one thread (one other CPU-bound job).

    python benchmarks/thread_contention.py
    python benchmarks/thread_contention.py --frames 512 --epochs 1    # quick check
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

BUSY = ("import numpy as np\n"
        "a = np.random.default_rng(0).normal(size=(300, 300))\n"
        "while True:\n"
        "    a = np.tanh(a @ a)\n")


def _env() -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
    return env


def worker(mode: str, frames: int, epochs: int, seed: int = 0) -> dict:
    """Epochs per second of one decoder training run in this process (``mode``: "default" or "configured")."""
    import numpy as np
    import torch

    from lss_engine._helpers import configure_threads
    from lss_engine.models import CWGANDecoder
    from lss_engine.structure import proper_torsions

    threads = torch.get_num_threads() if mode == "default" else configure_threads(None)
    rng = np.random.default_rng(seed)
    n_atoms = 10
    chain = np.array([[0.15 * k, 0.1 * (k % 2), 0.05 * (k % 3)] for k in range(n_atoms)])
    psi = rng.normal(size=(frames, 2)).astype(np.float32)
    x = (chain + 0.02 * psi[:, :1, None] + rng.normal(0, 0.01, (frames, n_atoms, 3))).astype(np.float32)
    bonds = np.stack([np.arange(n_atoms - 1), np.arange(1, n_atoms)], axis=1)
    torch.manual_seed(seed)
    model = CWGANDecoder(2, n_atoms, critic_distances=True, critic_torsions=proper_torsions(bonds).tolist(),
                         ema_decay=0.995).fit_normalization((psi, x))
    opts = model.configure_optimizers(5e-4)
    psi_t, x_t = torch.as_tensor(psi), torch.as_tensor(x)

    def epoch() -> None:
        order = torch.randperm(frames)
        for a in range(0, frames, 128):
            rows = order[a : a + 128]
            model.training_step((psi_t[rows], x_t[rows]), opts)

    epoch()  # warm-up
    t0 = time.perf_counter()
    for _ in range(epochs):
        epoch()
    wall = time.perf_counter() - t0
    return {"mode": mode, "threads": threads, "epochs_per_s": epochs / wall, "seconds": wall}


def measure(mode: str, busy: bool, frames: int, epochs: int) -> dict:
    competitor = None
    if busy:
        env = {**_env(), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        competitor = subprocess.Popen([sys.executable, "-c", BUSY], env=env)
        time.sleep(1.0)  # let it get going
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", mode, "--frames", str(frames),
                              "--epochs", str(epochs)], env=_env(), check=True, capture_output=True, text=True)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4096, help="training frames (an epoch: frames / 128 updates)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement")
    parser.add_argument("--worker", choices=["default", "configured"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.frames, args.epochs)))
        return

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"cWGAN decoder, {args.frames} frames, batch 128, {args.epochs} epoch(s) per measurement; "
          f"{cores} usable cores")
    rows = {}
    for mode in ("default", "configured"):
        for busy in (False, True):
            rows[mode, busy] = measure(mode, busy, args.frames, args.epochs)
    print(f"\n{'threads':28s} {'alone ep/s':>11s} {'busy ep/s':>10s} {'alone/busy':>11s}")
    for mode, label in (("default", "torch default"), ("configured", "configure_threads(None)")):
        alone, busy = rows[mode, False], rows[mode, True]
        print(f"{label + ' (' + str(alone['threads']) + ')':28s} {alone['epochs_per_s']:11.3f} "
              f"{busy['epochs_per_s']:10.3f} {alone['epochs_per_s'] / busy['epochs_per_s']:11.2f}")
    for busy, label in ((False, "alone"), (True, "beside a busy process")):
        ratio = rows["configured", busy]["epochs_per_s"] / rows["default", busy]["epochs_per_s"]
        print(f"configure_threads / torch default, {label}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
