"""chemprop v2 trained per task on the committed scaffold splits and in random CV: the peer that
learns its own features, beside the frozen feature sets with small heads of ``learning_curve --test``.

For each dataset and seed, ``chemprop train`` runs with its defaults (D-MPNN, 50 epochs, the
checkpoint of best validation loss) on the split's train part, with its valid part for that
choice, and predicts the test part. The predictions are scored here with the metric and bootstrap
error bar of the other rows. With ``--random-cv`` it trains instead on each fold of
``learning_curve --random-cv``'s random 5-fold CV (the same folds), a tenth of the training folds
held back as its valid part, with the fold's seed. Training time is the CPU time of the chemprop
process (its threads summed), so under ``OMP_NUM_THREADS=1`` it is one thread's seconds whatever
else runs. chemprop is the ``bench`` extra; without it the script says so and skips.

    OMP_NUM_THREADS=1 python -m benchmarks.evaluation.chemprop_peer --seeds 0 1 2
    OMP_NUM_THREADS=1 python -m benchmarks.evaluation.chemprop_peer --random-cv --seeds 0
    python -m benchmarks.evaluation.chemprop_peer --quick    # 3 epochs, 100 ESOL molecules per part
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import (
    as_command,
    at_least,
    command_line,
    fmt,
    markdown_table,
    mean_std,
    set_outputs,
    update_markdown_section,
    write_json,
)
from benchmarks.evaluation.candidates import commands_of
from benchmarks.evaluation.downstream import (
    CORE,
    DATASETS,
    bootstrap_std,
    committed_split,
    load_dataset,
    molecule_groups,
    murcko_scaffolds,
    random_cv_folds,
    readable_labelled,
    test_metric,
)

LABEL = "chemprop (trained per task)"
PARTS = ("train", "valid", "test")


def random_cv_splits(name: str, folds: int, seed: int) -> list[dict[str, list[int]]]:
    """Random CV's folds as train/valid/test row lists: the test fold, and the other folds less a
    random tenth kept as the valid part on which chemprop chooses its checkpoint."""
    smiles, labels, _ = load_dataset(name)
    task = DATASETS[name].task
    rng = np.random.default_rng(seed)
    out = []
    labelled = readable_labelled(murcko_scaffolds(smiles), labels)
    for _, train, test in random_cv_folds(labelled, labels, task, folds, [seed], molecule_groups(smiles)):
        valid = np.isin(train, rng.choice(train, len(train) // 10, replace=False))
        out.append({"train": train[~valid].tolist(), "valid": train[valid].tolist(), "test": test.tolist()})
    return out


def write_parts(name: str, directory: Path, limit: int | None,
                split: dict[str, list[int]] | None = None) -> dict[str, np.ndarray]:
    """The split's parts (by default the committed scaffold split) as chemprop's input CSVs
    (SMILES, label) in ``directory``; their labels."""
    smiles, labels, _ = load_dataset(name)
    split = split or committed_split(name)
    out = {}
    for part in PARTS:
        rows = [i for i in split[part] if np.isfinite(labels[i, 0])][:limit]
        with open(directory / f"{part}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["smiles", "label"])
            writer.writerows([smiles[i], labels[i, 0]] for i in rows)
        out[part] = labels[rows, 0]
    return out


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train(name: str, seed: int, epochs: int, limit: int | None, split: dict | None = None) -> dict:
    """One chemprop model: its test score, bootstrap std and training CPU seconds."""
    task = DATASETS[name].task
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        labels = write_parts(name, directory, limit, split)
        # The console script of this interpreter's environment, not whichever chemprop is on PATH.
        command = [str(Path(sys.executable).with_name("chemprop")), "train",
                   "--data-path", *(str(directory / f"{part}.csv") for part in PARTS),
                   "--task-type", task, "--epochs", str(epochs), "--pytorch-seed", str(seed),
                   "--data-seed", str(seed), "--output-dir", str(directory / "out")]
        before = children_cpu_s()
        with open(directory / "log.txt", "w") as log:
            finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
        cpu_s = children_cpu_s() - before
        if finished.returncode:
            raise RuntimeError(f"chemprop failed on {name}:\n{(directory / 'log.txt').read_text()[-3000:]}")
        with open(directory / "out" / "model_0" / "test_predictions.csv", newline="") as handle:
            prediction = np.array([float(row["label"]) for row in csv.DictReader(handle)])
    y = labels["test"]
    if len(prediction) != len(y):  # chemprop drops no molecule that RDKit reads; say so if it did
        raise RuntimeError(f"chemprop predicted {len(prediction)} of {len(y)} test molecules of {name}")
    return {"seed": seed, "test": test_metric(task, y, prediction),
            "bootstrap_std": bootstrap_std(task, [(y, prediction)], 200), "train_cpu_s": cpu_s,
            "molecules": len(labels["train"]) + len(labels["valid"]), "test_molecules": len(y)}


def summary(runs: list[dict]) -> dict:
    """Seeds pooled, in the row format of ``learning_curve``'s report so that it can include it."""
    test, seed_std = mean_std([run["test"] for run in runs])
    return {"head": "chemprop", "test": test, "seed_std": seed_std,
            "bootstrap_std": float(np.mean([run["bootstrap_std"] for run in runs])),
            "head_cpu_s": float(np.mean([run["train_cpu_s"] for run in runs])),
            "molecules": runs[0]["molecules"], "test_molecules": runs[0]["test_molecules"], "seeds": runs}


def fold_summary(runs: list[dict]) -> dict:
    """Random-CV folds pooled, as ``learning_curve`` pools a feature set's: mean ± std over the test
    folds, and training time summed over the folds with the training molecules they read."""
    test, std = mean_std([run["test"] for run in runs])
    return {"test": test, "std": std, "folds": [run["test"] for run in runs],
            "heads": ["chemprop"] * len(runs),
            "head_cpu_s": sum(run["train_cpu_s"] for run in runs),
            "molecules": sum(run["molecules"] for run in runs), "runs": runs}


def markdown(row: dict) -> str:
    config, commands = row["config"], commands_of(row)
    lines = [
        "## chemprop trained per task", "",
        f"chemprop {config['chemprop']} with its defaults (D-MPNN, {config['epochs']} epochs, the "
        "checkpoint of best validation loss), scored with the metric of the feature sets' rows. Training "
        f"time: CPU seconds of the chemprop process at {config['threads']} (Python start-up and "
        "featurisation included)."
        + (" **Quick mode**: the numbers mean nothing." if config["quick"] else ""),
    ]
    if "scaffold" in row:
        rows = []
        for name, result in row["scaffold"].items():
            rows.append([DATASETS[name].heading, len(result["seeds"]),
                         f"{fmt(result['test'])} ± {fmt(result['seed_std'])}", fmt(result["bootstrap_std"]),
                         ", ".join(fmt(run["test"]) for run in result["seeds"]),
                         f"{result['head_cpu_s']:,.0f}",
                         f"{1000 * result['head_cpu_s'] / result['molecules']:.0f}"])
        lines += ["", "### Scaffold split", "",
                  f"Written by `{commands['scaffold'][-1]}`. Trained on each task's train part, its "
                  "checkpoint chosen on the valid part, scored on the test part of the same committed "
                  "scaffold split as the feature sets; the mean over seeds ± the standard deviation over "
                  "seeds, and the mean bootstrap std over test molecules; training time is the mean over "
                  "seeds.", "",
                  markdown_table(["task", "seeds", "test, mean ± seed std", "bootstrap std", "per seed",
                                  "training CPU s", "ms per training molecule"], rows)]
    if "random_cv" in row:
        rows = []
        for name, result in row["random_cv"].items():
            rows.append([DATASETS[name].heading, len(result["folds"]),
                         f"{fmt(result['test'])} ± {fmt(result['std'])}",
                         ", ".join(fmt(score) for score in result["folds"]), f"{result['head_cpu_s']:,.0f}",
                         f"{1000 * result['head_cpu_s'] / result['molecules']:.0f}"])
        lines += ["", "### Random CV", "",
                  f"Written by `{commands['random_cv'][-1]}`. Trained on the training folds of each of the "
                  "feature sets' random-CV folds less a random tenth, on which its checkpoint is chosen, and "
                  "scored on the test fold; the mean ± the standard deviation over the test folds; training "
                  "time summed over the folds.", "",
                  markdown_table(["task", "folds", "test, mean ± fold std", "per fold", "training CPU s",
                                  "ms per training molecule"], rows)]
    return "\n".join(lines)


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # Single-task sets only: the parts hold one label column, so a multi-task set (ClinTox, Tox21)
    # would be scored on its first task beside the feature sets' mean over all of them.
    parser.add_argument("--datasets", nargs="+", default=CORE, choices=CORE)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--random-cv", action="store_true",
                        help="train on random-CV folds (a run per fold and seed), not the scaffold split")
    parser.add_argument("--folds", type=at_least(2), default=5, help="random-CV folds")
    parser.add_argument("--epochs", type=at_least(3), default=50, help="chemprop's default")
    parser.add_argument("--out", type=Path, help="folder of chemprop.json (default: docs/benchmarks)")
    parser.add_argument("--markdown", type=Path, help="report to update (default: docs/benchmarks.md)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 epochs, 100 molecules per part")
    args = parser.parse_args(argv)
    command = command_line("benchmarks.evaluation.chemprop_peer", argv)
    if importlib.util.find_spec("chemprop") is None:
        print("chemprop is not installed: its benchmark is skipped (pip install 'sklearn-cmim[bench]')")
        return None
    set_outputs(args, "chemprop_peer")
    if args.quick:
        # 3 epochs: the fewest chemprop accepts, one more than its learning-rate warm-up.
        args.datasets, args.seeds, args.epochs, args.folds = ["esol"], [0], 3, 2
    limit = 100 if args.quick else None
    split = "random_cv" if args.random_cv else "scaffold"
    # A run of one split keeps what an earlier run measured on the other.
    path = args.out / "chemprop.json"
    row = json.loads(path.read_text())[LABEL] if path.exists() else {}
    row["commands"] = {**commands_of(row), split: [command]}
    row.pop("command", None)
    threads = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    row["config"] = {"chemprop": importlib.metadata.version("chemprop"), "epochs": args.epochs,
                     "quick": args.quick, "threads": threads}
    row[split] = {}
    for name in args.datasets:
        runs = []
        for seed in args.seeds:
            parts = random_cv_splits(name, args.folds, seed) if args.random_cv else [None]
            for part in parts:
                runs.append(train(name, seed, args.epochs, limit, part))
                print(name, json.dumps(runs[-1]), flush=True)
        row[split][name] = fold_summary(runs) if args.random_cv else summary(runs)
        # Written after every task, so that a run stopped part way keeps what it finished.
        write_json(path, {LABEL: row})
        update_markdown_section(args.markdown, "chemprop-peer", markdown(row))
    return {LABEL: row}


if __name__ == "__main__":
    as_command(main)
