"""A trained model's two directions in batches: token sequences to embeddings, latent codes to SMILES.

What :class:`~sklearn_cmim.CMIMTransformer` runs behind ``transform``, ``inverse_transform``,
``sample`` and ``score``. Batches are made in a fixed order (by length), so that the same
molecules give the same batches, and ``None`` entries (bad molecules) are left out of them.
"""

from __future__ import annotations

import numpy as np
import torch

from ..chem.batching import pad, sorted_batches
from ..chem.tokenizer import Vocabulary
from .device import autocast
from .embeddings import EmbeddingSpec
from .model import CMIMModel
from .sampling import LatentPrior

__all__ = ["decode_latents", "embed_sequences", "fit_latent_prior"]

# The most molecules a latent prior is fitted to: a few hundred means and spreads are well
# estimated from far fewer, and the encoder pass over them stays small beside training.
PRIOR_MOLECULES = 10_000


def embed_sequences(model: CMIMModel, sequences: list[list[int] | None], spec: EmbeddingSpec,
                    n_features: int, batch_size: int, device: torch.device, precision: str) -> np.ndarray:
    """``spec``'s embedding of each token id sequence; a NaN row for each ``None``.

    Parameters
    ----------
    model : CMIMModel
        On ``device``.
    sequences : list of (list of int or None)
        ``<bos> tokens <eos>`` ids per molecule, ``None`` for a bad one.
    spec : EmbeddingSpec
    n_features : int
        The width of ``spec``'s embedding for ``model``.
    batch_size : int
        Sequences per forward pass.
    device : torch.device
    precision : {"bf16", "fp32"}
        "bf16" runs the passes under bf16 autocast.

    Returns
    -------
    embeddings : ndarray of shape (len(sequences), n_features), float32
    """
    out = np.full((len(sequences), n_features), np.nan, dtype=np.float32)
    rows = [i for i, s in enumerate(sequences) if s is not None]
    lengths = [len(sequences[i]) for i in rows]
    with torch.inference_mode(), autocast(device, precision):
        for batch in sorted_batches(lengths, batch_size):
            index = [rows[j] for j in batch]
            ids = pad([sequences[i] for i in index]).to(device)
            out[index] = spec(model, ids).cpu().numpy()
    return out


def fit_latent_prior(model: CMIMModel, sequences: list[list[int]], batch_size: int, device: torch.device,
                     precision: str, rng: np.random.Generator) -> LatentPrior | None:
    """The :class:`LatentPrior` of ``model`` fitted to the latent means of (at most
    ``PRIOR_MOLECULES``, drawn with ``rng``, of) ``sequences``; ``None`` for fewer than two."""
    if len(sequences) < 2:
        return None
    if len(sequences) > PRIOR_MOLECULES:
        chosen = np.sort(rng.choice(len(sequences), PRIOR_MOLECULES, replace=False))
        sequences = [sequences[i] for i in chosen]
    config = model.config
    latents = embed_sequences(model.eval(), sequences, EmbeddingSpec("latent"),
                              config.n_latents * config.latent_dim, batch_size, device, precision)
    return LatentPrior.fit(latents)


def decode_latents(model: CMIMModel, vocabulary: Vocabulary, Z: np.ndarray, skip: np.ndarray,
                   batch_size: int, device: torch.device, precision: str) -> np.ndarray:
    """Greedy decodings of latent codes to SMILES; ``None`` where ``skip`` is true.

    Parameters
    ----------
    model : CMIMModel
        On ``device``.
    vocabulary : Vocabulary
        The vocabulary ``model`` was trained with.
    Z : ndarray of shape (n, K x D), float32
        Flattened latent codes; the rows that ``skip`` marks are not read.
    skip : ndarray of shape (n,), bool
    batch_size : int
        Codes decoded together.
    device : torch.device
    precision : {"bf16", "fp32"}
        "bf16" decodes under bf16 autocast.

    Returns
    -------
    smiles : ndarray of str (object), shape (n,)
        A decoded string may be an invalid SMILES; ``None`` for the skipped rows and for a
        decoding that did not finish (see :meth:`Vocabulary.decode`).
    """
    config = model.config
    out = np.full(len(Z), None, dtype=object)
    rows = np.flatnonzero(~skip)
    z = torch.from_numpy(Z[rows]).view(-1, config.n_latents, config.latent_dim)
    with torch.inference_mode(), autocast(device, precision):
        for start in range(0, len(rows), batch_size):
            ids = model.generate(z[start:start + batch_size].to(device), vocabulary.bos_id,
                                 vocabulary.eos_id)
            for row, seq in zip(rows[start:start + batch_size], ids.tolist(), strict=True):
                out[row] = vocabulary.decode(seq)
    return out
