"""Neural networks and their losses (VAMP scores, VAMPNet, SRV, MDN, LSTM, cWGAN).

* :mod:`~lss_engine.models.vamp` - VAMP covariances, Koopman matrices and scores (torch);
* :class:`VAMPNet` - softmax VAMPnet (fuzzy MSM) and its :class:`KoopmanModel`;
* :class:`SRV` - state-free reversible VAMPnet with whitened, ordered eigenfunctions;
* :class:`MDNPropagator` - mixture density network propagator of the LSS;
* :class:`CWGANDecoder` - conditional WGAN-GP decoder latent -> aligned structures;
* :func:`make_mlp` - the fully connected lobe they share.
"""
from .cwgan import CWGANDecoder
from .lstm import LSTMLanguageModel, embedding_transition_matrix, kinetic_distance
from .mdn import MDNPropagator
from .mlp import make_mlp
from .srv import SRV
from .vamp import (
    CovarianceAccumulator,
    covariances,
    koopman_matrix,
    reversible_vamp_score,
    symmetrized_covariances,
    vamp_score,
    vampnet_loss,
)
from .vampnet import KoopmanModel, VAMPNet, koopman_model_from_memberships

__all__ = [
    "MDNPropagator",
    "CWGANDecoder",
    "LSTMLanguageModel", "kinetic_distance", "embedding_transition_matrix",
    "VAMPNet",
    "SRV",
    "KoopmanModel",
    "koopman_model_from_memberships",
    "make_mlp",
    "CovarianceAccumulator",
    "covariances",
    "symmetrized_covariances",
    "koopman_matrix",
    "vamp_score",
    "vampnet_loss",
    "reversible_vamp_score",
]
