"""Model FLOP utilisation of ``cmim pretrain`` on this machine, at its defaults and around them.

``cmim pretrain`` logs tokens/s and its model FLOP utilisation (MFU): achieved model FLOP/s over a
bf16 matmul's FLOP/s measured by the same process at start-up. This script runs the command
in-process for a few hundred steps on MOSES train with the default architecture, at the default
batch size and dropout and at the alternatives, and reports the last log interval of each (the
first one holds the warm-up). Everything the command does per step counts: reading and
standardising the molecules, the optimiser, the logging.

Four more runs at the defaults: one with bias terms in the blocks' layers, as models trained
before that option have them (``--bias``), one with a data worker process standardising molecules ahead of
training (``--data-workers 1``), one training from the corpus standardised and tokenised
beforehand (``--prepared``; preparing it is not timed), and one splitting the global batch over
two single-threaded processes under ``torchrun`` (DistributedDataParallel over gloo), the other
way to use two CPU cores.

The defaults run ``--repeats`` times in all (once among the settings, the rest after the others),
and the report gives their median and range: on a shared 2-core machine one run's MFU moves by
several points with the machine's speed, so a target is judged on the median.

On a GPU (``--device cuda``) the settings are GPU-sized instead: batches of 1,024 and 4,096
molecules from the prepared corpus, which data workers on all but two of the CPU cores prepare.

    python -m benchmarks.performance.pretrain_throughput                 # 300 steps per setting
    python -m benchmarks.performance.pretrain_throughput --device cuda   # the GPU settings
    python -m benchmarks.performance.pretrain_throughput --quick         # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import (
    DOCS_MARKDOWN,
    MOSES,
    QUICK_MODEL,
    as_command,
    command_line,
    markdown_table,
    set_outputs,
    update_markdown_section,
    write_json,
)
from sklearn_cmim.cli.pretrain import build_parser
from sklearn_cmim.cli.pretrain import main as pretrain
from sklearn_cmim.datasets import load_esol
from sklearn_cmim.nn.device import resolve_precision
from sklearn_cmim.persistence import load_pretrained

SETTINGS = [(64, 0.1), (64, 0.0), (128, 0.1), (128, 0.0)]  # (batch size, dropout)
GPU_BATCH_SIZES = [1024, 4096]  # dropout 0, from the prepared corpus


def flags_for(corpus: Path, output: Path, batch_size: int, dropout: float, steps: int,
              options: dict, data_workers: int = 0, bias: bool = False, device: str = "cpu",
              prepared: Path | None = None) -> list[str]:
    flags = [str(corpus), "--output", str(output), "--max-steps", str(steps),
             "--log-every", str(max(1, steps // 3)), "--batch-size", str(batch_size),
             "--dropout", str(dropout), "--validation-size", "16", "--vocab-records", "5000",
             "--checkpoint-every-steps", str(steps), "--device", device, "--precision", "auto",
             "--data-workers", str(data_workers), "--bias" if bias else "--no-bias"]
    if prepared is not None:
        flags += ["--prepared", str(prepared)]
    for name, value in options.items():
        flags += ["--" + name.replace("_", "-"), str(value)]
    return flags


def last_record(output: Path, launch: str, batch_size: int, dropout: float, prepared: bool = False) -> dict:
    """The run's last log record: global molecules and tokens per second, MFU per process."""
    metadata = load_pretrained(output).metadata
    last = metadata["training_log"][-1]
    record = {"launch": launch, "batch_size": batch_size, "dropout": dropout,
              "molecules_per_s": last["molecules_per_s"], "tokens_per_s": last["tokens_per_s"],
              "peak_flops": metadata["pretraining"]["matmul_peak_flops"], "mfu": last["mfu"],
              "bias": metadata["pretraining"]["arguments"]["bias"], "prepared": prepared}
    print(f"{launch}, batch {batch_size}, dropout {dropout}: {record['molecules_per_s']:.0f} molecules/s, "
          f"{record['tokens_per_s']:,.0f} tokens/s, peak {record['peak_flops'] / 1e9:.0f} GFLOP/s, "
          f"MFU {100 * record['mfu']:.1f}%", flush=True)
    return record


def run(corpus: Path, batch_size: int, dropout: float, steps: int, options: dict, workdir: Path,
        data_workers: int = 0, bias: bool = False, device: str = "cpu", prepared: bool = False) -> dict:
    """One short ``cmim pretrain`` run in this process (``prepared``: from ``workdir/corpus.npz``,
    which the first such run writes before its timed steps)."""
    output = workdir / f"b{batch_size}-d{dropout}-w{data_workers}-bias{int(bias)}-p{int(prepared)}"
    flags = flags_for(corpus, output, batch_size, dropout, steps, options, data_workers, bias,
                      device, workdir / "corpus.npz" if prepared else None)
    with contextlib.redirect_stdout(io.StringIO()):
        status = pretrain(flags)
    if status:
        raise RuntimeError(f"cmim pretrain {' '.join(flags)} exited with status {status}")
    if device == "cuda":
        launch = f"1 process on {torch.cuda.get_device_name()}"
    else:
        threads = torch.get_num_threads()
        launch = f"1 process x {threads} thread{'s' if threads > 1 else ''}"
    if data_workers and not prepared:
        launch += f" + {data_workers} data worker{'s' if data_workers > 1 else ''}"
    if bias:
        launch += ", bias terms (--bias)"
    if prepared:
        launch += ", prepared corpus (--prepared)"
    return last_record(output, launch, batch_size, dropout, prepared)


def run_torchrun(corpus: Path, batch_size: int, dropout: float, steps: int, options: dict,
                 workdir: Path) -> dict:
    """The same run as two single-threaded DDP processes, each with half the batch."""
    output = workdir / "torchrun"
    flags = flags_for(corpus, output, batch_size // 2, dropout, steps, options)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "sklearn_cmim.cli.pretrain", *flags]
    job = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                         text=True, timeout=3600)
    if job.returncode:
        raise RuntimeError(f"{' '.join(command)} exited with status {job.returncode}:\n{job.stderr}")
    return last_record(output, "torchrun: 2 processes x 1 thread", batch_size, dropout)


def cpu_runs(corpus: Path, defaults, steps: int, options: dict, workdir: Path,
             repeats: int = 1) -> list[dict]:
    """The CPU settings, then the defaults with biases, with a data worker, from the prepared
    corpus (prepared by a worker per core) and under torchrun, then the defaults again until
    they have run ``repeats`` times. Plain runs at the defaults are marked ``defaults``."""
    def plain(batch, dropout, repeat=0):
        record = run(corpus, batch, dropout, steps, options, workdir / f"repeat{repeat}")
        return {**record, "defaults": (batch, dropout) == (defaults.batch_size, defaults.dropout)}

    runs = [plain(batch, dropout) for batch, dropout in SETTINGS]
    runs.append(run(corpus, defaults.batch_size, defaults.dropout, steps, options, workdir, bias=True))
    runs.append(run(corpus, defaults.batch_size, defaults.dropout, steps, options, workdir,
                    data_workers=1))
    runs.append(run(corpus, defaults.batch_size, defaults.dropout, steps, options, workdir,
                    data_workers=os.cpu_count() or 1, prepared=True))
    runs.append(run_torchrun(corpus, defaults.batch_size, defaults.dropout, steps, options, workdir))
    for repeat in range(1, repeats):
        runs.append(plain(defaults.batch_size, defaults.dropout, repeat))
    return [{"defaults": False, **record} for record in runs]


def defaults_summary(runs: list[dict]) -> dict:
    """Median and range of the plain runs at the defaults."""
    mfu = [r["mfu"] for r in runs if r["defaults"]]
    rates = [r["molecules_per_s"] for r in runs if r["defaults"]]
    return {"runs": len(mfu), "mfu_median": float(np.median(mfu)), "mfu_min": min(mfu),
            "mfu_max": max(mfu), "molecules_per_s_median": float(np.median(rates))}


def markdown(report: dict) -> str:
    config = report["config"]
    rows = [[r["launch"], r["batch_size"], r["dropout"], f"{r['molecules_per_s']:.0f}",
             f"{r['tokens_per_s']:,.0f}", f"{r['peak_flops'] / 1e9:.0f}", f"{100 * r['mfu']:.1f}%",
             "yes" if r["defaults"] else ""]
            for r in report["runs"]]
    gpu = config["device"] == "cuda"
    summary = report.get("defaults_summary")  # CPU runs only
    median = [] if summary is None else [
        f"The defaults ({summary['runs']} runs in this process, one among the settings and the rest "
        f"after the others): median MFU **{100 * summary['mfu_median']:.1f}%** (from "
        f"{100 * summary['mfu_min']:.1f}% to {100 * summary['mfu_max']:.1f}%), median "
        f"{summary['molecules_per_s_median']:.0f} molecules/s."]
    return "\n\n".join([
        "## Pretraining throughput and model FLOP utilisation" + (" on a GPU" if gpu else ""),
        f"Written by `{config['command']}`. "
        + (f"{config['device_name']}, {config['data_workers']} data workers" if gpu
           else f"{config['threads']} threads")
        + f", {config['precision']}{' autocast' if config['precision'] == 'bf16' else ''}, "
        f"{config['steps']} steps per setting on {config['source']}; the last "
        f"{config['steps'] // 3} steps are measured (the log interval that holds no warm-up). MFU: "
        "model FLOP/s over the bf16 matmul FLOP/s each process measures at start-up, as "
        "`cmim pretrain` logs it. Model FLOPs are those of every matmul of a training pass over the "
        "real tokens (`CMIMModel.training_flops`, equal to PyTorch's own FLOP counter); the peak "
        "differs from process to process on a shared machine, and MFU moves with it. The batch size "
        "is the global one; under torchrun each process takes half of it.",
        markdown_table(["launch", "batch size", "dropout", "molecules/s", "tokens/s",
                        "peak GFLOP/s (per process)", "MFU", "the defaults"], rows),
        *median,
    ])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, help="JSON (default docs/benchmarks)")
    parser.add_argument("--markdown", type=Path, help=f"report to update (default {DOCS_MARKDOWN})")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny model, 6 steps")
    parser.add_argument("--repeats", type=int, default=3, help="runs at the defaults (CPU), at least 1")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: the GPU settings (GPU_BATCH_SIZES), measured on the first GPU")
    args = parser.parse_args(argv)
    command = command_line("benchmarks.performance.pretrain_throughput", argv)
    architecture = QUICK_MODEL if args.quick else {}
    # Command-line options beyond the defaults. The smoke run's 6 steps read 768 molecules: a
    # pool of 2 batches spares standardising 6,400 per run for a pool it never uses.
    options = {**architecture, "pool_batches": 2} if args.quick else {}
    if args.quick:
        args.steps = 6
    set_outputs(args, "pretrain-throughput-quick")
    defaults = build_parser().parse_args(["corpus", "--output", "out"])
    data_workers = max(1, (os.cpu_count() or 1) - 2)

    with tempfile.TemporaryDirectory() as tmp:
        corpus, source = MOSES / "train.csv.gz", "MOSES train"
        # The smoke run reads ESOL even where MOSES is: its prepared row would encode all of MOSES.
        if args.quick or not corpus.exists():
            corpus = Path(tmp, "esol.smi")
            source = "bundled ESOL" + ("" if args.quick else " (MOSES not found)")
            corpus.write_text("\n".join(load_esol()[0]) + "\n")
        if args.device == "cuda":
            runs = [{**run(corpus, batch, defaults.dropout, args.steps, options, Path(tmp), data_workers,
                           device="cuda", prepared=True), "defaults": False} for batch in GPU_BATCH_SIZES]
        else:
            runs = cpu_runs(corpus, defaults, args.steps, options, Path(tmp), max(1, args.repeats))
    # What `cmim pretrain` trains in by default: bf16 autocast where the hardware has it natively.
    precision = resolve_precision("auto", torch.device(args.device))
    report = {"config": {"command": command, "threads": torch.get_num_threads(), "steps": args.steps,
                         "precision": precision,
                         "source": source, "architecture": architecture, "device": args.device,
                         "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                         "data_workers": data_workers if args.device == "cuda" else 0,
                         "defaults": [defaults.batch_size, defaults.dropout]},
              "runs": runs}
    if args.device == "cpu":
        report["defaults_summary"] = defaults_summary(runs)
    suffix = "_cuda" if args.device == "cuda" else ""
    write_json(args.out / f"pretrain_throughput{suffix}.json", report)
    update_markdown_section(args.markdown, "pretrain-throughput" + suffix.replace("_", "-"), markdown(report))
    return report


if __name__ == "__main__":
    as_command(main)
