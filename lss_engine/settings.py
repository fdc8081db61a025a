"""The settings of the training stages: what ``lss train`` and the pipeline's jobs take.

Plain dataclasses with no heavy imports, so that the command line takes its
option defaults from here (one place for every default).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .errors import LssError

__all__ = ["TrainingRunSettings", "EncoderSettings", "PropagatorSettings", "DecoderSettings"]


@dataclass
class TrainingRunSettings:
    """What every training stage's settings share: seed, validation share, device, progress bars, CPU threads."""

    seed: int = 0
    val_fraction: float = 0.2
    device: str = "auto"  # GPU when present
    progress: bool = True
    threads: int | None = None  # torch CPU threads; None: lss_engine._helpers.configure_threads' default
    # training/validation split: "auto" (whole trajectories when there are 5 or more, else interleaved blocks),
    # "interleaved" (every 5th of 100 blocks: a rarely visited state lands in both parts), "blocks" (random
    # blocks: a slow process can be missing from validation, which then stops training early) or "trajectories"
    val_split: str = "auto"

    def split_mode(self, n_trajectories: int) -> str:
        """How :meth:`lss_engine.data.TimeLaggedDataset.split` divides ``n_trajectories`` trajectories."""
        if self.val_split == "auto":
            return "trajectories" if n_trajectories >= 5 else "interleaved"
        if self.val_split not in ("blocks", "interleaved", "trajectories"):
            raise LssError(f"--val-split must be auto, blocks, interleaved or trajectories, got {self.val_split!r}")
        return self.val_split


@dataclass
class EncoderSettings(TrainingRunSettings):
    """Choices of :func:`train_encoder` (defaults follow the papers where they say)."""

    kind: str = "srv"  # "srv" | "vampnet"
    lag: Any = "10ps"
    dim: int | None = 2  # SRV latent dimension (None: largest spectral gap); VAMPNet: softmax states
    n_outputs: int | None = None  # SRV network outputs (default: max(dim, 4) ... see below)
    hidden: Sequence[int] | None = None  # default: SRV (100, 100); VAMPNet (64, 32, 16)
    epochs: int = 60  # as the alanine dipeptide acceptance run (benchmarks/acceptance_encoders.py)
    pretrain_epochs: int = 0  # VAMPNet: VAMP-1 epochs before VAMP-2 (the paper's option)
    batch_size: int = 1000
    lr: float = 5e-4
    restarts: int = 3
    patience: int | None = 10

    def validate(self) -> None:
        if self.kind not in ("srv", "vampnet"):
            raise LssError(f"encoder must be 'srv' or 'vampnet', got {self.kind!r}")
        if self.dim is not None and self.dim < (2 if self.kind == "vampnet" else 1):
            raise LssError(f"--dim {self.dim} is too small for a {self.kind}")
        if self.kind == "vampnet" and self.dim is None:
            raise LssError("a VAMPNet needs --dim (the number of metastable states)")


@dataclass
class PropagatorSettings(TrainingRunSettings):
    """Choices of :func:`train_propagator`.

    MDN (the LSS paper): a mixture of ``n_components`` Gaussians for
    p(ψ(t+τ) | ψ(t)) in the SRV latent space, τ = ``lag`` (default: the
    encoder's lag). LSTM (Tsai, Kuo & Tiwary): the first slow coordinate cut
    into ``n_labels`` equal-width bins, sequences of ``sequence_length`` tokens
    spaced by ``lag``.
    """

    kind: str = "mdn"  # "mdn" | "lstm"
    lag: Any = None
    n_components: int = 24  # as the accepted simulator (lss demo, benchmarks/acceptance_lss_ala2.py's model)
    hidden: Sequence[int] | None = None  # MDN default (100, 100)
    transform: str = "quantile"  # MDN: "quantile" (marginal Gaussianisation) or "standard" (standard scores)
    linear_weight: float = 0.5  # MDN "quantile": share of standard scores blended in (keeps gaps as barriers)
    n_labels: int = 32
    embedding_dim: int = 8
    lstm_units: int = 64
    sequence_length: int = 100
    epochs: int = 100
    batch_size: int | None = None  # MDN 1000 pairs; LSTM 64 sequences
    lr: float = 1e-3
    restarts: int = 1
    patience: int | None = 10

    def validate(self) -> None:
        if self.kind not in ("mdn", "lstm"):
            raise LssError(f"propagator must be 'mdn' or 'lstm', got {self.kind!r}")


@dataclass
class DecoderSettings(TrainingRunSettings):
    """Choices of :func:`train_decoder`: a conditional WGAN-GP decoder ψ → positions of the saved atoms.

    The LSS paper's generator and critic have three hidden layers of 200
    (Swish), 50 noise dimensions, gradient-penalty weight 10 and several
    critic steps per generator step.  ``stride`` thins the training frames
    (adjacent 1-ps frames are nearly copies of each other).

    Two additions to the paper's recipe (see ``benchmarks/decoder_ala2.py``):
    the critic also sees interatomic distances and the sine and cosine
    of every proper torsion of the decoded atoms (``critic_features``), and
    decoding uses an exponential moving average of the generator's weights
    (``ema_decay``; ``0`` turns it off).  The distances are those of the atom
    pairs closer than ``critic_cutoff`` (nm) in the training frames' mean
    structure plus the 1-2, 1-3 and 1-4 neighbours of the topology's bonds
    (:func:`lss_engine.models.cwgan.select_critic_pairs`), so the critic's
    cost grows linearly with the atoms (``benchmarks/critic_cost.py``);
    0.8 nm keeps every pair of alanine dipeptide's heavy atoms.
    ``critic_cutoff=None``: all pairs.

    ``alignment`` (:func:`lss_engine.decoder_data.choose_alignment`):
    ``"auto"`` superposes molecules (Kabsch onto the mean structure, the
    paper's choice) and keeps the absolute positions of fewer than 3 saved
    atoms, of systems with forces on absolute positions (the store records
    ``CustomExternalForce``: fields, toy potentials, positional restraints) or
    of particles that are no molecule (no bonds, no standard residue); ``"kabsch"`` or ``"none"`` force the choice.
    The choice is recorded in the decoder stage's metadata and config.
    """

    hidden: Sequence[int] = (200, 200, 200)
    noise_dim: int = 50
    n_critic: int = 5
    epochs: int = 60
    batch_size: int = 128
    lr: float = 5e-4
    patience: int | None = 15
    lr_patience: int = 4  # halve the learning rate after this many epochs without a better structure score
    stride: int = 1
    critic_features: bool = True
    critic_cutoff: float | None = 0.8  # nm; None: all pairs
    ema_decay: float = 0.995
    alignment: str = "auto"  # "auto" | "kabsch" | "none"
