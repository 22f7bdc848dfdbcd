"""Memory of CPU training: glibc's heap untrimmed, trimmed by the trainers, or mapped block by block.

Batches of varying length free and allocate tensors of ever other sizes, and glibc keeps the freed
blocks for reuse that rarely fits, so a long CPU run grows until the kernel stops it. The trainers
(``CMIMTransformer.fit``, ``cmim pretrain``) hand that memory back every 5 seconds
(``sklearn_cmim.nn.device.HeapTrimmer``). This benchmark trains the same model on the same
molecules, one epoch in a fresh process per variant:

* untrimmed: glibc's defaults, the trimmer switched off;
* trimmed: the trainers' default;
* mmap threshold: the trimmer off and ``MALLOC_MMAP_THRESHOLD_=65536``, the usual remedy (every
  block above 64 KiB gets its own mapping, handed back when freed).

It reports seconds per step, the kernel's CPU time (page faults and mappings), the peak resident
memory and the median resident memory over the epoch's second half, each against the untrimmed
process.

    python -m benchmarks.performance.heap_memory                 # cmim-broad's size, batch 512, 60 steps
    python -m benchmarks.performance.heap_memory --steps 20 --batch-size 256
    python -m benchmarks.performance.heap_memory --quick         # smoke run: a tiny model (seconds)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.common import (
    BROAD,
    QUICK_MODEL,
    as_command,
    command_line,
    fmt,
    markdown_table,
    moses_or_esol,
    set_outputs,
    smiles_rows,
    update_markdown_section,
    write_json,
)

VARIANTS = {  # label -> (the trimmer's interval in seconds, extra environment)
    "untrimmed": (float("inf"), {}),
    "trimmed": (5.0, {}),
    "mmap threshold": (float("inf"), {"MALLOC_MMAP_THRESHOLD_": "65536"}),
}
BASELINE = "untrimmed"
MODEL = "cmim-broad"


def molecules(n: int, quick: bool, seed: int = 0) -> tuple[list[str], str]:
    """``n`` molecules spread over the broad corpus (the bundled models' long and varied ones), or,
    for ``quick`` or where it is absent, MOSES or bundled ESOL."""
    if BROAD.exists() and not quick:
        rows = list(smiles_rows(BROAD))
        chosen = np.sort(np.random.default_rng(seed).choice(len(rows), min(n, len(rows)), replace=False))
        return [rows[i] for i in chosen], "the broad corpus"
    return moses_or_esol("train.csv.gz", n)


def architecture(quick: bool) -> dict:
    """A tiny model for ``quick``, else the bundled model's size."""
    if quick:
        return {**QUICK_MODEL, "max_length": 256}
    from sklearn_cmim import CMIMTransformer
    from sklearn_cmim.persistence import resolve_pretrained

    config = json.loads((resolve_pretrained(MODEL) / "config.json").read_text())["model"]
    params = CMIMTransformer().get_params()
    return {key: value for key, value in config.items() if key in params}


class ResidentMemory:
    """Samples this process's resident memory every ``every`` seconds in a thread."""

    def __init__(self, every: float = 0.1):
        self.every, self.samples = every, []
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with open("/proc/self/statm") as statm:
            while not self.stop.wait(self.every):
                statm.seek(0)
                self.samples.append(int(statm.read().split()[1]) * self.page)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def peak_resident() -> int:
    """This process's peak resident memory in bytes. The kernel's high-water mark of the process's
    own memory (VmHWM), not ``ru_maxrss``, which a child starts at its parent's peak."""
    with open("/proc/self/status") as status:
        kilobytes = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    return int(kilobytes) * 1024


def child(variant: str, config: dict) -> dict:
    """One variant in this process: train one epoch and measure it."""
    import resource

    import torch

    from sklearn_cmim import CMIMTransformer
    from sklearn_cmim.nn.device import HeapTrimmer
    from sklearn_cmim.training import fit

    trims = []
    every = VARIANTS[variant][0]
    if variant == "trimmed" and config["every"] is not None:
        every = config["every"]

    class Counted(HeapTrimmer):  # the trainer's trimmer, at this variant's interval, counting its trims
        def __call__(self):
            last = self.last
            super().__call__()
            if self.last != last:
                trims.append(self.last)

    fit.HeapTrimmer = partial(Counted, every=every)
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    smiles = config["smiles"]
    # errors="nan": a rare molecule past max_length is left out rather than ending the run
    model = CMIMTransformer(**config["architecture"], batch_size=config["batch_size"], max_epochs=1,
                            errors="nan", random_state=0)
    before = resource.getrusage(resource.RUSAGE_SELF)
    with ResidentMemory() as memory:
        model.fit(smiles)
    after = resource.getrusage(resource.RUSAGE_SELF)
    second_half = memory.samples[len(memory.samples) // 2:] or [0]
    epoch = model.history_[-1]
    steps = math.ceil(round(epoch["molecules_per_s"] * epoch["seconds"]) / config["batch_size"])
    return {"seconds_per_step": epoch["seconds"] / steps, "steps": steps,
            "system_cpu_s": after.ru_stime - before.ru_stime,
            "peak_rss_bytes": peak_resident(),
            "median_rss_bytes": float(np.median(second_half)),
            "trims": len(trims), "trim_every_s": None if math.isinf(every) else every,
            "threads": torch.get_num_threads(),
            "mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_")}


def measure(variant: str, config_path: Path) -> dict:
    """Run ``variant`` in a fresh process, under its own environment and nothing inherited of glibc's."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    env.update(VARIANTS[variant][1])
    command = [sys.executable, "-m", "benchmarks.performance.heap_memory", "--child", variant,
               str(config_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the {variant} process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(report: dict) -> str:
    base, every = report["results"][BASELINE], report["results"]["trimmed"]["trim_every_s"]
    rows = []
    for variant, result in report["results"].items():
        rows.append([variant, fmt(result["seconds_per_step"], 2),
                     f"{result['seconds_per_step'] / base['seconds_per_step']:.2f}x",
                     fmt(result["system_cpu_s"], 1), fmt(result["peak_rss_bytes"] / 1e9, 1),
                     f"{result['peak_rss_bytes'] / base['peak_rss_bytes']:.2f}x",
                     fmt(result["median_rss_bytes"] / 1e9, 1), result["trims"]])
    return "\n".join([
        "## Memory of CPU training: heap trimming", "",
        f"Written by `{report['command']}`. One epoch of {report['steps']} steps of "
        f"{report['batch_size']} molecules from {report['source']} ({report['model']}), "
        f"{report['threads']} threads, a fresh process per variant. *Untrimmed*: glibc's defaults; "
        f"*trimmed*: the trainers' `malloc_trim` every {every:g} s "
        f"({'the default' if every == 5 else 'the default is 5'}); *mmap threshold*: "
        "`MALLOC_MMAP_THRESHOLD_=65536` instead. Kernel CPU: the process's system time, spent on page "
        "faults and mappings. Median memory: over the epoch's second half.", "",
        markdown_table(["variant", "s/step", "against untrimmed", "kernel CPU s", "peak memory, GB",
                        "against untrimmed", "median memory, GB", "trims"], rows),
    ])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a tiny model, 8 steps of 32, trimming after every step")
    parser.add_argument("--out", type=Path, help="JSON (default docs/benchmarks)")
    parser.add_argument("--markdown", type=Path, help="report to update")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        variant, config_path = args.child
        print(json.dumps(child(variant, json.loads(Path(config_path).read_text()))))
        return {}
    if args.quick:
        args.steps, args.batch_size = 8, 32
    set_outputs(args, "heap-memory")
    smiles, source = molecules(args.steps * args.batch_size, args.quick)
    config = {"smiles": smiles, "batch_size": args.batch_size,
              "architecture": architecture(args.quick), "threads": args.threads,
              "every": 0.0 if args.quick else None}
    config_path = args.out / "heap-memory-config.json"
    write_json(config_path, config)
    results = {}
    try:
        for variant in VARIANTS:
            results[variant] = measure(variant, config_path)
            print(variant, results[variant], flush=True)
    finally:
        config_path.unlink()
    base = results[BASELINE]
    report = {"command": command_line("benchmarks.performance.heap_memory", argv), "source": source,
              "model": "a tiny model" if args.quick else f"{MODEL}'s size", "steps": base["steps"],
              "batch_size": args.batch_size, "threads": base["threads"], "results": results}
    write_json(args.out / "heap_memory.json", report)
    update_markdown_section(args.markdown, "heap-memory", markdown(report))
    return report


if __name__ == "__main__":
    as_command(main)
