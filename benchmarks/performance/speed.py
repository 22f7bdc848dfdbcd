"""How fast the package is, beside references measured by the same run on the same machine.

* ``transform`` molecules/s, latent and informative embeddings, bf16 autocast on and off, at
  several inference batch sizes (standardising and tokenising included: what a user waits for);
* ``inverse_transform`` molecules/s: greedy decoding of the molecules' latent means, bf16 autocast
  on and off (a fresh model's decodings run to ``max_length``, so time a trained one);
* ECFP4 and RDKit 2D descriptor featurisation molecules/s, the baselines' cost;
* a large bf16 (and fp32) matmul's FLOP/s: the hardware peak;
* training tokens/s, and the model FLOP/s they imply as a fraction of that peak (as in
  ``python -m benchmarks.performance.train_throughput``);
* peak resident memory of ``cmim embed`` streaming 100,000 molecules from a file, in a child
  process (``python -m benchmarks.performance.embed_memory`` measures the same at 1,000,000).

The model's weights do not change its speed, so without ``--model`` a freshly initialised model
of the package's default architecture is timed. Full run:

    python -m benchmarks.performance.speed --model cmim-broad

Smoke run (seconds):

    python -m benchmarks.performance.speed --quick
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

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
from benchmarks.performance.embed_memory import run_embed, write_smiles
from sklearn_cmim import CMIMTransformer
from sklearn_cmim.descriptors import RDKitDescriptorsTransformer
from sklearn_cmim.fingerprints import ECFPTransformer
from sklearn_cmim.nn.device import bf16_supported, resolve_device
from sklearn_cmim.nn.flops import matmul_peak_flops


def molecules_per_second(function, molecules) -> float:
    start = time.perf_counter()
    function(molecules)
    return len(molecules) / (time.perf_counter() - start)


def embedding_speed(smiles, args, device) -> list[dict]:
    rows = []
    for precision in ("fp32", "bf16"):
        # precision is resolved when fitting; with max_epochs=0, fit only builds or loads the model.
        estimator = CMIMTransformer(**args.architecture, pretrained=args.model, max_epochs=0,
                                    precision=precision, device=device, errors="nan", random_state=0)
        estimator.fit(smiles)
        for embedding in ("latent", "informative"):
            for batch_size in args.batch_sizes:
                estimator.set_params(embedding=embedding, inference_batch_size=batch_size)
                estimator.transform(smiles[:batch_size])  # warm-up: kernel choice, allocator
                rate = molecules_per_second(estimator.transform, smiles)
                rows.append({"embedding": embedding, "precision": precision, "batch_size": batch_size,
                             "molecules_per_s": rate})
                print(f"transform {embedding:11s} {precision} batch {batch_size:5d}: {rate:8.0f} molecules/s",
                      flush=True)
    return rows


def decoding_speed(smiles, args, device) -> list[dict]:
    """``inverse_transform`` molecules/s, decoding the latent means of ``smiles``."""
    rows = []
    for precision in ("fp32", "bf16"):
        estimator = CMIMTransformer(**args.architecture, pretrained=args.model, max_epochs=0,
                                    embedding="latent", precision=precision, device=device, errors="nan",
                                    random_state=0).fit(smiles)
        latents = estimator.transform(smiles)
        estimator.inverse_transform(latents[:16])  # warm-up
        rate = molecules_per_second(estimator.inverse_transform, latents)
        rows.append({"precision": precision, "molecules_per_s": rate})
        print(f"inverse_transform {precision}: {rate:8.0f} molecules/s", flush=True)
    return rows


def training_speed(smiles, args, device, peak_bf16: float) -> list[dict]:
    """Training throughput; the first epoch is warm-up, the last one is timed."""
    rows = []
    for precision in ("fp32", "bf16"):
        estimator = CMIMTransformer(**args.architecture, pretrained=args.model, max_epochs=2,
                                    batch_size=args.train_batch_size, precision=precision, device=device,
                                    errors="nan", random_state=0).fit(smiles)
        last = estimator.history_[-1]
        mean_length = last["tokens_per_s"] / last["molecules_per_s"]
        flops = estimator.model_.training_flops(last["tokens_per_s"], last["molecules_per_s"], mean_length)
        rows.append({"precision": precision, "molecules_per_s": last["molecules_per_s"],
                     "tokens_per_s": last["tokens_per_s"], "model_flops": flops,
                     "fraction_of_bf16_peak": flops / peak_bf16,
                     "parameters": estimator.model_.num_parameters()})
        print(f"training {precision}: {last['tokens_per_s']:.0f} tokens/s, "
              f"{100 * flops / peak_bf16:.1f}% of the bf16 matmul peak", flush=True)
    return rows


def streaming_memory(args) -> dict:
    """Peak RSS of ``cmim embed`` over ``args.memory_molecules`` molecules (informative embeddings)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:  # a fresh model of the timed architecture, saved for the child process
            model = CMIMTransformer(**args.architecture, max_epochs=0, random_state=0).fit(["CCO"])
            model = model.save_pretrained(tmp / "model")
        source = write_smiles(tmp / "molecules.smi", args.memory_molecules)
        run = run_embed(tmp / "molecules.smi", tmp / "embeddings.npy", model, 10_000, "--errors", "nan")
        if run.returncode != 0:
            sys.exit(f"cmim embed failed:\n{run.stderr}")
    print(f"cmim embed, {args.memory_molecules:,} molecules: peak RSS {run.peak_rss_bytes / 2**20:.0f} MiB, "
          f"{args.memory_molecules / run.seconds:.0f} molecules/s", flush=True)
    return {"molecules": args.memory_molecules, "source": source, "peak_rss_bytes": run.peak_rss_bytes,
            "seconds": run.seconds}


def markdown(report: dict, command: str) -> str:
    hardware, config = report["hardware"], report["config"]
    lines = [
        "## Speed", "",
        f"Written by `{command}`" + (" (**quick mode**: tiny model and inputs)." if config["quick"] else ".")
        + f" Device {hardware['device']} ({hardware['processor']}, {hardware['threads']} threads, native "
        f"bf16: {hardware['bf16_native']}); {config['molecules']} molecules from {config['source']}; "
        f"model: {config['model']}.", "",
        markdown_table(["reference", "value"], [
            ["bf16 matmul peak", f"{hardware['peak_bf16_flops'] / 1e9:,.1f} GFLOP/s"],
            ["fp32 matmul peak", f"{hardware['peak_fp32_flops'] / 1e9:,.1f} GFLOP/s"],
            *[[f"{name} featurisation", f"{rate:,.0f} molecules/s"]
              for name, rate in report["featurisers"].items()],
        ]), "",
        "`transform` molecules/s (standardising and tokenising included):", "",
    ]
    sizes = config["batch_sizes"]
    rows = []
    for embedding in ("latent", "informative"):
        for precision in ("fp32", "bf16"):
            rates = {r["batch_size"]: r["molecules_per_s"] for r in report["transform"]
                     if r["embedding"] == embedding and r["precision"] == precision}
            rows.append([embedding, precision, *[f"{rates[b]:,.0f}" for b in sizes]])
    lines += [markdown_table(["embedding", "precision", *[f"batch {b}" for b in sizes]], rows), "",
              f"`inverse_transform` molecules/s, greedy decoding of {config['decode_molecules']} "
              "molecules' latent means (batch 256):", "",
              markdown_table(["precision", "molecules/s"],
                             [[r["precision"], f"{r['molecules_per_s']:,.0f}"] for r in report["decoding"]]),
              "",
              f"Training ({config['train_molecules']} molecules, batch {config['train_batch_size']}, "
              "last of 2 epochs):", ""]
    rows = [[r["precision"], f"{r['molecules_per_s']:,.0f}", f"{r['tokens_per_s']:,.0f}",
             f"{r['model_flops'] / 1e9:,.2f}", f"{100 * r['fraction_of_bf16_peak']:.1f}%"]
            for r in report["training"]]
    lines += [markdown_table(["precision", "molecules/s", "tokens/s", "model GFLOP/s",
                              "of bf16 matmul peak"], rows), ""]
    memory = report["memory"]
    rate = memory["molecules"] / memory["seconds"]
    lines += [f"Peak resident memory of `cmim embed` streaming {memory['molecules']:,} molecules "
              f"({memory['source']}) to a .npy file, informative embeddings, in chunks of 10,000: "
              f"**{memory['peak_rss_bytes'] / 2**20:,.0f} MiB** ({rate:,.0f} molecules/s, "
              "start-up included)."]
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="bundled model name or directory (default: a fresh default model)")
    parser.add_argument("--molecules", type=int, default=4096, help="MOSES test molecules to embed")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--decode-molecules", type=int, default=1024,
                        help="MOSES test molecules whose latent means are decoded")
    parser.add_argument("--train-molecules", type=int, default=2048)
    parser.add_argument("--train-batch-size", type=int, default=64)
    parser.add_argument("--memory-molecules", type=int, default=100_000,
                        help="molecules streamed through cmim embed for the peak-memory figure")
    parser.add_argument("--device", help="default: cuda, then mps, then cpu")
    parser.add_argument("--out", type=Path, help="JSON (default docs/benchmarks)")
    parser.add_argument("--markdown", type=Path, help=f"report to update (default {DOCS_MARKDOWN})")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny model, 64 molecules")
    args = parser.parse_args(argv)
    args.architecture = {}
    if args.quick:
        args.molecules, args.batch_sizes, args.train_molecules, args.train_batch_size = 64, [16, 64], 64, 16
        args.decode_molecules = 16
        args.memory_molecules = 500
        args.architecture = {} if args.model else QUICK_MODEL
    set_outputs(args, "speed-quick")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    command = command_line("benchmarks.performance.speed", argv)
    device = resolve_device(args.device)
    n = max(args.molecules, args.train_molecules)
    smiles, source = moses_or_esol("test.csv.gz", n)

    # A short matmul in quick mode: it only has to produce a number, not the true peak.
    size, seconds = (512, 0.2) if args.quick else (2048, 2.0)
    peak_bf16 = matmul_peak_flops(device, torch.bfloat16, size=size, min_seconds=seconds)
    peak_fp32 = matmul_peak_flops(device, torch.float32, size=size, min_seconds=seconds)
    hardware = {"device": str(device), "processor": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(), "bf16_native": bf16_supported(device),
                "peak_bf16_flops": peak_bf16, "peak_fp32_flops": peak_fp32}
    print(f"matmul peak: bf16 {peak_bf16 / 1e9:.1f}, fp32 {peak_fp32 / 1e9:.1f} GFLOP/s", flush=True)

    embed = smiles[:args.molecules]
    # Descriptors are ~100x slower than fingerprints; a quarter of the molecules gives a steady rate.
    featurisers = {"ECFP4": molecules_per_second(ECFPTransformer().transform, embed),
                   "RDKit 2D descriptors": molecules_per_second(RDKitDescriptorsTransformer().transform,
                                                                embed[:max(1, len(embed) // 4)])}
    report = {
        "config": {"quick": args.quick, "model": args.model or ("fresh tiny model" if args.quick
                                            else "fresh model, default architecture"),
                   "architecture": args.architecture, "molecules": len(embed), "source": source,
                   "batch_sizes": args.batch_sizes, "decode_molecules": args.decode_molecules,
                   "train_molecules": args.train_molecules,
                   "train_batch_size": args.train_batch_size, "command": command},
        "hardware": hardware,
        "featurisers": featurisers,
        "transform": embedding_speed(embed, args, device),
        "decoding": decoding_speed(embed[:args.decode_molecules], args, device),
        "training": training_speed(smiles[:args.train_molecules], args, device, peak_bf16),
        "memory": streaming_memory(args),
    }
    write_json(args.out / "speed.json", report)
    update_markdown_section(args.markdown, "speed", markdown(report, command))
    return report


if __name__ == "__main__":
    as_command(main)
