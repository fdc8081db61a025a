"""VAMPNet training: lss_engine against deeptime on the same data, network and epochs.

The data are a featurised toy: a hidden 3-state Markov chain whose states emit
3-D Gaussians, mapped non-linearly into 30 features (``tanh`` of a random
linear map, plus noise).  Both trainers get

* the same training and validation pairs (a block split of one trajectory,
  features standardised with training statistics),
* the same network, 30-64-32-16-6 with ELU and softmax output, shared lobes,
  **starting from the same weights**,
* the same optimiser (Adam, learning rate 5e-4), batch size (1000), epochs,
  score (VAMP-2, ``regularize``, epsilon 1e-6) and ``torch.set_num_threads``;
* their epochs interleaved (one of deeptime, one of ours, ...), so that both
  see the same load on a shared machine; only the training epochs are timed.

deeptime's ``deeptime.decomposition.deep.VAMPNet`` is fitted as its
documentation shows, with a ``torch.utils.data.DataLoader`` over a
``TrajectoryDataset`` (restricted to our training pairs with a ``Subset``);
ours draws tensor-indexed batches from ``TimeLaggedDataset.batches`` in a
plain Adam loop (and, if ``lss_engine.train`` is importable, once more through
``lss_engine.train.fit``).  Both validation scores are computed by one
function (``lss_engine.models.vamp.vamp_score`` in float64 over all validation
pairs at once)::

    python benchmarks/encoder_vs_deeptime.py --frames 200000 --epochs 10 --threads 1
"""
from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from lss_engine.data import Normalizer, TimeLaggedDataset
from lss_engine.models import VAMPNet
from lss_engine.models.vamp import vamp_score

T3 = np.array([[0.985, 0.010, 0.005], [0.010, 0.980, 0.010], [0.005, 0.015, 0.980]])


def make_data(n_frames: int, n_features: int, seed: int) -> np.ndarray:
    """Frames of the featurised hidden 3-state chain, float32 ``(n_frames, n_features)``."""
    rng = np.random.default_rng(seed)
    cdf = T3.cumsum(axis=1)
    u = rng.random(n_frames)
    s = np.empty(n_frames, dtype=np.int64)
    s[0] = 0
    for i in range(1, n_frames):
        s[i] = min(np.searchsorted(cdf[s[i - 1]], u[i], side="right"), 2)
    hidden = rng.normal(size=(3, 3)) * 1.5
    y = hidden[s] + rng.normal(size=(n_frames, 3))
    a = rng.normal(size=(3, n_features)) / np.sqrt(3)
    x = np.tanh(y @ a) + 0.1 * rng.normal(size=(n_frames, n_features))
    return x.astype(np.float32)


def score_of(lobe: torch.nn.Module, x0: torch.Tensor, xt: torch.Tensor) -> float:
    """The one validation score: VAMP-2 of all validation pairs, float64."""
    lobe.eval()
    with torch.no_grad():
        chi0, chit = lobe(x0).double(), lobe(xt).double()
    return float(vamp_score(chi0, chit, "VAMP2", 1e-6, "regularize"))


class DeeptimeTrainer:
    """deeptime's documented usage: ``VAMPNet(lobe=...).fit(DataLoader(TrajectoryDataset))``."""

    def __init__(self, lobe: torch.nn.Module, frames: np.ndarray, lag: int, train_idx: np.ndarray,
                 batch: int, lr: float, seed: int):
        from deeptime.decomposition.deep import VAMPNet as DeeptimeVAMPNet
        from deeptime.util.data import TrajectoryDataset

        dataset = torch.utils.data.Subset(TrajectoryDataset(lagtime=lag, trajectory=frames), train_idx)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True,
                                                  generator=torch.Generator().manual_seed(seed))
        self.est = DeeptimeVAMPNet(lobe=lobe, learning_rate=lr, score_method="VAMP2", score_mode="regularize",
                                   epsilon=1e-6, dtype=np.float32)

    def epoch(self) -> float:
        t0 = time.perf_counter()
        self.est.fit(self.loader, n_epochs=1)  # the optimiser persists between calls
        return time.perf_counter() - t0

    @property
    def lobe(self) -> torch.nn.Module:
        return self.est.fetch_model().lobe


class OurTrainer:
    """Tensor-indexed batches and a plain Adam loop over ``VAMPNet.training_loss``."""

    def __init__(self, model: VAMPNet, train: TimeLaggedDataset, batch: int, lr: float, seed: int):
        self.model, self.train, self.batch = model, train, batch
        self.opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)  # multi-tensor update
        self.gen = torch.Generator().manual_seed(seed)

    def epoch(self) -> float:
        model, opt = self.model, self.opt
        model.train()
        t0 = time.perf_counter()
        for batch in self.train.batches(self.batch, generator=self.gen):
            opt.zero_grad(set_to_none=True)
            model.training_loss(batch).backward()
            opt.step()
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--states", type=int, default=6)
    parser.add_argument("--lag", type=int, default=1, help="in frames")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fit", action="store_true", help="skip the run through lss_engine.train.fit")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    frames = make_data(args.frames, args.features, args.seed)
    data = TimeLaggedDataset(frames, args.lag)
    train, val = data.split(0.1, seed=args.seed)
    norm = Normalizer().fit(train)
    train, val = train.with_normalizer(norm), val.with_normalizer(norm)
    x0_val, xt_val = val.x0(slice(None)), val.xt(slice(None))
    normalised = norm.transform(frames).astype(np.float32)
    n_train = len(train)
    print(f"data: {args.frames} frames x {args.features} features, lag {args.lag}; "
          f"{n_train} training / {len(val)} validation pairs; {args.epochs} epochs, batch {args.batch}, "
          f"lr {args.lr:g}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")

    torch.manual_seed(args.seed)
    ours = VAMPNet(args.features, args.states, hidden=(64, 32, 16), shared=True)
    init = copy.deepcopy(ours.state_dict())
    # deeptime gets the same layers and initial weights with a stock nn.Softmax output
    theirs_lobe = torch.nn.Sequential(copy.deepcopy(ours.lobe[0]), torch.nn.Softmax(dim=1))
    print(f"network: {args.features}-64-32-16-{args.states} ELU + softmax, shared lobes, same initial weights; "
          f"initial validation VAMP-2 {score_of(ours.lobe, x0_val, xt_val):.4f}")

    import deeptime

    theirs = DeeptimeTrainer(theirs_lobe, normalised, args.lag, train.pair_indices.numpy(), args.batch,
                             args.lr, args.seed)
    mine = OurTrainer(ours, train, args.batch, args.lr, args.seed)
    t_dt = t_ours = 0.0
    for _ in range(args.epochs):  # interleaved epochs: both see the same machine load
        t_dt += theirs.epoch()
        t_ours += mine.epoch()
    val_idx = val.pair_indices.numpy()
    s_dt = score_of(theirs.lobe, torch.as_tensor(normalised[val_idx]), torch.as_tensor(normalised[val_idx + args.lag]))
    s_ours = score_of(ours.lobe, x0_val, xt_val)
    r_dt = n_train * args.epochs / t_dt
    r_ours = n_train * args.epochs / t_ours
    print(f"deeptime {deeptime.__version__} VAMPNet + DataLoader : validation VAMP-2 {s_dt:.4f}   "
          f"{r_dt:>9,.0f} training pairs/s  ({t_dt:.1f} s)")
    print(f"lss_engine VAMPNet, tensor batches   : validation VAMP-2 {s_ours:.4f}   "
          f"{r_ours:>9,.0f} training pairs/s  ({t_ours:.1f} s)")
    print(f"ratio lss_engine / deeptime          : validation VAMP-2 {s_ours - s_dt:+.4f}   "
          f"throughput x{r_ours / r_dt:.2f}")

    if not args.no_fit:
        try:
            from lss_engine.train import TrainConfig, fit
        except ImportError:
            return

        def factory(seed: int) -> VAMPNet:
            model = VAMPNet(args.features, args.states, hidden=(64, 32, 16), shared=True)
            model.load_state_dict(init)
            return model

        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, patience=None,
                          lr_patience=None, progress=False, device="cpu", seed=args.seed)
        t0 = time.perf_counter()
        result = fit(factory, train, val, cfg)
        t_fit = time.perf_counter() - t0
        s_fit = score_of(result.model.lobe, x0_val, xt_val)
        r_fit = n_train * args.epochs / t_fit
        print(f"lss_engine VAMPNet, train.fit        : validation VAMP-2 {s_fit:.4f} (best epoch)   "
              f"{r_fit:>9,.0f} training pairs/s  ({t_fit:.1f} s, incl. per-epoch validation; "
              f"x{r_fit / r_dt:.2f} deeptime)")


if __name__ == "__main__":
    main()
