"""Molecule features read from a trained model, with no further training (docs/method.md).

``latent``: the posterior mean mu, flattened (K x D values), as MolMIM serves it.
``informative``: the decoder run teacher-forced on the molecule's own tokens with z = mu; its
hidden states (last layer, or the mean of all layers) pooled over the real tokens (mean, or
mean and max), optionally after mu.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import CMIMModel

__all__ = ["EmbeddingSpec"]

# The values of CMIMTransformer's ``embedding``, ``informative_layers`` and
# ``informative_pooling``; its ``_parameter_constraints`` check them before a spec is built.
KINDS, LAYERS, POOLINGS = ("latent", "informative"), ("last", "mean"), ("mean", "mean_max")


@dataclass(frozen=True)
class EmbeddingSpec:
    kind: str = "informative"
    layers: str = "last"
    pooling: str = "mean_max"
    with_latent: bool = True

    def feature_names(self, n_latent: int, d_model: int) -> list[str]:
        names = [f"latent{i}" for i in range(n_latent)]
        if self.kind == "latent":
            return names
        pooled = [f"decoder_mean{i}" for i in range(d_model)]
        if self.pooling == "mean_max":
            pooled += [f"decoder_max{i}" for i in range(d_model)]
        return names + pooled if self.with_latent else pooled

    @torch.no_grad()
    def __call__(self, model: CMIMModel, ids: torch.Tensor) -> torch.Tensor:
        """Features (B, n_features) for padded ids (B, T) of ``<bos> tokens <eos>``."""
        mu, _ = model.encode(ids)
        latent = mu.flatten(1).float()
        if self.kind == "latent":
            return latent
        states = model.decoder_states(ids[:, :-1], mu, all_layers=self.layers == "mean")
        if self.layers == "mean":
            states = torch.stack(states).mean(0)
        states = states.float()
        real = (ids[:, 1:] != 0).unsqueeze(-1)  # inputs <bos>..last token: those with a target
        parts = [latent] if self.with_latent else []
        parts.append((states * real).sum(1) / real.sum(1))
        if self.pooling == "mean_max":
            parts.append(states.masked_fill(~real, float("-inf")).amax(1))
        return torch.cat(parts, dim=1)
