r"""VAMP numerics in torch: covariances, robust inverse square roots, Koopman
matrices and VAMP scores (differentiable, float32 or float64).

Notation.  ``x`` (N, n) holds features :math:`\chi_0(x_t)` of the earlier
frames of N time-lagged pairs and ``y`` (N, m) features :math:`\chi_1(x_{t+\tau})`
of the later ones.  With mean-free data :math:`\bar X = X - \mathbf 1\mu_X^\top`,

.. math::

    C_{00} = \frac{\bar X^\top \bar X}{N-1},\qquad
    C_{01} = \frac{\bar X^\top \bar Y}{N-1},\qquad
    C_{11} = \frac{\bar Y^\top \bar Y}{N-1}.

The half-weighted Koopman matrix, in the convention of deeptime's
``koopman_matrix``, is

.. math:: K = \left(C_{00}^{-1/2} C_{01} C_{11}^{-1/2}\right)^\top ,

whose singular values :math:`\sigma_i` are the canonical correlations of the
two feature sets.  The VAMP-r scores (Wu & Noé 2020; Mardt et al. 2018) are

.. math::

    \mathrm{VAMP1} = 1 + \sum_i \sigma_i = 1 + \|K\|_*, \qquad
    \mathrm{VAMP2} = 1 + \sum_i \sigma_i^2 = 1 + \|K\|_F^2,

where the ``+1`` is the constant singular function (singular value 1) that
mean-free features cannot represent; deeptime adds it the same way.  VAMP-E is
described at :func:`vamp_score_from_covariances`.

For reversible dynamics (state-free reversible VAMPnets, Chen, Sidky &
Ferguson 2019) the pairs are used in both directions: with the pooled mean
:math:`\mu = (\mu_X + \mu_Y)/2`,

.. math::

    C_{00}^s = \tfrac12 (C_{00} + C_{11}), \qquad
    C_{01}^s = \tfrac12 (C_{01} + C_{10}),

and the eigenvalues :math:`\lambda_i` of the symmetric matrix
:math:`M = (C^s_{00})^{-1/2} C^s_{01} (C^s_{00})^{-1/2}` - the eigenvalues of
the generalised problem :math:`C^s_{01} v = \lambda C^s_{00} v` - estimate the
transfer operator's eigenvalues; the reversible VAMP-r score is
:math:`1 + \sum_i |\lambda_i|^r`.

Inverse square roots of the symmetric positive semi-definite covariances use
a symmetric eigendecomposition :math:`C = V \Lambda V^\top` made robust by
``epsilon`` in one of two modes:

* ``"trunc"``: eigenvalues :math:`\lambda < \epsilon` are dropped
  (their eigenvectors contribute nothing), a pseudo-inverse;
* ``"regularize"``: :math:`\lambda \to |\lambda| + \epsilon`.  For PSD matrices
  this is deeptime's ``"regularize"`` (which adds :math:`\epsilon I` and then
  takes :math:`|\lambda|`); unlike that, it is never singular.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from ..errors import LssError

__all__ = [
    "SCORE_METHODS",
    "MODES",
    "covariances",
    "symmetrized_covariances",
    "sym_eig",
    "sym_inverse",
    "sym_inverse_sqrt",
    "koopman_matrix",
    "vamp_score",
    "vamp_score_from_covariances",
    "vampnet_loss",
    "reversible_vamp_score",
    "reversible_vamp_score_from_covariances",
    "reversible_eigenvalues",
    "reversible_eigh",
    "koopman_from_moments",
    "CovarianceAccumulator",
]

Tensor = torch.Tensor
Covariances = Tuple[Tensor, Tensor, Tensor]

#: score names accepted by :func:`vamp_score`
SCORE_METHODS = ("VAMP1", "VAMP2", "VAMPE")
#: robust inverse modes of :func:`sym_eig`
MODES = ("trunc", "regularize")


def check_method(method: str, allowed: tuple[str, ...] = SCORE_METHODS) -> str:
    """Normalise ``"vamp2"``/``"VAMP2"``/``2`` to ``"VAMP2"``; raise on unknown names."""
    name = f"VAMP{method}" if isinstance(method, int) and not isinstance(method, bool) else str(method).upper()
    if name in ("VAMP-1", "VAMP-2", "VAMP-E"):
        name = name.replace("-", "")
    if name not in allowed:
        raise LssError(f"unknown score method {method!r}; choose from {', '.join(allowed)}")
    return name


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise LssError(f"unknown inverse mode {mode!r}; choose from {', '.join(MODES)}")
    return mode


# --------------------------------------------------------------------------
# covariances


def _check_pair(x: Tensor, y: Tensor) -> int:
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise LssError(f"expected (N, n) and (N, m) features, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < 2:
        raise LssError(f"need at least 2 pairs to estimate covariances, got {x.shape[0]}")
    return x.shape[0]


def covariances(x: Tensor, y: Tensor, remove_mean: bool = True) -> Covariances:
    r"""Instantaneous and time-lagged covariance matrices.

    Parameters
    ----------
    x, y
        ``(N, n)`` and ``(N, m)``: features of the earlier and later frames of N pairs.
    remove_mean
        ``True``: mean-free covariances :math:`\bar X^\top \bar Y / (N-1)`
        (each of ``x``, ``y`` about its own mean).  ``False``: raw second
        moments :math:`X^\top Y / N`.

    Returns
    -------
    c00, c01, c11
        ``(n, n)``, ``(n, m)``, ``(m, m)`` in the dtype of the inputs.
    """
    n = _check_pair(x, y)
    # one (n + m) x (n + m) product instead of three small ones (fewer kernel
    # launches forward and backward, which dominate at these sizes)
    z = torch.cat((x, y), dim=1)
    if remove_mean:
        z = z - z.mean(dim=0, keepdim=True)
        norm = 1.0 / (n - 1)
    else:
        norm = 1.0 / n
    c = (z.transpose(0, 1) @ z) * norm
    d = x.shape[1]
    return c[:d, :d], c[:d, d:], c[d:, d:]


def symmetrized_covariances(x: Tensor, y: Tensor, remove_mean: bool = True) -> Tuple[Tensor, Tensor]:
    r"""Covariances of the pairs taken in both directions (reversible estimate).

    .. math::

        C_{00}^s = \tfrac12 (C_{00} + C_{11}),\qquad C_{01}^s = \tfrac12 (C_{01} + C_{01}^\top),

    where the covariances are taken about the pooled mean
    :math:`\mu = \tfrac12(\mu_X + \mu_Y)` (the mean of the 2N frames) with
    normalisation :math:`1/(N-1)`; ``remove_mean=False`` uses raw moments
    with :math:`1/N`.

    Parameters
    ----------
    x, y
        ``(N, n)`` features of the earlier and later frames.

    Returns
    -------
    c00s, c01s
        Symmetric ``(n, n)`` matrices.
    """
    n = _check_pair(x, y)
    if x.shape[1] != y.shape[1]:
        raise LssError(f"reversible covariances need the same features for x and y, got {x.shape[1]} and {y.shape[1]}")
    if remove_mean:
        mu = 0.5 * (x.mean(dim=0, keepdim=True) + y.mean(dim=0, keepdim=True))
        x, y = x - mu, y - mu
        norm = 0.5 / (n - 1)
    else:
        norm = 0.5 / n
    xt, yt = x.transpose(0, 1), y.transpose(0, 1)
    c01 = xt @ y
    return norm * (xt @ x + yt @ y), norm * (c01 + c01.transpose(0, 1))


# --------------------------------------------------------------------------
# robust inverses


def sym_eig(mat: Tensor, epsilon: float = 1e-6, mode: str = "regularize") -> Tuple[Tensor, Tensor, Tensor]:
    r"""Symmetric eigendecomposition made safe for inverting, batched over leading axes.

    Parameters
    ----------
    mat
        ``(..., n, n)`` symmetric positive semi-definite matrices.
    epsilon
        Truncation threshold or regularisation constant.
    mode
        ``"trunc"``: eigenvalues :math:`\lambda \le \epsilon` are marked
        invalid; ``"regularize"``: :math:`\lambda \to |\lambda| + \epsilon`.

    Returns
    -------
    eigval, eigvec, valid
        ``(..., n)`` eigenvalues (ascending; invalid ones replaced by 1 so that
        functions of them stay finite), ``(..., n, n)`` eigenvectors as columns,
        and a boolean ``(..., n)`` mask of the eigenpairs to keep.
    """
    check_mode(mode)
    eigval, eigvec = torch.linalg.eigh(mat)
    if mode == "regularize":
        eigval = eigval.abs() + epsilon
        valid = torch.ones_like(eigval, dtype=torch.bool)
    else:
        valid = eigval > epsilon
        # the where() keeps gradients finite: no 1/sqrt of a tiny eigenvalue is ever formed
        eigval = torch.where(valid, eigval, torch.ones_like(eigval))
    return eigval, eigvec, valid


def _sym_power(mat: Tensor, power: float, epsilon: float, mode: str) -> Tensor:
    eigval, eigvec, valid = sym_eig(mat, epsilon, mode)
    diag = eigval.pow(power)
    if mode == "trunc":
        diag = torch.where(valid, diag, torch.zeros_like(diag))
    return (eigvec * diag.unsqueeze(-2)) @ eigvec.transpose(-1, -2)


def sym_inverse(mat: Tensor, epsilon: float = 1e-6, mode: str = "regularize") -> Tensor:
    r"""Robust inverse :math:`V \Lambda_\epsilon^{-1} V^\top` of symmetric PSD matrices (see :func:`sym_eig`)."""
    return _sym_power(mat, -1.0, epsilon, mode)


def sym_inverse_sqrt(mat: Tensor, epsilon: float = 1e-6, mode: str = "regularize") -> Tensor:
    r"""Robust inverse square root :math:`V \Lambda_\epsilon^{-1/2} V^\top` of symmetric PSD
    matrices ``(..., n, n)``; with ``mode="trunc"`` a pseudo-inverse square root."""
    return _sym_power(mat, -0.5, epsilon, mode)


def _inverse_sqrts(c00: Tensor, c11: Tensor, epsilon: float, mode: str) -> Tuple[Tensor, Tensor]:
    if c00.shape == c11.shape:  # one batched eigh call instead of two
        both = sym_inverse_sqrt(torch.stack((c00, c11)), epsilon, mode)
        return both[0], both[1]
    return sym_inverse_sqrt(c00, epsilon, mode), sym_inverse_sqrt(c11, epsilon, mode)


# --------------------------------------------------------------------------
# Koopman matrix and scores


def _half_weighted(c00: Tensor, c01: Tensor, c11: Tensor, epsilon: float, mode: str) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The one half-weighted Koopman solve :math:`M = C_{00}^{-1/2} C_{01} C_{11}^{-1/2}`.

    Returns ``(M, C00^{-1/2}, C11^{-1/2})``; :func:`koopman_matrix` is
    :math:`M^\top`, the VAMP scores are norms of :math:`M` and VAMP-E uses its SVD.
    """
    c00_isqrt, c11_isqrt = _inverse_sqrts(c00, c11, epsilon, mode)
    return c00_isqrt @ c01 @ c11_isqrt, c00_isqrt, c11_isqrt


def koopman_matrix(
    x: Optional[Tensor] = None,
    y: Optional[Tensor] = None,
    epsilon: float = 1e-6,
    mode: str = "trunc",
    covs: Optional[Covariances] = None,
) -> Tensor:
    r"""Half-weighted Koopman matrix :math:`K = (C_{00}^{-1/2} C_{01} C_{11}^{-1/2})^\top`.

    Same convention (including the transpose) as deeptime's
    ``deeptime.decomposition.deep.koopman_matrix``.

    Parameters
    ----------
    x, y
        ``(N, n)``, ``(N, m)`` features (mean-free covariances are estimated).
    epsilon, mode
        Of the inverse square roots (:func:`sym_eig`).
    covs
        ``(c00, c01, c11)`` instead of ``x`` and ``y``.

    Returns
    -------
    K
        ``(m, n)``.
    """
    c00, c01, c11 = covs if covs is not None else covariances(x, y, remove_mean=True)
    return _half_weighted(c00, c01, c11, epsilon, mode)[0].transpose(0, 1)


def vamp_score_from_covariances(
    c00: Tensor,
    c01: Tensor,
    c11: Tensor,
    method: str = "VAMP2",
    epsilon: float = 1e-6,
    mode: str = "trunc",
    test: Optional[Covariances] = None,
) -> Tensor:
    r"""VAMP score of mean-free covariances (including the +1 of the constant function).

    * ``"VAMP1"``: :math:`1 + \|K\|_*` (nuclear norm: sum of singular values);
    * ``"VAMP2"``: :math:`1 + \|K\|_F^2` (sum of squared singular values);
    * ``"VAMPE"``: with the SVD :math:`C_{00}^{-1/2} C_{01} C_{11}^{-1/2} = U S V^\top`
      (singular values :math:`\le \epsilon` dropped), :math:`U' = C_{00}^{-1/2} U`,
      :math:`V' = C_{11}^{-1/2} V`, and the covariances :math:`C^t` of ``test``
      (default: the same ones),

      .. math:: 1 + \operatorname{tr}\left(2 S U'^\top C^t_{01} V' - S U'^\top C^t_{00} U' S V'^\top C^t_{11} V'\right).

      On the data the model was estimated from this equals VAMP2 (up to the
      truncation); it differs from VAMP2 when scored on other data.

    Parameters
    ----------
    c00, c01, c11
        Mean-free covariances (:func:`covariances`).
    method
        ``"VAMP1"``, ``"VAMP2"`` or ``"VAMPE"``.
    epsilon, mode
        Of the inverse square roots (:func:`sym_eig`).
    test
        VAMP-E only: covariances of held-out data to score the model on.

    Returns
    -------
    score
        0-dim tensor.
    """
    method = check_method(method)
    m, c00_isqrt, c11_isqrt = _half_weighted(c00, c01, c11, epsilon, mode)
    if method == "VAMP2":
        return 1 + m.pow(2).sum()
    if method == "VAMP1":
        return 1 + torch.linalg.matrix_norm(m, ord="nuc")
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    keep = s > epsilon
    u, s, v = u[:, keep], s[keep], vh[keep].transpose(0, 1)
    u, v = c00_isqrt @ u, c11_isqrt @ v
    t00, t01, t11 = test if test is not None else (c00, c01, c11)
    a = s.unsqueeze(1) * (u.transpose(0, 1) @ t01 @ v)  # S U'^T C01 V'
    b = s.unsqueeze(1) * (u.transpose(0, 1) @ t00 @ u)  # S U'^T C00 U'
    c = s.unsqueeze(1) * (v.transpose(0, 1) @ t11 @ v)  # S V'^T C11 V'
    return 1 + 2 * torch.trace(a) - (b * c.transpose(0, 1)).sum()


def vamp_score(
    x: Tensor, y: Tensor, method: str = "VAMP2", epsilon: float = 1e-6, mode: str = "trunc"
) -> Tensor:
    r"""VAMP score of features ``x`` ``(N, n)`` and time-lagged features ``y`` ``(N, m)``.

    Mean-free covariances (:func:`covariances`), then
    :func:`vamp_score_from_covariances`; matches deeptime's
    ``deeptime.decomposition.deep.vamp_score`` for VAMP1 and VAMP2.
    """
    return vamp_score_from_covariances(*covariances(x, y, remove_mean=True), method, epsilon, mode)


def vampnet_loss(
    x: Tensor, y: Tensor, method: str = "VAMP2", epsilon: float = 1e-6, mode: str = "regularize"
) -> Tensor:
    r"""The VAMPnet loss :math:`-\mathrm{score}` (:func:`vamp_score`)."""
    return -vamp_score(x, y, method, epsilon, mode)


def _reversible_matrix(c00s: Tensor, c01s: Tensor, epsilon: float, mode: str) -> Tensor:
    isqrt = sym_inverse_sqrt(c00s, epsilon, mode)
    return isqrt @ c01s @ isqrt


def reversible_vamp_score_from_covariances(
    c00s: Tensor, c01s: Tensor, method: str = "VAMP2", epsilon: float = 1e-6, mode: str = "regularize"
) -> Tensor:
    r"""Reversible VAMP score :math:`1 + \sum_i |\lambda_i|^r` of symmetrised covariances.

    :math:`\lambda_i` are the eigenvalues of :math:`M = (C^s_{00})^{-1/2} C^s_{01}
    (C^s_{00})^{-1/2}`; for ``"VAMP2"`` the sum is computed as
    :math:`\|M\|_F^2` (equal because :math:`M` is symmetric, and with gradients
    that stay finite at degenerate eigenvalues); ``"VAMP1"`` uses
    :math:`\sum_i|\lambda_i|` from ``eigvalsh``.
    """
    method = check_method(method, ("VAMP1", "VAMP2"))
    m = _reversible_matrix(c00s, c01s, epsilon, mode)
    if method == "VAMP2":
        return 1 + m.pow(2).sum()
    return 1 + torch.linalg.eigvalsh(0.5 * (m + m.transpose(0, 1))).abs().sum()


def reversible_vamp_score(
    x: Tensor, y: Tensor, method: str = "VAMP2", epsilon: float = 1e-6, mode: str = "regularize"
) -> Tensor:
    r"""Reversible VAMP score of features ``x``, ``y`` ``(N, n)``: :func:`symmetrized_covariances`
    then :func:`reversible_vamp_score_from_covariances`.  The SRV loss is its negative."""
    c00s, c01s = symmetrized_covariances(x, y, remove_mean=True)
    return reversible_vamp_score_from_covariances(c00s, c01s, method, epsilon, mode)


def reversible_eigenvalues(
    x: Tensor, y: Tensor, epsilon: float = 1e-6, mode: str = "regularize"
) -> Tensor:
    r"""Eigenvalues of :math:`(C^s_{00})^{-1/2} C^s_{01} (C^s_{00})^{-1/2}`, descending."""
    c00s, c01s = symmetrized_covariances(x, y, remove_mean=True)
    m = _reversible_matrix(c00s, c01s, epsilon, mode)
    return torch.linalg.eigvalsh(0.5 * (m + m.transpose(0, 1))).flip(0)


# --------------------------------------------------------------------------
# float64 model estimates from accumulated moments (analysis, not training)


def _as_f64(a: "Tensor | np.ndarray") -> Tensor:
    return torch.as_tensor(a).detach().to(torch.float64)


def _pinv_sym(mat: Tensor, rcond: float) -> Tensor:
    r"""Pseudo-inverse :math:`V_+ \Lambda_+^{-1} V_+^\top` of a symmetric PSD matrix,
    dropping eigenvalues :math:`\le` ``rcond`` :math:`\times \lambda_{\max}`."""
    w, v = torch.linalg.eigh(0.5 * (mat + mat.transpose(0, 1)))
    keep = w > rcond * max(float(w.max()), 0.0) if w.numel() else w > 0
    vk = v[:, keep]
    return (vk / w[keep]) @ vk.transpose(0, 1)


def koopman_from_moments(c00: "Tensor | np.ndarray", c0t: "Tensor | np.ndarray", rcond: float = 1e-10) -> np.ndarray:
    r"""The one non-mean-free Koopman solve :math:`K = C_{00}^{+} C_{0\tau}` in float64.

    With :math:`C_{00} = \frac1N\sum\chi_0\chi_0^\top` and
    :math:`C_{0\tau} = \frac1N\sum\chi_0\chi_1^\top` (memberships or features,
    not mean-free; VAMPnets, Mardt et al. 2018, Eq. 5), :math:`C_{00}^{+}` is
    the pseudo-inverse of :func:`_pinv_sym` (eigenvalues at or below
    ``rcond`` times the largest dropped), i.e. the minimum-norm least-squares
    solution of :math:`C_{00} K = C_{0\tau}`; for a well-conditioned
    :math:`C_{00}` it is :math:`C_{00}^{-1} C_{0\tau}`.  Used by the VAMPNet's
    fuzzy MSM and by :func:`lss_engine.kinetics.koopman_from_features`.

    Returns
    -------
    numpy.ndarray
        ``(n, m)`` float64.
    """
    c00, c0t = _as_f64(c00), _as_f64(c0t)
    if c00.ndim != 2 or c00.shape[0] != c00.shape[1] or c0t.ndim != 2 or c0t.shape[0] != c00.shape[0]:
        raise LssError(f"expected (n, n) and (n, m) moments, got {tuple(c00.shape)} and {tuple(c0t.shape)}")
    return (_pinv_sym(c00, rcond) @ c0t).cpu().numpy()


def reversible_eigh(c00s: "Tensor | np.ndarray", c01s: "Tensor | np.ndarray", rcond: float = 1e-12) -> Tuple[np.ndarray, np.ndarray]:
    r"""The one reversible solve: :math:`C^s_{01} v = \lambda C^s_{00} v` with :math:`V^\top C^s_{00} V = I`, float64.

    With the Cholesky factor :math:`C^s_{00} = L L^\top`, the eigenpairs
    :math:`(\lambda_i, q_i)` of the symmetric :math:`L^{-1} C^s_{01} L^{-\top}`
    give :math:`v_i = L^{-\top} q_i` (what ``scipy.linalg.eigh(c01s, c00s)``
    computes).  If :math:`C^s_{00}` is not positive definite (linearly
    dependent features; also when that route gives a non-finite or an absurd,
    :math:`|\lambda| \ge 10^6`, eigenvalue of a nearly singular one) the problem is solved in its range (eigenvalues above
    ``rcond`` times the largest), :math:`W = U_+ S_+^{-1/2}`,
    :math:`W^\top C^s_{01} W q = \lambda q`, :math:`v = W q`; the missing
    components are zero vectors with eigenvalue 0.  This is the float64,
    whole-data counterpart of :func:`reversible_eigenvalues`.

    Returns
    -------
    eigenvalues, vectors
        ``(n,)`` ascending and ``(n, n)`` (eigenvectors as columns), numpy.

    Raises
    ------
    LssError
        :math:`C^s_{00} = 0` (constant features).
    """
    c00s, c01s = _as_f64(c00s), _as_f64(c01s)
    c00s = 0.5 * (c00s + c00s.transpose(0, 1))
    c01s = 0.5 * (c01s + c01s.transpose(0, 1))
    chol, info = torch.linalg.cholesky_ex(c00s)
    if int(info) == 0:
        m = torch.linalg.solve_triangular(chol, c01s, upper=False)
        m = torch.linalg.solve_triangular(chol, m.transpose(0, 1), upper=False)
        lam, q = torch.linalg.eigh(0.5 * (m + m.transpose(0, 1)))
        if bool(torch.isfinite(lam).all()) and float(lam.abs().max()) < 1e6:
            vectors = torch.linalg.solve_triangular(chol.transpose(0, 1), q, upper=True)
            return lam.cpu().numpy(), vectors.cpu().numpy()
    s, u = torch.linalg.eigh(c00s)
    keep = s > rcond * max(float(s.max()), 0.0)
    if not bool(keep.any()):
        raise LssError("the features are constant over the data; cannot solve the reversible eigenproblem")
    w = u[:, keep] / s[keep].sqrt()
    m = w.transpose(0, 1) @ c01s @ w
    lam, q = torch.linalg.eigh(0.5 * (m + m.transpose(0, 1)))
    n, k = c00s.shape[0], int(keep.sum())
    vectors = torch.zeros((n, n), dtype=torch.float64, device=c00s.device)
    vectors[:, :k] = w @ q
    values = torch.cat([lam, torch.zeros(n - k, dtype=torch.float64, device=lam.device)])
    return values.cpu().numpy(), vectors.cpu().numpy()


# --------------------------------------------------------------------------
# streaming estimates over a whole data set


class CovarianceAccumulator:
    r"""Covariances of many pairs accumulated chunk by chunk in float64.

    Keeps counts, means and centred co-moments
    :math:`M_{XY} = \sum (x - \mu_X)(y - \mu_Y)^\top` and merges chunks with
    Chan et al.'s pairwise update

    .. math:: M_{XY} = M^a_{XY} + M^b_{XY} + \frac{n_a n_b}{n_a + n_b}
              (\mu^b_X - \mu^a_X)(\mu^b_Y - \mu^a_Y)^\top ,

    which is exact and avoids the cancellation of raw sums.  The result is the
    same as :func:`covariances` on all pairs at once; use it where the data do
    not fit one batch (validation scores, Koopman models).

    Parameters
    ----------
    device
        Where the (small) statistics live.
    """

    def __init__(self, device: "str | torch.device" = "cpu"):
        self.device = torch.device(device)
        self.n = 0
        self._mx: Tensor | None = None
        self._my: Tensor | None = None
        self._mxx: Tensor | None = None
        self._mxy: Tensor | None = None
        self._myy: Tensor | None = None

    def update(self, x: Tensor, y: Tensor) -> "CovarianceAccumulator":
        """Add pairs ``x`` ``(n_b, n)``, ``y`` ``(n_b, m)`` (any float dtype; summed in float64)."""
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
            raise LssError(f"expected (N, n) and (N, m) features, got {tuple(x.shape)} and {tuple(y.shape)}")
        nb = x.shape[0]
        if nb == 0:
            return self
        x = x.detach().to(self.device, torch.float64)
        y = y.detach().to(self.device, torch.float64)
        mxb, myb = x.mean(0), y.mean(0)
        xc, yc = x - mxb, y - myb
        xct = xc.transpose(0, 1)
        mxx, mxy, myy = xct @ xc, xct @ yc, yc.transpose(0, 1) @ yc
        if self.n == 0:
            self._mx, self._my, self._mxx, self._mxy, self._myy = mxb, myb, mxx, mxy, myy
            self.n = nb
            return self
        if x.shape[1] != self._mx.shape[0] or y.shape[1] != self._my.shape[0]:
            raise LssError("the chunks have different numbers of features")
        n = self.n + nb
        dx, dy = mxb - self._mx, myb - self._my
        w = self.n * nb / n
        self._mxx = self._mxx + mxx + w * torch.outer(dx, dx)
        self._mxy = self._mxy + mxy + w * torch.outer(dx, dy)
        self._myy = self._myy + myy + w * torch.outer(dy, dy)
        self._mx = self._mx + dx * (nb / n)
        self._my = self._my + dy * (nb / n)
        self.n = n
        return self

    def _check(self, minimum: int = 2) -> None:
        if self.n < minimum:
            raise LssError(f"need at least {minimum} pairs to estimate covariances, got {self.n}")

    @property
    def means(self) -> Tuple[Tensor, Tensor]:
        """Means of ``x`` and ``y``."""
        self._check(1)
        return self._mx, self._my

    def covariances(self, remove_mean: bool = True) -> Covariances:
        """``(c00, c01, c11)`` as :func:`covariances` of all pairs (float64)."""
        if remove_mean:
            self._check(2)
            norm = 1.0 / (self.n - 1)
            return norm * self._mxx, norm * self._mxy, norm * self._myy
        self._check(1)
        norm = 1.0 / self.n
        mx, my = self._mx, self._my
        return (
            norm * self._mxx + torch.outer(mx, mx),
            norm * self._mxy + torch.outer(mx, my),
            norm * self._myy + torch.outer(my, my),
        )

    def symmetrized(self, remove_mean: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
        """``(c00s, c01s, mean)`` as :func:`symmetrized_covariances` of all pairs, with the pooled mean."""
        self._check(2)
        if self._mx.shape != self._my.shape:
            raise LssError("reversible covariances need the same features for x and y")
        mx, my = self._mx, self._my
        if not remove_mean:
            c00, c01, c11 = self.covariances(remove_mean=False)
            return 0.5 * (c00 + c11), 0.5 * (c01 + c01.transpose(0, 1)), torch.zeros_like(mx)
        mu = 0.5 * (mx + my)
        dx, dy = mx - mu, my - mu
        n = self.n
        # sum (x - mu)(y - mu)^T = M_xy + n (mx - mu)(my - mu)^T, etc.
        sxx = self._mxx + n * torch.outer(dx, dx)
        syy = self._myy + n * torch.outer(dy, dy)
        sxy = self._mxy + n * torch.outer(dx, dy)
        norm = 0.5 / (n - 1)
        return norm * (sxx + syy), norm * (sxy + sxy.transpose(0, 1)), mu
