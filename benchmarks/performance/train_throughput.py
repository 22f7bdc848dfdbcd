"""Training throughput of CMIMTransformer on this machine, fp32 against bf16 autocast.

Reports molecules/s, tokens/s, achieved model FLOP/s and that as a fraction of a bf16 matmul's
FLOP/s measured in the same process (the hardware peak).

    python -m benchmarks.performance.train_throughput            # default config, MOSES molecules
    python -m benchmarks.performance.train_throughput --molecules 2000 --d-model 128
    python -m benchmarks.performance.train_throughput --profile  # also: where a bf16 epoch spends its time
    # pretraining's recipe:
    python -m benchmarks.performance.train_throughput --batch-size 128 --dropout 0 --profile
    python -m benchmarks.performance.train_throughput --quick     # smoke run: a tiny model (seconds)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.common import QUICK_MODEL, as_command, moses_or_esol
from sklearn_cmim import CMIMTransformer
from sklearn_cmim.nn.device import resolve_device
from sklearn_cmim.nn.flops import matmul_peak_flops


def operator_kind(name: str) -> str:
    """Which kind of work a profiled aten operator is, for the time breakdown."""
    if name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"):
        return "matrix multiply"
    if "scaled_dot_product" in name:
        return "attention kernel"
    if "layer_norm" in name:
        return "layer norm"
    if name.startswith(("aten::_foreach", "aten::_fused_adam")):
        return "optimiser"
    if name in ("aten::copy_", "aten::_to_copy"):
        return "dtype casts and copies"
    return "other element-wise and glue"


def time_breakdown(architecture: dict, smiles: list[str]) -> dict[str, float]:
    """Share of one bf16 training epoch's wall time per kind of operator (self time, so nested
    calls count once), and the rest: Python, data preparation and the dispatcher."""
    est = CMIMTransformer(**architecture, max_epochs=1, precision="bf16", random_state=0)
    est.fit(smiles[:256])  # warm-up: kernels chosen, memory pools grown
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        est.fit(smiles)
    wall_us = (time.perf_counter() - start) * 1e6
    shares: dict[str, float] = {}
    for event in profiler.key_averages():
        kind = operator_kind(event.key)
        shares[kind] = shares.get(kind, 0.0) + event.self_cpu_time_total / wall_us
    shares["outside operators (Python, data, dispatch)"] = max(0.0, 1.0 - sum(shares.values()))
    return dict(sorted(shares.items(), key=lambda kv: -kv[1]))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=2, help="the first epoch is warm-up, not timed")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--profile", action="store_true", help="break a bf16 epoch's time down by operator")
    for name in ("d_model", "n_heads", "d_ff", "n_encoder_layers", "n_decoder_layers", "latent_dim",
                 "batch_size"):
        parser.add_argument("--" + name.replace("_", "-"), type=int)
    parser.add_argument("--dropout", type=float, help="0 with --batch-size 128 is pretraining's recipe")
    parser.add_argument("--quick", action="store_true", help="smoke run: 96 molecules, a tiny model")
    args = parser.parse_args(argv)
    params = CMIMTransformer().get_params()
    architecture = {k: v for k, v in vars(args).items() if v is not None and k in params}
    if args.quick:
        args.molecules, args.epochs, args.profile = 96, 1, True
        architecture = {**QUICK_MODEL, **architecture}

    smiles, source = moses_or_esol("train.csv.gz", args.molecules)
    device = resolve_device(None)  # where the estimator trains: the peak must be that device's
    # A short matmul in quick mode: it only has to produce a number, not the true peak (and a CPU
    # without native bf16 takes minutes over a large one).
    size, seconds = (512, 0.2) if args.quick else (4096 if device.type == "cuda" else 2048, 1.0)
    peak_bf16 = matmul_peak_flops(device, torch.bfloat16, size=size, min_seconds=seconds)
    peak_fp32 = matmul_peak_flops(device, torch.float32, size=size, min_seconds=seconds)
    print(f"{len(smiles)} molecules from {source}; {device.type}, {torch.get_num_threads()} threads")
    print(f"matmul peak: bf16 {peak_bf16 / 1e9:.0f} GFLOP/s, fp32 {peak_fp32 / 1e9:.0f} GFLOP/s")
    results = {"molecules": len(smiles), "source": source, "threads": torch.get_num_threads(),
               "peak_bf16_flops": peak_bf16, "peak_fp32_flops": peak_fp32, "runs": {}}
    for precision in ("fp32", "bf16"):
        est = CMIMTransformer(**architecture, max_epochs=args.epochs, precision=precision,
                              random_state=0)
        start = time.perf_counter()
        est.fit(smiles)
        last = est.history_[-1]
        mean_length = last["tokens_per_s"] / last["molecules_per_s"]
        flops = est.model_.training_flops(last["tokens_per_s"], last["molecules_per_s"], mean_length)
        run = {"molecules_per_s": last["molecules_per_s"], "tokens_per_s": last["tokens_per_s"],
               "model_flops": flops, "fraction_of_bf16_peak": flops / peak_bf16,
               "parameters": est.model_.num_parameters(), "wall_s": time.perf_counter() - start}
        results["runs"][precision] = run
        print(f"{precision}: {run['molecules_per_s']:.0f} molecules/s, {run['tokens_per_s']:.0f} tokens/s, "
              f"{flops / 1e9:.1f} GFLOP/s = {100 * run['fraction_of_bf16_peak']:.1f}% of bf16 peak "
              f"({run['parameters']:,} parameters)")
    speedup = results["runs"]["bf16"]["tokens_per_s"] / results["runs"]["fp32"]["tokens_per_s"]
    results["bf16_speedup"] = speedup
    print(f"bf16 / fp32 training speed: {speedup:.2f}x")
    if args.profile:
        results["bf16_time_breakdown"] = time_breakdown(architecture, smiles)
        for kind, share in results["bf16_time_breakdown"].items():
            print(f"  {100 * share:5.1f}%  {kind}")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    as_command(main)
