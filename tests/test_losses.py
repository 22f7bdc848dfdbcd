"""Each loss term against values worked out by hand (docs/method.md, Loss)."""

import math
from dataclasses import replace

import pytest
import torch

from sklearn_cmim.config import TrainSettings
from sklearn_cmim.nn.losses import (
    contrastive_loss,
    mim_loss,
    mim_weight,
    reconstruction_loss,
    total_loss,
)

TAU = 0.1


def test_reconstruction_is_mean_over_real_tokens_then_over_molecules():
    # Two molecules: 2 real targets then padding; 1 real target then padding. Vocabulary of 3.
    probs = torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]],
                          [[0.2, 0.2, 0.6], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05]]])
    targets = torch.tensor([[1, 1, 0], [2, 0, 0]])
    expected = ((-math.log(0.25) - math.log(0.8)) / 2 + -math.log(0.6)) / 2
    assert reconstruction_loss(probs.log(), targets).item() == pytest.approx(expected, rel=1e-5)


def test_mim_loss_by_hand_for_one_dimension():
    z, mu, logvar = torch.tensor([[0.5]]), torch.tensor([[0.3]]), torch.tensor([[-1.0]])
    log_q = -0.5 * (math.log(2 * math.pi) - 1.0 + 0.2**2 * math.exp(1.0))
    log_prior = -0.5 * (math.log(2 * math.pi) + 0.25)
    assert mim_loss(z, mu, logvar).item() == pytest.approx(-0.5 * (log_q + log_prior), rel=1e-6)


def test_mim_loss_averages_over_latent_dimensions():
    z = torch.tensor([[0.5, 0.5]])
    mu = torch.tensor([[0.3, 0.3]])
    logvar = torch.tensor([[-1.0, -1.0]])
    one = mim_loss(z[:, :1], mu[:, :1], logvar[:, :1])
    assert mim_loss(z, mu, logvar).item() == pytest.approx(one.item(), rel=1e-6)


def test_contrastive_for_two_molecules_by_hand():
    z = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    s = 1 / math.sqrt(2)
    # log p = 1/tau - log(e^{1/tau} + e^{s/tau}) with B - 1 = 1 negative, for both molecules.
    expected = -(1 / TAU - math.log(math.exp(1 / TAU) + math.exp(s / TAU)))
    assert contrastive_loss(z, TAU).item() == pytest.approx(expected, rel=1e-5)


def test_contrastive_is_zero_for_a_single_molecule():
    assert contrastive_loss(torch.randn(1, 1, 8), TAU).item() == 0.0


def equal_similarity_batch(batch_size: int, shift: float = 0.5) -> torch.Tensor:
    """Codes e_i + shift * 1: every pair has the same cosine similarity."""
    return torch.eye(batch_size, 16)[:, :16] + shift


def test_contrastive_does_not_grow_with_batch_when_similarities_are_equal():
    values = [contrastive_loss(equal_similarity_batch(b), TAU).item() for b in (2, 4, 8, 16)]
    assert max(values) - min(values) < 1e-5
    assert values[0] > 1e-4  # and it is not trivially zero


def test_contrastive_pushes_close_codes_apart():
    close = torch.tensor([[1.0, 0.0], [0.99, 0.1]])
    far = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert contrastive_loss(close, TAU) > contrastive_loss(far, TAU)


def test_contrastive_with_gathered_negatives_matches_the_single_process_value():
    z = torch.randn(6, 1, 4)
    whole = contrastive_loss(z, TAU)
    halves = [contrastive_loss(z[i:i + 3], TAU, negatives=z, offset=i) for i in (0, 3)]
    assert torch.stack(halves).mean().item() == pytest.approx(whole.item(), rel=1e-5)


def test_contrastive_mean_positive_equals_self_when_sample_is_the_mean():
    # Seeded: with the global generator the codes depend on the tests run before. cos(z, z) is 1
    # to float32 rounding, scaled by 1/tau, so the two agree to an absolute 1e-6, not relatively.
    generator = torch.Generator().manual_seed(0)
    z, other = (torch.randn(5, 1, 4, generator=generator) for _ in range(2))
    assert contrastive_loss(z, TAU, positive=z).item() == pytest.approx(
        contrastive_loss(z, TAU).item(), rel=0, abs=1e-6)
    assert contrastive_loss(z, TAU, positive=other) > contrastive_loss(z, TAU)


def test_mim_weight_ramps_linearly():
    assert [mim_weight(s, 4) for s in (0, 2, 4, 10)] == [0.0, 0.5, 1.0, 1.0]
    assert mim_weight(0, 0) == 1.0


def test_zero_contrastive_weight_is_exactly_a_mim():
    torch.manual_seed(0)
    z, mu, logvar = torch.randn(4, 1, 3), torch.randn(4, 1, 3), torch.full((4, 1, 3), -2.0)
    logits, targets = torch.randn(4, 5, 7), torch.randint(1, 7, (4, 5))
    mim_only = TrainSettings(mim_warmup_steps=10, contrastive_weight=0.0, temperature=TAU)
    terms = total_loss((z, mu, logvar, logits), targets, mim_only, step=5)
    assert terms["con"].item() > 0  # computed and logged ...
    expected = reconstruction_loss(logits, targets) + 0.5 * mim_loss(z, mu, logvar)
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-6)  # ... but not added
    with_con = total_loss((z, mu, logvar, logits), targets, replace(mim_only, contrastive_weight=2.0), step=5)
    assert with_con["total"].item() == pytest.approx(expected.item() + 2 * terms["con"].item(), rel=1e-6)
