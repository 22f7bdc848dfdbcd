"""Threads on a busy machine: how fast fitting and embedding run when another program holds a core.

PyTorch's CPU work runs on OpenMP threads, which spin while they wait for the next piece of work
(GNU OpenMP: 300,000 spins before sleeping). On an idle machine that saves wake-ups; when another
program holds a core, a spinning thread takes the time the working ones need. This benchmark
measures three settings in fresh processes, on an idle machine and with one core kept busy by a
spinning process:

* fitting the estimator's default model (d_model 256) for one epoch on ESOL molecules, and
* embedding ESOL with the bundled ``cmim-broad`` (informative, fp32),

with one torch thread, with one per core (torch's default), with one per core and
``GOMP_SPINCOUNT=1000`` (shorter spinning, set in the environment before Python starts), and with
the package's default ``n_threads=None`` (as many threads as there are cores other programs leave
idle when the call starts). The report gives molecules/s and how far the package's default is from
the best setting of each row.

    python -m benchmarks.performance.threads
    python -m benchmarks.performance.threads --quick      # smoke run: a tiny model's fit, 32 molecules
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from benchmarks.common import (
    QUICK_MODEL,
    as_command,
    command_line,
    fmt,
    load_model,
    markdown_table,
    set_outputs,
    update_markdown_section,
    write_json,
)

SETTINGS = {  # label -> (n_threads: 0 for one per core, None for the package's choice; GOMP_SPINCOUNT)
    "1 thread": (1, None),
    "a thread per core (torch's default)": (0, None),
    "a thread per core, GOMP_SPINCOUNT=1000": (0, "1000"),
    "n_threads=None (the package's default)": (None, None),
}
DEFAULT = "n_threads=None (the package's default)"


def child(workload: str, threads: int | None, molecules: int, quick: bool) -> float:
    """One measurement in this process: molecules/s of ``workload`` (``quick``: a tiny model's fit)."""
    import torch

    from sklearn_cmim import CMIMTransformer
    from sklearn_cmim.datasets import load_esol

    smiles = load_esol()[0][:molecules]
    n_threads = torch.get_num_threads() if threads == 0 else threads
    if workload == "fit":
        architecture = QUICK_MODEL if quick else {}
        model = CMIMTransformer(**architecture, max_epochs=1, batch_size=64, random_state=0,
                                n_threads=n_threads)
        model.fit(smiles[:64])  # warm-up: first calls allocate and pick kernels
        start = time.perf_counter()
        model.fit(smiles)
    else:
        model = load_model("cmim-broad").set_params(n_threads=n_threads)
        model.transform(smiles[:32])
        start = time.perf_counter()
        model.transform(smiles)
    return len(smiles) / (time.perf_counter() - start)


@contextmanager
def busy_core(busy: bool):
    """A process that keeps one core busy while the block runs (or nothing)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        yield
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def measure(workload: str, setting: str, molecules: int, repeats: int, quick: bool = False) -> float:
    """Best molecules/s of ``repeats`` fresh processes (the machine's speed moves between runs)."""
    threads, spins = SETTINGS[setting]
    unset = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    if spins is not None:
        env["GOMP_SPINCOUNT"] = spins
    command = [sys.executable, "-m", "benchmarks.performance.threads", "--child", workload, str(threads),
               str(molecules), str(int(quick))]
    return max(float(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout)
               for _ in range(repeats))


def markdown(report: dict) -> str:
    rows = []
    for key, speeds in report["results"].items():
        best = max(speeds.values())
        rows.append([key, *(fmt(speeds[s], 0) for s in SETTINGS), f"{best / speeds[DEFAULT]:.2f}x"])
    return "\n".join([
        "## Threads on a busy machine", "",
        f"Written by `{report['command']}`. Molecules/s on {report['cpus']} CPU cores, best of "
        f"{report['repeats']} fresh processes per cell; *busy*: another process spins on one core. "
        f"Fit: the estimator's default model, one epoch over {report['molecules']} ESOL molecules; "
        f"embed: `cmim-broad` informative embeddings of the same molecules, fp32. The last column is "
        "how much slower the package's default is than the best setting of its row.", "",
        markdown_table(["workload, machine", *SETTINGS, "default against the best"], rows),
    ])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", type=int, default=512, help="ESOL molecules per workload")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per cell (the best counts)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a tiny model's fit of 32 molecules, one process each")
    parser.add_argument("--out", type=Path, help="JSON (default docs/benchmarks)")
    parser.add_argument("--markdown", type=Path, help="report to update")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        workload, threads, molecules, quick = args.child
        print(child(workload, None if threads == "None" else int(threads), int(molecules), quick == "1"))
        return {}
    workloads = ("fit", "embed")
    if args.quick:  # a fresh process per cell is most of the time: half as many cells
        args.molecules, args.repeats, workloads = 32, 1, ("fit",)
    set_outputs(args, "threads")
    results = {}
    for busy in (False, True):
        with busy_core(busy):
            for workload in workloads:
                key = f"{workload}, {'one core busy' if busy else 'idle'}"
                results[key] = {s: measure(workload, s, args.molecules, args.repeats, args.quick)
                                for s in SETTINGS}
                print(key, {s: round(v) for s, v in results[key].items()}, flush=True)
    report = {"command": command_line("benchmarks.performance.threads", argv), "cpus": os.cpu_count(),
              "molecules": args.molecules, "repeats": args.repeats, "results": results}
    write_json(args.out / "threads.json", report)
    update_markdown_section(args.markdown, "threads", markdown(report))
    return report


if __name__ == "__main__":
    as_command(main)
