import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sklearn_cmim.nn.model import CMIMModel, KVCache, ModelConfig, attention


def tiny_model(**overrides):
    config = ModelConfig(vocab_size=12, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1,
                         n_decoder_layers=2, n_latents=2, latent_dim=4, max_length=20, dropout=0.0)
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return CMIMModel(config).eval()


def test_shapes_of_a_training_pass():
    model = tiny_model()
    ids = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]])
    z, mu, logvar, logits = model(ids)
    assert z.shape == mu.shape == logvar.shape == (2, 2, 4)
    assert logits.shape == (2, 4, 12)


def test_log_variance_is_clamped():
    model = tiny_model()
    with torch.no_grad():
        model.to_posterior.bias[4:] = -50.0
    _, logvar = model.encode(torch.tensor([[1, 5, 2]]))
    assert torch.all(logvar == -6.0)


def test_encoder_ignores_padding():
    model = tiny_model()
    mu, _ = model.encode(torch.tensor([[1, 5, 6, 2]]))
    mu_padded, _ = model.encode(torch.tensor([[1, 5, 6, 2, 0, 0, 0]]))
    torch.testing.assert_close(mu, mu_padded)


def test_decoder_is_causal():
    model = tiny_model()
    z = torch.randn(1, 2, 4)
    a = model.decoder_states(torch.tensor([[1, 5, 6, 7]]), z)
    b = model.decoder_states(torch.tensor([[1, 5, 9, 9]]), z)
    torch.testing.assert_close(a[:, :2], b[:, :2])
    assert not torch.allclose(a[:, 2:], b[:, 2:])


def test_decoder_depends_on_z():
    model = tiny_model()
    ids = torch.tensor([[1, 5, 6]])
    assert not torch.allclose(model.decoder_states(ids, torch.zeros(1, 2, 4)),
                              model.decoder_states(ids, torch.ones(1, 2, 4)))


def test_embeddings_are_shared_and_tied_to_the_output():
    model = tiny_model()
    states = torch.randn(1, 3, 16)
    torch.testing.assert_close(model.logits(states), states @ model.token_embedding.weight.T)


def test_generate_stops_at_eos_and_respects_max_length():
    model = tiny_model()
    out = model.generate(torch.randn(3, 2, 4), bos_id=1, eos_id=2, max_length=6)
    assert out.shape[0] == 3 and out.shape[1] <= 5
    for row in out.tolist():
        if 2 in row:
            assert all(t == 2 for t in row[row.index(2):])


@pytest.mark.parametrize("overrides", [{}, {"n_latents": 8, "n_encoder_layers": 2},
                                       {"d_ff": 64, "latent_dim": 6}])
def test_training_flops_match_what_pytorch_counts(overrides):
    """The analytic count behind the logged model FLOP utilisation equals PyTorch's own count of
    the matmuls in one forward and backward pass (bf16 training on the CPU writes attention out
    as matmuls, so the counter sees those too). Equal lengths: the counter would count padding."""
    model = tiny_model(**overrides).train()
    ids = torch.randint(4, 12, (6, 9))
    ids[:, 0], ids[:, -1] = 1, 2
    with FlopCounterMode(display=False) as counter, torch.autocast("cpu", dtype=torch.bfloat16):
        z, _, _, logits = model(ids)
        (logits.float().square().mean() + z.float().square().mean()).backward()
    counted = counter.get_total_flops()
    assert counter.get_flop_counts()["Global"][torch.ops.aten.bmm] > 0  # attention was counted
    assert model.training_flops(tokens=ids.numel(), molecules=6, width=9) == pytest.approx(counted, rel=1e-9)


# With an <eos> id never produced, decoding runs all 40 positions and outgrows the key/value
# buffers twice (16, then 32, then 64 positions).
@pytest.mark.parametrize("max_length, eos_id", [(12, 2), (40, -1)])
def test_cached_decoding_matches_full_recomputation(max_length, eos_id):
    model = tiny_model(max_length=max_length)
    z = torch.randn(4, 2, 4)
    cached = model.generate(z, bos_id=1, eos_id=eos_id, max_length=max_length)
    assert eos_id != -1 or cached.shape[1] == max_length - 1
    ids = torch.ones(4, 1, dtype=torch.long)
    for _ in range(cached.shape[1]):  # the same greedy loop, recomputing every position each step
        next_id = model.logits(model.decoder_states(ids, z)[:, -1]).argmax(-1)
        ids = torch.cat([ids, next_id[:, None]], dim=1)
    finished = torch.cumsum(ids[:, 1:] == eos_id, dim=1) > 0
    shifted = torch.cat([torch.zeros(4, 1, dtype=torch.bool), finished[:, :-1]], dim=1)
    expected = ids[:, 1:].masked_fill(shifted, eos_id)  # after <eos>, generate pads with <eos>
    torch.testing.assert_close(cached, expected)


def test_appending_to_a_decoding_cache_is_concatenating():
    steps = [torch.randn(2, 3, n, 4) for n in (1, 1, 20, 1)]  # the third outgrows the first buffer
    cache, keys = KVCache(memory=[None, None]), []
    for step in steps:
        keys.append(step)
        for layer, sign in enumerate((1, -1)):  # each layer keeps its own keys and values
            k, v = cache.append(layer, sign * step, -sign * step)
            torch.testing.assert_close(k, sign * torch.cat(keys, dim=2), rtol=0, atol=0)
            torch.testing.assert_close(v, -sign * torch.cat(keys, dim=2), rtol=0, atol=0)
        cache.advance(step.shape[2])
    assert cache.length == 23 and cache.keys[0].shape[2] == 44  # grown to fit 22, then doubled


def test_decoding_after_the_first_step_takes_one_position_at_a_time():
    model = tiny_model()
    z = torch.randn(2, 2, 4)
    cache = model.decoder.start_decoding(z)
    ids = torch.tensor([[1, 5, 6], [1, 7, 8]])
    with torch.no_grad():  # a first step may bring several positions, causally as in training
        torch.testing.assert_close(model.decoder.step(model.embed(ids), cache),
                                   model.decoder_states(ids, z))
    with pytest.raises(ValueError, match="one position at a time"):
        model.decoder.step(model.embed(ids[:, :2], start=3), cache)


# Fewer keys than cpu_attention.SHORT_KEYS take the keys-first layout, more the usual one: both are tested.
@pytest.mark.parametrize("n_keys", [7, 20])
@pytest.mark.parametrize("causal, masked", [(True, False), (False, True), (False, False)])
def test_written_out_bf16_attention_matches_pytorch_in_fp32(causal, masked, n_keys):
    # The bf16 CPU path is the package's own code; PyTorch's fp32 kernel is the reference.
    generator = torch.Generator().manual_seed(0)
    n_queries = n_keys if causal else 5  # cross-attention: as many queries as there are latents
    q = torch.randn(3, 2, n_queries, 8, generator=generator)
    k, v = (torch.randn(3, 2, n_keys, 8, generator=generator) for _ in range(2))
    mask = torch.rand(3, 1, 1, n_keys, generator=generator) > 0.4 if masked else None
    if masked:
        mask[..., 0] = True  # every query sees at least one key
        v = v.masked_fill(~mask.transpose(-1, -2), 1e4)  # a masked key leaking in would show
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    q.requires_grad_()  # the written-out path serves training
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, causal)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("n_keys", [5, 20])
def test_bf16_attention_backpropagates_like_pytorch(n_keys):
    generator = torch.Generator().manual_seed(1)
    leaves = [torch.randn(2, 2, n_keys, 8, generator=generator, requires_grad=True) for _ in range(3)]
    F.scaled_dot_product_attention(*leaves, is_causal=True).square().sum().backward()
    expected = [leaf.grad.clone() for leaf in leaves]
    for leaf in leaves:
        leaf.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(*(leaf.bfloat16() for leaf in leaves), causal=True)
    out.float().square().sum().backward()
    for leaf, grad in zip(leaves, expected, strict=True):
        torch.testing.assert_close(leaf.grad, grad, atol=0.1, rtol=0.05)


def test_training_under_autocast_keeps_the_residual_stream_in_bf16_and_inference_in_fp32():
    model = tiny_model()
    seen = []
    for block in [*model.encoder.blocks, *model.decoder.blocks]:
        block.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    ids = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]])
    blocks = len(model.encoder.blocks) + len(model.decoder.blocks)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.train()
        _, mu, _, logits = model(ids)
        assert seen == [torch.bfloat16] * blocks
        (mu.float().sum() + logits.float().sum()).backward()  # gradients reach the fp32 weights
        assert model.token_embedding.weight.grad.dtype == torch.float32
        assert model.encoder.latents.grad.abs().sum() > 0
        seen.clear()
        model.eval()
        with torch.no_grad():
            model(ids)
        assert seen == [torch.float32] * blocks
    seen.clear()
    model.train()
    model(ids)  # without autocast, training is fp32 throughout
    assert seen == [torch.float32] * blocks


def test_blocks_have_no_bias_by_default_and_configs_saved_before_the_option_keep_theirs():
    def block_biases(model):
        return [m.bias for block in [*model.encoder.blocks, *model.decoder.blocks]
                for m in block.modules() if isinstance(m, torch.nn.Linear)]

    model = tiny_model()
    assert block_biases(model) and all(bias is None for bias in block_biases(model))
    saved = model.config.to_dict()
    del saved["bias"]  # as every config written before the option
    old = CMIMModel(ModelConfig.from_dict(saved))
    assert all(bias is not None for bias in block_biases(old))
    assert not CMIMModel(ModelConfig.from_dict(model.config.to_dict())).config.bias


def test_the_posterior_sample_under_autocast_is_not_rounded_to_bf16():
    # log q(z|x) scores (z - mu) / sigma, which should be the drawn N(0, 1) noise. Near mu = 4
    # bf16 steps by 1/32, about 0.6 sigma at the clamp (sigma = e^-3), so a z rounded to bf16
    # would leave the noise a handful of distinct values.
    model = tiny_model().train()
    with torch.no_grad():
        model.to_posterior.bias[:4] = 4.0
        model.to_posterior.bias[4:] = -50.0  # clamped to -6
    ids = torch.randint(4, 12, (64, 6))
    ids[:, 0], ids[:, -1] = 1, 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, mu, logvar, _ = model(ids)
    noise = ((z - mu) / torch.exp(0.5 * logvar)).flatten()
    assert noise.unique().numel() == noise.numel() == 512
    assert 0.85 < noise.std().item() < 1.15


def test_attention_with_a_mask_stays_causal():
    # PyTorch's kernel drops is_causal when a mask is given: a key mask and causality together
    # let every position see the positions after it.
    q, k, v = torch.randn(3, 2, 2, 5, 4).unbind(0)
    causal = attention(q, k, v, causal=True)
    seen = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    torch.testing.assert_close(attention(q, k, v, mask=seen, causal=True), causal)
    seen[:, :, :, -1] = False  # a padded last key changes only what sees it: the last position
    masked = attention(q, k, v, mask=seen, causal=True)
    torch.testing.assert_close(masked[:, :, :-1], causal[:, :, :-1])
