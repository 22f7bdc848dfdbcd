"""Does fine-tuning a bundled model on a task's molecules help, and does pretraining help at all?

For each task, on the committed scaffold split (``benchmarks/splits``), features of one model at a
time, each from the estimator's default informative embedding:

- **frozen**: the bundled model as it is (``max_epochs=0``), as in ``downstream.py``;
- **fine-tuned**: ``CMIMTransformer(pretrained=..., max_epochs=E)`` fitted on the molecules of the
  train and valid parts, with the estimator's own recipe (learning rate 5e-4, batch 64) and
  the model's own contrastive weight (1 for cMIM, 0 for MIM). Fitting reads no labels;
- **from scratch**: ``CMIMTransformer(max_epochs=E)`` of the same size, trained on those same
  molecules only, for the largest E.

The test part's molecules are never trained on. Each feature matrix is scored as
``downstream.py`` scores one, by the head (linear, or a kernel SVM) with the best scaffold-grouped
inner-CV score on train + valid, on the test part, with a bootstrap error bar over the test
molecules. Random forests, the slowest head, are left out; on these embeddings they rarely won.
One fitting seed per setting: the error bars cover the test sample, not the fitting noise.

    python -m benchmarks.evaluation.finetune --cmim-model cmim-broad --mim-model mim-broad  # ~30 min, 2 cores
    python -m benchmarks.evaluation.finetune --quick                                        # smoke run
"""

from __future__ import annotations

import functools
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.linalg import LinAlgWarning

from benchmarks.common import (
    DOCS_MARKDOWN,
    QUICK_MODEL,
    ROOT,
    as_command,
    at_least,
    command_line,
    fmt,
    markdown_table,
    update_markdown_section,
    write_json,
)
from benchmarks.evaluation.downstream import (
    CORE,
    DATASETS,
    best_head,
    bootstrap_std,
    evaluate_heads,
    inner_cv,
    make_heads,
    model_comparison_parser,
    model_fingerprint,
    prepare,
    scaffold_groups,
    set_output_paths,
    train_quick_models,
)
from sklearn_cmim import CMIMTransformer

PROTOCOL_VERSION = 1


def settings(models: dict[str, str], epochs: list[int], quick: bool,
             mim_warmup_steps: int | None = None) -> list[dict]:
    """Every (model, epochs) to featurise with: frozen and fine-tuned per model, then from scratch.
    ``mim_warmup_steps`` replaces the estimator's default in the fine-tuning fits."""
    out = []
    for label, path in models.items():
        weight, fingerprint = (1.0 if label == "cMIM" else 0.0), model_fingerprint(path)
        for e in epochs:
            setting = {"name": f"{label} frozen", "pretrained": path, "fingerprint": fingerprint,
                       "max_epochs": e, "contrastive_weight": weight}
            if e > 0:
                setting["name"] = f"{label} fine-tuned {e} ep."
                if mim_warmup_steps is not None:
                    setting["name"] += f", MIM warm-up {mim_warmup_steps} steps"
                    setting["mim_warmup_steps"] = mim_warmup_steps
            out.append(setting)
    if max(epochs) > 0:
        out.append({"name": f"from scratch {max(epochs)} ep.", "pretrained": None, "fingerprint": None,
                    "max_epochs": max(epochs), "contrastive_weight": 1.0, **(QUICK_MODEL if quick else {})})
    return out


def featurise(setting: dict, smiles: list[str], train: np.ndarray, seed: int) -> np.ndarray:
    """Fit on the molecules at ``train`` (or only load, at 0 epochs) and embed every molecule;
    rows of molecules the model cannot read (too long, unparsable) are NaN."""
    params = {k: v for k, v in setting.items() if k not in ("name", "fingerprint")}
    estimator = CMIMTransformer(**params, random_state=seed, errors="nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tokens outside the vocabulary: counted by downstream.py
        # At 0 epochs fit only loads the model; it needs one molecule it can read to do so.
        estimator.fit([smiles[i] for i in train] if setting["max_epochs"] else ["CCO"])
        return estimator.transform(smiles)


def run_dataset(name: str, fits: list[dict], args) -> dict:
    """Featurise with every one of ``settings()`` (or read it from the cache) and score each."""
    dataset = DATASETS[name]
    smiles, Y, _, scaffolds, parts, _ = prepare(name, args)
    train = np.concatenate([parts["train"], parts["valid"]])
    groups = scaffold_groups(scaffolds)
    matrices, seconds = {}, {}
    for setting in fits:
        key = {"dataset": name, "setting": {k: v for k, v in setting.items() if k != "pretrained"},
               "seed": args.seed, "max_molecules": args.max_molecules, "protocol": PROTOCOL_VERSION}
        tick = time.perf_counter()
        matrices[setting["name"]] = args.cache.array(
            key, functools.partial(featurise, setting, smiles, train, args.seed))
        seconds[setting["name"]] = args.cache.array_seconds(key) or time.perf_counter() - tick
    # Score every setting on the same molecules: those each of them could read.
    usable = np.logical_and.reduce([~np.isnan(X).all(axis=1) for X in matrices.values()])
    used = {part: np.array([p for p in positions if usable[p]], dtype=int)
            for part, positions in parts.items()}
    train_used = np.concatenate([used["train"], used["valid"]])
    results = {"label": dataset.label, "metric": dataset.metric,
               "molecules": len(smiles), "used": int(usable.sum()), "train_molecules": len(train),
               "settings": {}}
    heads = {name: head for name, head in make_heads(dataset.task, "cMIM informative", args.quick).items()
             if name != "RF"}
    for setting_name, X in matrices.items():
        per_head = evaluate_heads(X, Y, train_used, used["test"], dataset.task, heads,
                                  inner_cv(dataset.task, args.inner_folds), groups, 1)
        chosen = best_head(dataset.task, per_head)
        results["settings"][setting_name] = {
            "head": chosen, "test": per_head[chosen]["test"],
            "bootstrap_std": bootstrap_std(dataset.task, per_head[chosen]["pairs"], args.bootstrap),
            "featurise_seconds": seconds[setting_name]}
        r = results["settings"][setting_name]
        print(f"  {dataset.label} | {setting_name}: {fmt(r['test'])} ± {fmt(r['bootstrap_std'])} "
              f"({r['head']}; features in {r['featurise_seconds']:.0f} s)", flush=True)
    return results


def markdown(report: dict) -> str:
    config = report["config"]
    names = list(next(iter(report["datasets"].values()))["settings"])

    def cell(result: dict) -> str:
        return f"{fmt(result['test'])} ± {fmt(result['bootstrap_std'], 2)}"

    rows = [[r["label"], r["metric"], f"{r['used']} / {r['molecules']}",
             *(cell(r["settings"][name]) for name in names)] for r in report["datasets"].values()]
    return "\n\n".join([
        "## Fine-tuning on the task's molecules",
        f"Written by `{config['command']}`. Models: cMIM `{config['cmim_model']}`, "
        f"MIM `{config['mim_model']}`. "
        "Scaffold split, test part; features fitted on the train and valid parts' molecules without "
        "their labels (fine-tuned: from the bundled model with the estimator's recipe and the model's "
        "own contrastive weight; from scratch: the estimator's default model), scored by the better "
        "of a linear and a kernel-SVM head tuned by scaffold-grouped inner CV, ± bootstrap std over "
        f"test molecules. One fitting seed ({config['seed']}). RMSE: lower is better; ROC-AUC: higher "
        f"is better. This run took {report['seconds'] / 60:.1f} min (cached features count as 0).",
        markdown_table(["dataset", "metric", "used / molecules", *names], rows),
    ])


def parse_args(argv):
    parser = model_comparison_parser(__doc__)
    parser.add_argument("--epochs", type=int, nargs="+", default=[0, 3, 10],
                        help="fine-tuning epochs (0: frozen); from scratch trains for the largest")
    parser.add_argument("--mim-warmup-steps", type=int,
                        help="the fine-tuning fits' MIM warm-up (default: the estimator's)")
    parser.add_argument("--seed", type=int, default=0, help="random_state of every fit")
    parser.add_argument("--inner-folds", type=at_least(2), default=3)
    parser.add_argument("--bootstrap", type=at_least(2), default=200, help="resamples for the error bars")
    parser.add_argument("--max-molecules", type=at_least(1), help="random subset per dataset")
    parser.add_argument("--cache", type=Path, help="features kept here, so a killed run resumes "
                        "(default runs/finetune-cache)")
    parser.add_argument("--no-cache", action="store_true", help="compute everything afresh")
    parser.add_argument("--out", type=Path, help="JSON (default docs/benchmarks)")
    parser.add_argument("--markdown", type=Path, help=f"report to update (default {DOCS_MARKDOWN})")
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke run: ESOL x 120 molecules, tiny models")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets = args.datasets or ["esol"]
        args.max_molecules = args.max_molecules or 120
        args.epochs, args.inner_folds, args.bootstrap = [0, 1], 2, 20
        args.out = args.out or ROOT / "runs" / "finetune-quick"
    elif not (args.cmim_model and args.mim_model):
        parser.error("--cmim-model and --mim-model are required outside --quick")
    args.datasets = args.datasets or CORE
    set_output_paths(args, "finetune-cache")
    return args


def main(argv=None) -> dict:
    start = time.perf_counter()
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=LinAlgWarning)  # Ridge's smallest alphas; CV picks alpha
    args.out.mkdir(parents=True, exist_ok=True)
    command = command_line("benchmarks.evaluation.finetune", argv)
    if args.quick and not (args.cmim_model and args.mim_model):
        paths = train_quick_models(args.out / "models")
        args.cmim_model, args.mim_model = paths["cmim"], paths["mim"]
    fits = settings({"cMIM": args.cmim_model, "MIM": args.mim_model}, args.epochs, args.quick,
                    args.mim_warmup_steps)
    datasets = {name: run_dataset(name, fits, args) for name in args.datasets}
    report = {"config": {"command": command, "cmim_model": args.cmim_model, "mim_model": args.mim_model,
                         "epochs": args.epochs, "mim_warmup_steps": args.mim_warmup_steps,
                         "seed": args.seed, "inner_folds": args.inner_folds,
                         "bootstrap": args.bootstrap, "max_molecules": args.max_molecules,
                         "quick": args.quick},
              "datasets": datasets, "seconds": time.perf_counter() - start}
    write_json(args.out / "finetune.json", report)
    update_markdown_section(args.markdown, "finetune", markdown(report))
    return report


if __name__ == "__main__":
    as_command(main)
