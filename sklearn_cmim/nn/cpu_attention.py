"""Attention written out in a few tensor operations, for training on the CPU in bf16 or fp16.

:func:`sklearn_cmim.nn.model.attention` calls it when :func:`applies`: gradients are needed and
the tensors are bf16 or fp16 on the CPU. There PyTorch's fused kernels are several times slower,
forward and backward, for this model's short sequences
(``python -m benchmarks.performance.attention_kernel``).
Without gradients PyTorch's kernel is as fast and never holds the (T, S) scores, so inference,
fp32 and GPUs use it.

The softmax runs in fp32. With fewer keys than :data:`SHORT_KEYS` (attention to the K latents)
the scores are laid out keys-first, (B, heads, S, T), and normalised over dimension -2: PyTorch's
CPU softmax over so short a last dimension is much slower per element than over an outer one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["SHORT_KEYS", "applies", "attention"]

SHORT_KEYS = 16  # fp32 lanes of an AVX-512 register


def applies(q: torch.Tensor) -> bool:
    """Whether attention with queries ``q`` takes this path rather than PyTorch's kernel."""
    return q.requires_grad and q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16)


def attention(q, k, v, mask=None, causal=False, dropout_p=0.0):
    """Scaled dot-product attention, as :func:`torch.nn.functional.scaled_dot_product_attention`
    computes it with ``attn_mask=mask`` (True where a key may be seen) and ``is_causal=causal``."""
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
