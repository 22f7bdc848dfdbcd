"""The cMIM network: Perceiver encoder -> Gaussian latent -> causal Transformer decoder.

Read top-down: :func:`attention` (PyTorch's kernel; :mod:`.cpu_attention` holds the CPU training
path), the building blocks, :class:`KVCache` for greedy decoding, :class:`PerceiverEncoder`,
:class:`Decoder`, and :class:`CMIMModel`, which ties them together (docs/method.md, Model).
Shapes: B molecules, T tokens, H ``d_model``, K ``n_latents``, D ``latent_dim``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from . import cpu_attention

__all__ = ["CMIMModel", "KVCache", "ModelConfig"]

UNK_ID = 3  # tokenizer.Vocabulary.unk_id; ids above it are ordinary tokens


def attention(q, k, v, mask=None, causal=False, dropout_p=0.0):
    """Scaled dot-product attention over (B, heads, T, head width) tensors.

    ``mask`` is True where a key may be seen. PyTorch's kernel, except when training on the CPU
    in bf16 or fp16, where :mod:`.cpu_attention` writes it out (faster there).
    """
    if cpu_attention.applies(q):
        return cpu_attention.attention(q, k, v, mask, causal, dropout_p)
    if causal and mask is not None:  # PyTorch's kernel takes one or the other: fold causality in
        T, S = q.shape[-2], k.shape[-2]
        mask, causal = mask & torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T), False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal)


def training_stream_dtype(x: torch.Tensor, training: bool) -> torch.dtype | None:
    """The dtype of the residual stream when training under autocast, else None (leave it as is).

    Autocast runs the matmuls in bf16 but keeps the embeddings, and with them every residual
    addition and layer norm, in fp32, so each linear layer's input would be cast again and each
    addition move twice the bytes. Training keeps the stream in bf16 instead, as mixed-precision
    trainers commonly do; layer norm still computes its statistics in fp32. Inference keeps fp32,
    so the embeddings and decodings of a trained model do not depend on it.
    """
    device_type = x.device.type
    if not training or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


class Attention(nn.Module):
    """Multi-head attention; queries from ``x``, keys and values from ``context``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.query = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.key_value = nn.Linear(config.d_model, 2 * config.d_model, bias=config.bias)
        self.out = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x, context, key_padding_mask=None, causal=False):
        return self.attend(x, *self.keys_values(context), key_padding_mask, causal)

    def keys_values(self, context):
        """Keys and values (B, heads, S, head width) of ``context`` (B, S, H)."""
        b, s, _ = context.shape
        k, v = self.key_value(context).view(b, s, 2, self.n_heads, -1).unbind(2)
        return k.transpose(1, 2), v.transpose(1, 2)

    def attend(self, x, k, v, key_padding_mask=None, causal=False):
        """Queries from ``x`` (B, T, H) attend to keys and values already computed."""
        b, t, h = x.shape
        q = self.query(x).view(b, t, self.n_heads, -1).transpose(1, 2)
        mask = None
        if key_padding_mask is not None:  # True where the key is a real token
            mask = key_padding_mask[:, None, None, :]
        y = attention(q, k, v, mask, causal, self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, h))


class FeedForward(nn.Sequential):
    def __init__(self, config: ModelConfig):
        super().__init__(
            nn.Linear(config.d_model, config.d_ff, bias=config.bias),
            nn.GELU(),
            nn.Linear(config.d_ff, config.d_model, bias=config.bias),
            nn.Dropout(config.dropout),
        )


class EncoderBlock(nn.Module):
    """Pre-LN Perceiver block: latents cross-attend to the tokens, then self-attend, then MLP."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        # Each sub-layer beside the LayerNorm(s) its input goes through. The sub-layers' order is
        # the order their initial weights are drawn in: another order gives a seed another model.
        width = config.d_model
        self.norm_latents, self.norm_tokens = nn.LayerNorm(width), nn.LayerNorm(width)
        self.cross = Attention(config)
        self.norm_self, self.self_attn = nn.LayerNorm(width), Attention(config)
        self.norm_ff, self.ff = nn.LayerNorm(width), FeedForward(config)

    def forward(self, latents, tokens, token_mask):
        latents = latents + self.cross(self.norm_latents(latents), self.norm_tokens(tokens), token_mask)
        x = self.norm_self(latents)
        latents = latents + self.self_attn(x, x)
        return latents + self.ff(self.norm_ff(latents))


class KVCache:
    """What greedy decoding keeps between steps, for each decoder block ("layer").

    * ``memory[layer]``: the keys and values of its cross-attention to the latent memory, which
      is the same at every step, so they are computed once, before the first.
    * The keys and values of its causal self-attention over the ``length`` positions so far, in
      buffers (B, heads, capacity, head width) that double when full: a step writes only its own
      position, where concatenating would copy every earlier one again.
    """

    def __init__(self, memory: list[tuple[torch.Tensor, torch.Tensor]]):
        self.memory = memory
        self.length = 0
        self.keys: list[torch.Tensor | None] = [None] * len(memory)
        self.values: list[torch.Tensor | None] = [None] * len(memory)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write the new positions' keys and values (B, heads, t, head width) after the ``length``
        held for ``layer``; return all of that layer's so far. :meth:`advance` moves ``length``."""
        start, end = self.length, self.length + k.shape[2]
        if self.keys[layer] is None or end > self.keys[layer].shape[2]:
            self.keys[layer] = self._grown(self.keys[layer], k, start, end)
            self.values[layer] = self._grown(self.values[layer], v, start, end)
        self.keys[layer][:, :, start:end], self.values[layer][:, :, start:end] = k, v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, t: int):
        """Count the ``t`` positions every layer has just appended."""
        self.length += t

    @staticmethod
    def _grown(buffer, new, start, end):
        grown = new.new_empty(*new.shape[:2], max(end, 2 * start, 16), new.shape[3])
        if start:
            grown[:, :, :start] = buffer[:, :, :start]
        return grown


class DecoderBlock(nn.Module):
    """Pre-LN decoder block: causal self-attention, cross-attention to the latent, MLP."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        width = config.d_model  # as in EncoderBlock: each sub-layer beside its LayerNorm, in order
        self.norm_self, self.self_attn = nn.LayerNorm(width), Attention(config)
        self.norm_cross, self.cross = nn.LayerNorm(width), Attention(config)
        self.norm_ff, self.ff = nn.LayerNorm(width), FeedForward(config)

    def forward(self, x, memory):
        h = self.norm_self(x)
        # Causal masking alone suffices: padding sits after the real tokens, so real positions never
        # see it, and the outputs at padded positions are ignored by the loss and the pooling.
        x = x + self.self_attn(h, h, causal=True)
        x = x + self.cross(self.norm_cross(x), memory)
        return x + self.ff(self.norm_ff(x))

    def step(self, x, cache: KVCache, layer: int):
        """:meth:`forward` for new positions ``x`` after the ``cache.length`` already decoded; the
        first call may bring several, each later one brings one, which sees every earlier one."""
        if cache.length and x.shape[1] > 1:
            raise ValueError("after the first step, decoding takes one position at a time")
        h = self.norm_self(x)
        k, v = cache.append(layer, *self.self_attn.keys_values(h))
        x = x + self.self_attn.attend(h, k, v, causal=cache.length == 0)
        x = x + self.cross.attend(self.norm_cross(x), *cache.memory[layer])
        return x + self.ff(self.norm_ff(x))


class PerceiverEncoder(nn.Module):
    """K learned latent queries read the token embeddings; output (B, K, H)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(config.n_latents, config.d_model) * 0.02)
        self.blocks = nn.ModuleList(EncoderBlock(config) for _ in range(config.n_encoder_layers))
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, tokens, token_mask):
        latents = self.latents.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        for block in self.blocks:
            latents = block(latents, tokens, token_mask)
        return self.norm(latents)


class Decoder(nn.Module):
    """Causal Transformer over token embeddings, conditioned on z through cross-attention."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.latent_to_memory = nn.Linear(config.latent_dim, config.d_model)
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.n_decoder_layers))
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, x, z, all_layers=False):
        """Hidden states (B, T, H) after the final norm, or a list with one per block if asked."""
        memory = self.latent_to_memory(z)
        states = []
        for block in self.blocks:
            x = block(x, memory)
            states.append(x)
        if all_layers:
            return [self.norm(s) for s in states]
        return self.norm(x)

    def start_decoding(self, z) -> KVCache:
        """An empty cache for decoding from z (B, K, D), with each block's keys and values of the
        latent memory."""
        memory = self.latent_to_memory(z)
        return KVCache([block.cross.keys_values(memory) for block in self.blocks])

    def step(self, x, cache: KVCache):
        """Hidden states (B, t, H) of the new positions ``x`` (B, t, H) after those in ``cache``,
        whose keys and values it adds there."""
        for layer, block in enumerate(self.blocks):
            x = block.step(x, cache, layer)
        cache.advance(x.shape[1])
        return self.norm(x)


class CMIMModel(nn.Module):
    """Probabilistic auto-encoder over token ids; token embeddings are shared by both halves.

    ``forward`` returns what the losses need; :meth:`encode`, :meth:`decoder_states` and
    :meth:`generate` serve the embeddings and decoding.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_length, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = PerceiverEncoder(config)
        self.to_posterior = nn.Linear(config.d_model, 2 * config.latent_dim)
        self.decoder = Decoder(config)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def embed(self, ids, start: int = 0):
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        x = self.dropout(self.token_embedding(ids) + self.position_embedding(positions))
        dtype = training_stream_dtype(x, self.training)
        return x if dtype is None else x.to(dtype)

    def encode(self, ids):
        """Posterior parameters ``mu, logvar``, each (B, K, D); ``ids`` is <bos> x <eos> + padding."""
        h = self.encoder(self.embed(ids), ids != 0)
        mu, logvar = self.to_posterior(h).chunk(2, dim=-1)
        return mu, logvar.clamp(min=self.config.min_logvar)

    def decoder_states(self, ids, z, all_layers=False):
        """Teacher-forced decoder hidden states for input ids (B, T) given z (B, K, D)."""
        return self.decoder(self.embed(ids), z, all_layers=all_layers)

    def logits(self, states):
        return states @ self.token_embedding.weight.T

    def forward(self, ids):
        """One training pass: sample z ~ q(z|x) and score the teacher-forced reconstruction.

        Returns ``z, mu, logvar`` (B, K, D), in fp32, and ``logits`` (B, T-1, V) predicting ``ids[:, 1:]``.
        """
        mu, logvar = self.encode(ids)
        # Under autocast the posterior comes out of a bf16 matmul. z is drawn in fp32: in bf16 (8
        # significant bits) z - mu, what log q(z|x) scores, would be rounded to steps as coarse as
        # sigma = e^-3 once |mu| reaches a few units.
        mu, logvar = mu.float(), logvar.float()
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        inputs = ids[:, :-1]
        if self.training and self.config.decoder_token_dropout > 0:
            drop = torch.rand(inputs.shape, device=inputs.device) < self.config.decoder_token_dropout
            drop[:, 0] = False  # keep <bos>
            inputs = inputs.masked_fill(drop & (inputs > UNK_ID), UNK_ID)
        logits = self.logits(self.decoder_states(inputs, z))
        return z, mu, logvar, logits

    @torch.no_grad()
    def generate(self, z, bos_id, eos_id, max_length=None):
        """Greedy decoding from latents z (B, K, D); returns ids (B, <= max_length) without <bos>.

        Each step decodes one position, with the keys and values of the earlier ones cached.
        """
        max_length = max_length or self.config.max_length
        ids = torch.full((z.shape[0], 1), bos_id, dtype=torch.long, device=z.device)
        finished = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
        cache = self.decoder.start_decoding(z)
        for position in range(max_length - 1):
            states = self.decoder.step(self.embed(ids[:, -1:], start=position), cache)
            next_id = self.logits(states[:, -1]).argmax(-1)
            next_id = torch.where(finished, torch.full_like(next_id, eos_id), next_id)
            ids = torch.cat([ids, next_id[:, None]], dim=1)
            finished |= next_id == eos_id
            if bool(finished.all()):
                break
        return ids[:, 1:]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def training_flops(self, tokens: float, molecules: float, width: float) -> float:
        """FLOPs of one training pass (forward and backward) over ``molecules`` molecules holding
        ``tokens`` tokens in all, <bos> and <eos> included, padded to ``width``.

        Counted as nanoGPT does: 6 per weight of every matmul a row passes through (2 forward, 4
        backward), and 6 per multiply-add of the attention scores and their weighted sums. The
        rows are the real tokens (the encoder's keys and values, the decoder's T - 1 inputs) and
        each molecule's K latents, which pass through the whole Perceiver: for MOSES's ~36 tokens
        they are a tenth of the work. Attention is counted at the padded width, as it is computed.
        Padded rows are not counted: they are waste, not model work.

        Examples
        --------
        >>> from sklearn_cmim.nn.model import CMIMModel, ModelConfig
        >>> model = CMIMModel(ModelConfig(vocab_size=26))
        >>> round(model.training_flops(tokens=36, molecules=1, width=36) / 1e6)  # one MOSES-sized molecule
        964
        """
        c = self.config
        h, f, k = c.d_model, c.d_ff, c.n_latents
        # A block's weights per row: queries and outputs of both attentions, the keys and values
        # of the one whose context is the row's own sequence, the MLP. The other attention's keys
        # and values come from the other side (tokens for the latents, z for the decoder).
        block = 6 * h * h + 2 * h * f
        decoder_rows = tokens - molecules  # inputs are ids[:, :-1]
        weights = (tokens * c.n_encoder_layers * 2 * h * h  # keys/values of the encoder's cross-attention
                   + molecules * k * (c.n_encoder_layers * block  # the latents through the Perceiver
                                      + 2 * h * c.latent_dim  # posterior mean and log-variance
                                      + c.latent_dim * h + c.n_decoder_layers * 2 * h * h)  # z as memory
                   + decoder_rows * (c.n_decoder_layers * block + h * c.vocab_size))  # and the logits
        t = width - 1
        scores = molecules * (c.n_encoder_layers * 2 * h * (k * width + k * k)
                              + c.n_decoder_layers * 2 * h * (t * t + t * k))
        return 6.0 * (weights + scores)

    def extra_repr(self) -> str:
        return f"parameters={self.num_parameters():,}"
