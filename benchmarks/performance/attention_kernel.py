"""Which attention implementation the model should use on CPU in bf16, measured.

PyTorch picks a fused (flash) attention kernel on CPU whenever attention dropout is off, and its
composite ("math") kernel otherwise. For this model's shapes (sequences of tens of tokens,
8 latents, 64-wide heads) both are slower in bf16 than attention written out in a few tensor
operations (``sklearn_cmim.nn.cpu_attention``, which ``sklearn_cmim.nn.model.attention``
calls for bf16 training on CPU). This script times the three in the same process:

* each of the model's three attention calls (decoder self-attention, decoder cross-attention
  to the latent, encoder cross-attention to the tokens), forward and backward, under bf16
  autocast as in training, and the flash and math kernels in fp32 for reference;
* whole-model bf16 training with attention dropout off (as pretraining runs) with each of the
  three, and the model FLOP utilisation each gives.

    python -m benchmarks.performance.attention_kernel            # default architecture, batch 64
    python -m benchmarks.performance.attention_kernel --quick    # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import sklearn_cmim.nn.model
from benchmarks.common import (
    DOCS_MARKDOWN,
    QUICK_MODEL,
    as_command,
    command_line,
    markdown_table,
    moses_or_esol,
    set_outputs,
    update_markdown_section,
    write_json,
)
from sklearn_cmim import CMIMTransformer
from sklearn_cmim.nn.flops import matmul_peak_flops


def pytorch_kernel(backend: SDPBackend):
    """``sklearn_cmim.nn.model.attention`` with PyTorch's ``backend`` forced."""
    def attention(q, k, v, mask=None, causal=False, dropout_p=0.0):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                                  is_causal=causal and mask is None)
    return attention


KERNELS = {"flash": pytorch_kernel(SDPBackend.FLASH_ATTENTION),
           "math": pytorch_kernel(SDPBackend.MATH),
           "written out": sklearn_cmim.nn.model.attention}


def time_call(attention, q_shape, kv_shape, causal, dtype, repeats) -> float:
    """Milliseconds for one forward and backward pass of ``attention``; bf16 runs under autocast
    from fp32 leaves, as in training."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(*shape, generator=generator, requires_grad=True)
               for shape in (q_shape, kv_shape, kv_shape))
    for i in range(repeats + 3):  # three warm-up calls
        if i == 3:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            y = attention(q.to(dtype), k.to(dtype), v.to(dtype), causal=causal)
        y.float().sum().backward()
    return (time.perf_counter() - start) / repeats * 1e3


def attention_calls(architecture: dict, batch: int, tokens: int, repeats: int) -> list[dict]:
    params = {**CMIMTransformer().get_params(), **architecture}
    heads, width = params["n_heads"], params["d_model"] // params["n_heads"]
    token_shape = (batch, heads, tokens, width)
    latent_shape = (batch, heads, params["n_latents"], width)
    calls = {"decoder self-attention (causal)": (token_shape, token_shape, True),
             "decoder cross-attention to the latent": (token_shape, latent_shape, False),
             "encoder cross-attention to the tokens": (latent_shape, token_shape, False)}
    rows = []
    for name, (q_shape, kv_shape, causal) in calls.items():
        for dtype in (torch.bfloat16, torch.float32):
            # In fp32 the package runs PyTorch's own choice, so only PyTorch's kernels are timed.
            kernels = KERNELS if dtype == torch.bfloat16 else ("flash", "math")
            ms = {kernel: time_call(KERNELS[kernel], q_shape, kv_shape, causal, dtype, repeats)
                  for kernel in kernels}
            rows.append({"call": name, "dtype": str(dtype).removeprefix("torch."), "ms": ms})
            print(f"{name}, {rows[-1]['dtype']}: "
                  + ", ".join(f"{kernel} {value:.2f} ms" for kernel, value in ms.items()), flush=True)
    return rows


def training(smiles: list[str], architecture: dict, batch: int, peak: float) -> dict:
    """bf16 training molecules/s and model FLOP utilisation with each attention on CPU."""
    chosen = sklearn_cmim.nn.model.attention
    results = {}
    try:
        for kernel in KERNELS:
            sklearn_cmim.nn.model.attention = KERNELS[kernel]
            est = CMIMTransformer(**architecture, dropout=0.0, batch_size=batch, max_epochs=2,
                                  precision="bf16", device="cpu", random_state=0).fit(smiles)
            last = est.history_[-1]  # the first epoch is warm-up
            length = last["tokens_per_s"] / last["molecules_per_s"]
            flops = est.model_.training_flops(last["tokens_per_s"], last["molecules_per_s"], length)
            results[kernel] = {"molecules_per_s": last["molecules_per_s"],
                               "fraction_of_bf16_peak": flops / peak}
            print(f"training with {kernel}: {last['molecules_per_s']:.0f} molecules/s, "
                  f"{100 * flops / peak:.1f}% of the bf16 matmul peak", flush=True)
    finally:
        sklearn_cmim.nn.model.attention = chosen
    for kernel in ("flash", "math"):
        results[f"speedup_over_{kernel}"] = (results["written out"]["molecules_per_s"]
                                             / results[kernel]["molecules_per_s"])
    return results


def markdown(report: dict) -> str:
    config = report["config"]
    rows = [[r["call"], r["dtype"]] + [f"{r['ms'][k]:.2f}" if k in r["ms"] else "(not used)"
                                       for k in KERNELS] for r in report["calls"]]
    train = report["training"]
    train_rows = [[kernel, f"{train[kernel]['molecules_per_s']:.0f}",
                   f"{100 * train[kernel]['fraction_of_bf16_peak']:.1f}%"] for kernel in KERNELS]
    return "\n\n".join([
        "## Attention kernel on CPU",
        f"Written by `{config['command']}`. {config['threads']} threads; batch {config['batch']}, "
        f"{config['tokens']} tokens (about a MOSES molecule), the default architecture's heads.",
        "One attention call, forward and backward, in milliseconds:",
        markdown_table(["call", "dtype", *KERNELS], rows),
        f"bf16 training on {config['molecules']} molecules from {config['source']}, attention "
        f"dropout off (as pretraining runs), last of 2 epochs:",
        markdown_table(["kernel", "molecules/s", "of bf16 matmul peak"], train_rows),
        f"The package writes attention out for bf16 on CPU: training runs "
        f"{train['speedup_over_flash']:.2f}x as fast as with PyTorch's default (flash) kernel and "
        f"{train['speedup_over_math']:.2f}x as fast as with its math kernel.",
    ])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--molecules", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, help="JSON (default docs/benchmarks)")
    parser.add_argument("--markdown", type=Path, help=f"report to update (default {DOCS_MARKDOWN})")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny model and shapes")
    args = parser.parse_args(argv)
    command = command_line("benchmarks.performance.attention_kernel", argv)
    architecture = {}
    if args.quick:
        architecture = QUICK_MODEL
        args.batch, args.tokens, args.molecules, args.repeats = 8, 12, 64, 2
    set_outputs(args, "attention-quick")

    smiles, source = moses_or_esol("train.csv.gz", args.molecules)
    size, seconds = (512, 0.2) if args.quick else (2048, 2.0)
    peak = matmul_peak_flops("cpu", torch.bfloat16, size=size, min_seconds=seconds)
    report = {
        "config": {"command": command, "threads": torch.get_num_threads(), "batch": args.batch,
                   "tokens": args.tokens, "molecules": len(smiles), "source": source,
                   "architecture": architecture, "peak_bf16_flops": peak},
        "calls": attention_calls(architecture, args.batch, args.tokens, args.repeats),
        "training": training(smiles, architecture, args.batch, peak),
    }
    write_json(args.out / "attention_kernel.json", report)
    update_markdown_section(args.markdown, "attention-kernel", markdown(report))
    return report


if __name__ == "__main__":
    as_command(main)
