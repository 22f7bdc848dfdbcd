"""Choose a pretraining recipe without test data: downstream inner-CV scores and held-out reconstruction.

For each model (a directory, a bundled name, or every checkpoint of a ``cmim pretrain`` run
exported on the fly), this measures what the pretraining issue judges recipes by:

* the scaffold split's **inner-CV score** on ESOL, Lipophilicity and BACE: the default informative
  embeddings of the train and valid parts, a linear and a kernel head tuned by scaffold-grouped
  cross-validation, the better head's score. The test part is never read;
* **greedy exact reconstruction** of held-out molecules: MOSES ``test_scaffolds``, the broad
  corpus's held-out records (every ``--holdout-every``-th, as ``cmim pretrain`` holds them out),
  and the molecules of the five MoleculeNet tasks, none of which any corpus holds.

    python benchmarks/learning_curve.py cmim-moses runs/mix/checkpoints --out runs/curve.json
    python benchmarks/learning_curve.py --quick      # smoke run: a tiny model, bundled ESOL
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sklearn_cmim import CMIMTransformer
from sklearn_cmim.chem import canonical_smiles
from sklearn_cmim.export import export_checkpoint
from sklearn_cmim.persistence import load_pretrained

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks folder is not a package
from common import QUICK_MODEL, SHARED_DATA, write_json
from downstream import (
    CORE,
    DATASETS,
    SPLITS_DIR,
    inner_cv,
    load_dataset,
    make_heads,
    murcko_scaffolds,
    scaffold_groups,
)

CURVE_DATASETS = ["esol", "lipophilicity", "bace"]


def inner_scores(model: CMIMTransformer, datasets: list[str], max_molecules: int | None) -> dict:
    """Per dataset: the best head's scaffold-grouped inner-CV score on train + valid."""
    from sklearn.model_selection import GridSearchCV

    scores = {}
    for name in datasets:
        smiles, labels, _ = load_dataset(name)
        parts = json.loads((SPLITS_DIR / f"{name}_scaffold.json").read_text())
        rows = np.array(sorted(parts["train"] + parts["valid"]))[:max_molecules]
        X = model.transform([smiles[i] for i in rows])
        keep = ~np.isnan(X).any(axis=1) & ~np.isnan(labels[rows, 0])
        X, y = X[keep], labels[rows[keep], 0]
        groups = scaffold_groups(murcko_scaffolds([smiles[i] for i in rows[keep]]))
        task = DATASETS[name].task
        scoring = "neg_root_mean_squared_error" if task == "regression" else "roc_auc"
        best = None
        for head, (estimator, grid) in list(make_heads(task, "cMIM informative", quick=False).items())[:2]:
            search = GridSearchCV(estimator, grid, scoring=scoring, cv=inner_cv(task, 5, True, 0))
            score = abs(search.fit(X, y, groups=groups).best_score_)
            if best is None or (score < best[0] if task == "regression" else score > best[0]):
                best = (score, head)
        scores[name] = {"inner": best[0], "head": best[1], "molecules": int(keep.sum())}
    return scores


def reconstruction(model: CMIMTransformer, smiles: list[str]) -> float:
    """Share of readable molecules whose greedy decoding is the same molecule."""
    latent = model.set_params(embedding="latent")
    Z = latent.transform(smiles)
    readable = ~np.isnan(Z).any(axis=1)
    decoded = latent.inverse_transform(Z[readable])
    latent.set_params(embedding="informative")
    hits = [canonical_smiles(d) == canonical_smiles(s) if d else False
            for d, s in zip(decoded, np.asarray(smiles, dtype=object)[readable], strict=True)]
    return float(np.mean(hits)) if hits else float("nan")


def held_out_sets(n: int, holdout_every: int) -> dict[str, list[str]]:
    """Held-out molecules: MOSES test_scaffolds, the broad corpus's held-out records, MoleculeNet."""
    def rows(path: Path, keep):
        with gzip.open(path, "rt") as handle:
            next(handle)
            return [line.split(",")[0].strip() for i, line in enumerate(handle) if keep(i)]

    sets = {"moses test_scaffolds": rows(SHARED_DATA / "moses" / "test_scaffolds.csv.gz", lambda i: i < n)}
    broad = SHARED_DATA / "pretrain" / "broad.csv.gz"
    if broad.exists():
        held = rows(broad, lambda i: i % holdout_every == 0)
        sets["broad held-out"] = held[:: max(1, len(held) // n)][:n]
    rng = np.random.default_rng(0)
    pooled = list(itertools.chain.from_iterable(load_dataset(name)[0] for name in CORE))
    sets["MoleculeNet (5 tasks)"] = [pooled[i] for i in rng.choice(len(pooled), min(n, len(pooled)), False)]
    return sets


def models_to_measure(sources: list[str], workdir: Path) -> list[tuple[str, str]]:
    """``(label, model directory or name)``: a checkpoints folder stands for each checkpoint in it."""
    out = []
    for source in sources:
        path = Path(source)
        if path.is_dir() and path.name == "checkpoints":
            for checkpoint in sorted(path.glob("step-*.pt")):
                directory = workdir / checkpoint.stem
                if not directory.exists():
                    export_checkpoint(checkpoint, directory)
                out.append((f"{path.parent.name} {checkpoint.stem}", str(directory)))
        else:
            out.append((source, source))
    return out


def measure(name: str, args) -> dict:
    model = CMIMTransformer(pretrained=name, max_epochs=0, errors="nan", precision="fp32").fit(["CCO"])
    pretraining = load_pretrained(name).metadata.get("pretraining", {})
    start = time.perf_counter()
    result = {"molecules_seen": pretraining.get("molecules_seen"),
              "inner_cv": inner_scores(model, args.datasets, args.max_molecules)}
    if not args.no_reconstruction:
        result["reconstruction"] = {label: reconstruction(model, smiles)
                                    for label, smiles in held_out_sets(args.n, args.holdout_every).items()}
    result["seconds"] = time.perf_counter() - start
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="model directories, bundled names or checkpoints folders")
    parser.add_argument("--datasets", nargs="+", default=CURVE_DATASETS, choices=list(DATASETS))
    parser.add_argument("--n", type=int, default=500, help="held-out molecules per reconstruction set")
    parser.add_argument("--holdout-every", type=int, default=250, help="as the runs were given it")
    parser.add_argument("--max-molecules", type=int, help="cap on train + valid molecules per dataset")
    parser.add_argument("--no-reconstruction", action="store_true")
    parser.add_argument("--out", type=Path, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="smoke run: a tiny model fitted on ESOL")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            from sklearn_cmim.datasets import load_esol
            tiny = CMIMTransformer(**QUICK_MODEL, max_epochs=1, batch_size=64, random_state=0)
            tiny.fit(load_esol()[0][:200]).save_pretrained(Path(tmp, "tiny"))
            args.models, args.datasets, args.max_molecules = [str(Path(tmp, "tiny"))], ["esol"], 200
            args.no_reconstruction = True
        report = {}
        for label, name in models_to_measure(args.models, Path(tmp)):
            report[label] = measure(name, args)
            print(label, json.dumps(report[label]), flush=True)
    if args.out:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
