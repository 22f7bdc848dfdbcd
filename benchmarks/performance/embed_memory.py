"""Peak memory and speed of ``cmim embed`` on a large SMILES file, measured in a child process.

Writes N SMILES (MOSES training molecules, repeated if N is larger than the set; the bundled
ESOL molecules if MOSES is absent) to a temporary .smi file, runs ``cmim embed`` on it in a child
process and reports the child's peak resident memory, its wall time and molecules per second.
A run on 100 molecules first gives the baseline: the memory and time of starting Python, torch
and RDKit and loading the model, which the streamed molecules add to.

    python -m benchmarks.performance.embed_memory                        # 1,000,000 molecules, a small model
    python -m benchmarks.performance.embed_memory --n 20000 --model cmim-broad --embedding latent
    python -m benchmarks.performance.embed_memory --quick                # smoke run: 2,000 molecules, seconds
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import (
    DOCS_MARKDOWN,
    MOSES,
    as_command,
    command_line,
    markdown_table,
    set_outputs,
    smiles_rows,
    update_markdown_section,
    write_json,
)

MOSES_TRAIN = MOSES / "train.csv.gz"
CLI = ["-c", "from sklearn_cmim.cli import main; raise SystemExit(main())", "embed"]
# ru_maxrss is in kilobytes on Linux and in bytes on macOS.
RSS_UNIT = 1 if sys.platform == "darwin" else 1024
MIB = 2**20


def molecules() -> tuple[Iterator[str], str]:
    """An endless stream of SMILES, and where they come from."""
    if MOSES_TRAIN.exists():
        def moses():
            while True:
                yield from smiles_rows(MOSES_TRAIN)
        return moses(), "MOSES train"
    from sklearn_cmim.datasets import load_esol
    return itertools.cycle(load_esol()[0]), "bundled ESOL (MOSES not found)"


def write_smiles(path: Path, n: int) -> str:
    """Write ``n`` SMILES to ``path``, one a line; returns where they came from."""
    stream, source = molecules()
    with open(path, "w") as handle:
        handle.writelines(f"{smiles}\n" for smiles in itertools.islice(stream, n))
    return source


# Runs the command it is given and prints the command's exit status, peak resident memory
# (ru_maxrss) and wall time. Linux starts a process's ru_maxrss at its parent's peak when it execs
# a program, so a child measured straight from a big process (this script after training a
# model, or pytest) would seem to peak at least as high as that parent; started from this small
# go-between, it counts only its own memory.
MEASURE = """
import os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
child.returncode = os.waitstatus_to_exitcode(status)
print(child.returncode, usage.ru_maxrss, time.perf_counter() - start)
"""


@dataclass
class Run:
    returncode: int
    peak_rss_bytes: int
    seconds: float
    stderr: str


def run_embed(source: Path, output: Path, model: str | os.PathLike, chunk_size: int = 10_000,
              *options: str) -> Run:
    """``cmim embed SOURCE --output OUTPUT --model MODEL`` in a child process, measured."""
    command = [sys.executable, *CLI, str(source), "--output", str(output), "--model", str(model),
               "--chunk-size", str(chunk_size), *options]
    done = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True,
                          check=True)
    returncode, peak, seconds = done.stdout.split()
    return Run(int(returncode), int(peak) * RSS_UNIT, float(seconds), done.stderr)


def train_small_model(directory: Path, epochs: int = 1) -> Path:
    """A small model trained from scratch on 512 molecules in a few seconds; with ``epochs=0``
    only its vocabulary is learned, which is all its memory and speed depend on."""
    from sklearn_cmim import CMIMTransformer

    stream, _ = molecules()
    est = CMIMTransformer(d_model=64, n_heads=4, d_ff=128, n_encoder_layers=1, n_decoder_layers=2,
                          n_latents=4, latent_dim=16, max_epochs=epochs, batch_size=32, random_state=0)
    return est.fit(list(itertools.islice(stream, 512))).save_pretrained(directory)


def measure(args) -> dict:
    """``cmim embed`` on 100 molecules (the start-up baseline), then on ``args.n``."""
    options = ["--embedding", args.embedding, "--batch-size", str(args.batch_size),
               "--precision", args.precision, "--errors", "nan"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or train_small_model(tmp / "model", epochs=0 if args.quick else 1)
        made = "small, untrained" if args.quick else "small, trained here"
        results = {"quick": args.quick, "n": args.n, "chunk_size": args.chunk_size,
                   "embedding": args.embedding, "model": str(args.model or made),
                   "threads": os.environ.get("OMP_NUM_THREADS", "torch default")}
        for label, n in (("baseline", 100), ("run", args.n)):
            source = tmp / f"{label}.smi"
            results["source"] = write_smiles(source, n)
            run = run_embed(source, tmp / f"{label}.npy", model, args.chunk_size, *options)
            if run.returncode != 0:
                sys.exit(f"cmim embed failed on {n} molecules:\n{run.stderr}")
            results[label] = {"molecules": n, "peak_rss_bytes": run.peak_rss_bytes,
                              "seconds": run.seconds, "molecules_per_s": n / run.seconds,
                              "output_bytes": (tmp / f"{label}.npy").stat().st_size}
    base, run = results["baseline"], results["run"]
    results["molecules_per_s_after_startup"] = (args.n - 100) / max(run["seconds"] - base["seconds"], 1e-9)
    return results


def markdown(results: dict) -> str:
    base, run = results["baseline"], results["run"]
    rows = [[label, f"{r['molecules']:,}", f"{r['peak_rss_bytes'] / MIB:,.0f}", f"{r['seconds']:.1f}",
             f"{r['molecules_per_s']:,.0f}", f"{r['output_bytes'] / MIB:,.1f}"]
            for label, r in (("baseline", base), ("run", run))]
    quick = " (**quick mode**: a small file; the numbers mean little)" if results["quick"] else ""
    return "\n".join([
        "## Memory of `cmim embed` on a large file", "",
        f"Written by `{results['command']}`{quick}. `cmim embed` in a child process on molecules from "
        f"{results['source']}, {results['embedding']} embeddings of {results['model']}, chunks of "
        f"{results['chunk_size']:,}, threads: {results['threads']}; the 100-molecule baseline is the cost "
        "of starting Python, torch and RDKit and loading the model.", "",
        markdown_table(["run", "molecules", "peak RSS (MiB)", "seconds", "molecules/s", "output (MiB)"],
                       rows), "",
        f"Streaming {run['molecules']:,} molecules added "
        f"**{(run['peak_rss_bytes'] - base['peak_rss_bytes']) / MIB:,.0f} MiB** to the baseline's peak, at "
        f"{results['molecules_per_s_after_startup']:,.0f} molecules/s after start-up.",
    ])


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="molecules to embed")
    parser.add_argument("--model", help="model name or directory (default: a small model trained here)")
    parser.add_argument("--embedding", choices=("informative", "latent"), default="informative")
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    parser.add_argument("--out", type=Path, help="JSON (default docs/benchmarks)")
    parser.add_argument("--markdown", type=Path, help=f"report to update (default {DOCS_MARKDOWN})")
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke run: 2,000 molecules in chunks of 256, an untrained small model")
    args = parser.parse_args(argv)
    if args.quick:  # several chunks, so the streaming is what runs
        args.n, args.chunk_size = 2000, 256
    set_outputs(args, "embed-memory-quick")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    results = {"command": command_line("benchmarks.performance.embed_memory", argv), **measure(args)}
    base, run = results["baseline"], results["run"]
    print(f"{args.n:,} molecules from {results['source']}, {args.embedding} embeddings of "
          f"{results['model']}, chunks of {args.chunk_size:,}, "
          f"threads: {results['threads']}")
    print(f"baseline (100 molecules): peak RSS {base['peak_rss_bytes'] / MIB:.0f} MiB, "
          f"{base['seconds']:.1f} s")
    print(f"peak RSS {run['peak_rss_bytes'] / MIB:.0f} MiB "
          f"(+{(run['peak_rss_bytes'] - base['peak_rss_bytes']) / MIB:.0f} MiB over the baseline), "
          f"{run['seconds']:.1f} s, {run['molecules_per_s']:.0f} molecules/s "
          f"({results['molecules_per_s_after_startup']:.0f} after start-up), "
          f"output {run['output_bytes'] / MIB:.0f} MiB")
    write_json(args.out / "embed_memory.json", results)
    update_markdown_section(args.markdown, "embed-memory", markdown(results))
    return results


if __name__ == "__main__":
    as_command(main)
