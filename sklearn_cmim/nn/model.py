"""The cMIM network: Perceiver encoder -> Gaussian latent -> causal Transformer decoder.

Read top-down: :class:`ModelConfig`, the building blocks, :class:`PerceiverEncoder`,
:class:`Decoder`, and :class:`CMIMModel`, which ties them together (docs/method.md, Model).
Shapes: B molecules, T tokens, H ``d_model``, K ``n_latents``, D ``latent_dim``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig

__all__ = ["CMIMModel", "ModelConfig"]

UNK_ID = 3  # tokenizer.Vocabulary.unk_id; ids above it are ordinary tokens
SHORT_KEYS = 16  # fp32 lanes of an AVX-512 register; see attention()


def attention(q, k, v, mask=None, causal=False, dropout_p=0.0):
    """Scaled dot-product attention over (B, heads, T, head width) tensors.

    ``mask`` is True where a key may be seen. When training on CPU in bf16 or fp16 it is written
    out, with the softmax in fp32: PyTorch's fused CPU kernels are 2-7x slower there, forward and
    backward, for this model's short sequences and 64-wide heads
    (``python -m benchmarks.performance.attention_kernel``). Without gradients PyTorch's kernel is as fast or
    faster and never holds the (T, T) scores, so inference and everything else use it.
    """
    if not q.requires_grad or q.device.type != "cpu" or q.dtype not in (torch.bfloat16, torch.float16):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                              is_causal=causal and mask is None)
    # With fewer keys than a vector register holds floats (the K latents), PyTorch's CPU softmax
    # over the last dimension is about ten times slower per element than over an outer one, so
    # the scores are then laid out keys-first, (B, heads, S, T), and normalised over dim -2.
    keys_first = k.shape[-2] < SHORT_KEYS
    q = q * q.shape[-1] ** -0.5
    scores = k @ q.transpose(-2, -1) if keys_first else q @ k.transpose(-2, -1)
    hidden = []  # boolean masks over (T, S) of the keys a query may not see
    if causal:  # query i sees keys 0..i, as is_causal does
        hidden.append(torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu(1))
    if mask is not None:
        hidden.append(~mask)
    for keys_hidden in hidden:
        scores = scores.masked_fill(keys_hidden.transpose(-2, -1) if keys_first else keys_hidden,
                                    float("-inf"))
    weights = F.dropout(scores.float().softmax(-2 if keys_first else -1), dropout_p).to(v.dtype)
    return (weights.transpose(-2, -1) if keys_first else weights) @ v


def training_stream_dtype(x: torch.Tensor, training: bool) -> torch.dtype | None:
    """The dtype of the residual stream when training under autocast, else None (leave it as is).

    Autocast runs the matmuls in bf16 but keeps the embeddings, and with them every residual
    addition and layer norm, in fp32: each linear layer's input is then cast to bf16 again, and
    the additions move twice the bytes. Training keeps the stream in bf16 instead, as
    mixed-precision trainers commonly do; layer norm still computes its statistics in fp32. On
    2 CPU cores that made a training step 4-6% faster than an fp32 stream, measured in one process
    with the two interleaved (``docs/findings.md``). Inference keeps fp32, so the embeddings and
    decodings of a trained model do not change.
    """
    device_type = x.device.type
    if not training or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def append_to_cache(cache: dict, k: torch.Tensor, v: torch.Tensor):
    """Add a decoding step's keys and values (B, heads, t, width) to ``cache``; return all so far.

    They are kept in buffers that double when full, so a step writes only its own positions:
    concatenating would copy every earlier one again, a fifth of greedy decoding's time.
    """
    start = cache.get("length", 0)
    end = start + k.shape[2]
    if "k" not in cache or end > cache["k"].shape[2]:
        for name, new in (("k", k), ("v", v)):
            grown = new.new_empty(*new.shape[:2], max(end, 2 * start, 16), new.shape[3])
            if start:
                grown[:, :, :start] = cache[name][:, :, :start]
            cache[name] = grown
    cache["k"][:, :, start:end], cache["v"][:, :, start:end] = k, v
    cache["length"] = end
    return cache["k"][:, :, :end], cache["v"][:, :, :end]


class Attention(nn.Module):
    """Multi-head attention; queries from ``x``, keys and values from ``context``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.query = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.key_value = nn.Linear(config.d_model, 2 * config.d_model, bias=config.bias)
        self.out = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x, context, key_padding_mask=None, causal=False, cache=None):
        """``cache`` (a dict) serves incremental decoding, where ``x`` holds only the new positions.
        Causal self-attention keeps the keys and values of earlier steps in it, which the new
        positions may all see; cross-attention, whose context is the same at every step, keeps
        the context's keys and values, computed at the first step."""
        b, t, h = x.shape
        q = self.query(x).view(b, t, self.n_heads, -1).transpose(1, 2)
        if cache is not None and not causal and cache:
            k, v = cache["k"], cache["v"]
        else:
            k, v = self.key_value(context).view(b, context.shape[1], 2, self.n_heads, -1).unbind(2)
            k, v = k.transpose(1, 2), v.transpose(1, 2)
            if cache is not None and causal:
                causal = t > 1 or not cache  # one new position may see every earlier one
                k, v = append_to_cache(cache, k, v)
            elif cache is not None:
                cache["k"], cache["v"] = k, v
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
        self.norm_latents = nn.LayerNorm(config.d_model)
        self.norm_tokens = nn.LayerNorm(config.d_model)
        self.cross = Attention(config)
        self.norm_self = nn.LayerNorm(config.d_model)
        self.self_attn = Attention(config)
        self.norm_ff = nn.LayerNorm(config.d_model)
        self.ff = FeedForward(config)

    def forward(self, latents, tokens, token_mask):
        latents = latents + self.cross(self.norm_latents(latents), self.norm_tokens(tokens), token_mask)
        x = self.norm_self(latents)
        latents = latents + self.self_attn(x, x)
        return latents + self.ff(self.norm_ff(latents))


class DecoderBlock(nn.Module):
    """Pre-LN decoder block: causal self-attention, cross-attention to the latent, MLP."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.norm_self = nn.LayerNorm(config.d_model)
        self.self_attn = Attention(config)
        self.norm_cross = nn.LayerNorm(config.d_model)
        self.cross = Attention(config)
        self.norm_ff = nn.LayerNorm(config.d_model)
        self.ff = FeedForward(config)

    def forward(self, x, memory, cache=None):
        """``cache`` (a dict, for incremental decoding) holds one cache for each attention."""
        self_cache, cross_cache = (None, None) if cache is None else (
            cache.setdefault("self", {}), cache.setdefault("cross", {}))
        h = self.norm_self(x)
        # Causal masking alone suffices: padding sits after the real tokens, so real positions never
        # see it, and the outputs at padded positions are ignored by the loss and the pooling.
        x = x + self.self_attn(h, h, causal=True, cache=self_cache)
        x = x + self.cross(self.norm_cross(x), memory, cache=cross_cache)
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

    def forward(self, x, z, all_layers=False, caches=None):
        """Hidden states (B, T, H) after the final norm, or a list with one per block if asked.

        ``caches`` (one dict per block) makes ``x`` the continuation of earlier calls.
        """
        # Continuing from caches, the blocks already hold the memory's keys and values.
        memory = self.latent_to_memory(z) if caches is None or not caches[0] else None
        states = []
        for i, block in enumerate(self.blocks):
            x = block(x, memory, None if caches is None else caches[i])
            states.append(x)
        if all_layers:
            return [self.norm(s) for s in states]
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

        Returns ``z, mu, logvar`` (B, K, D) and ``logits`` (B, T-1, V) predicting ``ids[:, 1:]``.
        """
        mu, logvar = self.encode(ids)
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

        Keys and values of earlier positions are cached, so each step costs one position.
        """
        max_length = max_length or self.config.max_length
        ids = torch.full((z.shape[0], 1), bos_id, dtype=torch.long, device=z.device)
        finished = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
        caches = [{} for _ in self.decoder.blocks]
        for position in range(max_length - 1):
            states = self.decoder(self.embed(ids[:, -1:], start=position), z, caches=caches)
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
