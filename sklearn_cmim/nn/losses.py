"""The cMIM objective (docs/method.md): ``L = L_rec + w(step) * L_mim + contrastive_weight * L_con``.

Each term is computed per molecule and averaged over the batch. The latent log-densities are
*averaged* over the K x D latent dimensions (as MolMIM does), which keeps ``L_mim`` on the scale
of the per-token reconstruction loss whatever the latent size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import TrainSettings

__all__ = ["contrastive_loss", "mim_loss", "mim_weight", "reconstruction_loss", "total_loss"]

LOG_2PI = math.log(2 * math.pi)


def reconstruction_loss(logits, targets, pad_id: int = 0):
    """Per-molecule mean token NLL over real tokens (incl. <eos>), then the batch mean."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    real = (targets != pad_id).float()
    return ((nll * real).sum(1) / real.sum(1)).mean()


def mim_loss(z, mu, logvar):
    """A-MIM latent terms ``-1/2 [log q(z|x) + log N(z; 0, I)]`` at the sampled z."""
    z, mu, logvar = z.float().flatten(1), mu.float().flatten(1), logvar.float().flatten(1)
    log_q = -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar))
    log_prior = -0.5 * (LOG_2PI + z**2)
    return (-0.5 * (log_q + log_prior)).mean(1).mean()


def contrastive_loss(z, temperature: float = 0.1, negatives=None, offset: int = 0, positive=None):
    """Augmentation-free contrastive term ``-log p(k=1 | z_i, x_i)``, batch mean.

    Parameters
    ----------
    z : tensor (B, ...)
        This process's latent samples; flattened per molecule.
    temperature : float
        tau in ``exp(s / tau)``.
    negatives : tensor (N, ...), optional
        Every code in the global batch (z gathered from all ranks under DDP); defaults to ``z``.
        Row ``offset + i`` of it is molecule i itself and is left out of its negatives.
    offset : int
        Where this process's rows start inside ``negatives``.
    positive : tensor (B, ...), optional
        The "mean" variant: the positive similarity is ``cos(z_i, positive_i)`` (pass mu) instead
        of ``cos(z_i, z_i) = 1``.
    """
    negatives = z if negatives is None else negatives
    n = negatives.shape[0]
    if n < 2:
        return z.sum() * 0.0  # no negatives: the term is 0 (keeps the graph for DDP)
    z_hat = F.normalize(z.float().flatten(1), dim=1)
    all_hat = F.normalize(negatives.float().flatten(1), dim=1)
    scores = z_hat @ all_hat.T / temperature
    own = torch.arange(z.shape[0], device=z.device) + offset
    scores = scores.masked_fill(F.one_hot(own, n).bool(), float("-inf"))
    # log( (1/(N-1)) * sum_{j != i} e^{s_ij / tau} ): negatives averaged, not summed.
    negative_term = torch.logsumexp(scores, dim=1) - math.log(n - 1)
    if positive is None:
        positive_term = torch.full_like(negative_term, 1.0 / temperature)
    else:
        positive_term = (z_hat * F.normalize(positive.float().flatten(1), dim=1)).sum(1) / temperature
    log_p = positive_term - torch.logaddexp(positive_term, negative_term)
    return -log_p.mean()


def mim_weight(step: int, warmup_steps: int) -> float:
    """``w(step)``: linear ramp 0 -> 1 over the first ``warmup_steps`` optimiser steps."""
    return 1.0 if warmup_steps <= 0 else min(1.0, step / warmup_steps)


def total_loss(model_out, targets, settings: TrainSettings, *, step, negatives=None, offset=0):
    """All terms of one training step under ``settings`` (the weights, the temperature and the
    contrastive positive); returns a dict with ``total``, ``rec``, ``mim``, ``con``."""
    z, mu, logvar, logits = model_out
    rec = reconstruction_loss(logits, targets)
    mim = mim_loss(z, mu, logvar)
    con = contrastive_loss(
        z, settings.temperature, negatives=negatives, offset=offset,
        positive=mu if settings.contrastive_positive == "mean" else None,
    )
    total = rec + mim_weight(step, settings.mim_warmup_steps) * mim
    if settings.contrastive_weight:
        total = total + settings.contrastive_weight * con
    return {"total": total, "rec": rec, "mim": mim, "con": con}
