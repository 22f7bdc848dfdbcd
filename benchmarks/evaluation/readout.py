"""Which informative-embedding recipe to read from each bundled model, chosen by inner CV.

A recipe is one of the eight ways ``CMIMTransformer`` reads its informative embedding (decoder
layers last or mean of all x pooling over tokens mean or mean and max x with or without the latent
mean in front; docs/method.md, Embeddings). For each model, recipe and core task this scores the
scaffold split as the candidates table does (learning_curve's protocol): the linear and the kernel
head tuned by scaffold-grouped inner CV on the train and valid parts, and the better one's score
on the test part. Recipes are ranked per task (ranks, so that RMSE and ROC-AUC tasks weigh alike);
the best mean rank **by inner CV** is the choice, for each model and over both. The test scores are
reported beside it and never choose.

    python -m benchmarks.evaluation.readout cmim-broad mim-broad
    python -m benchmarks.evaluation.readout --quick      # smoke run: a tiny model, bundled ESOL
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

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
from benchmarks.evaluation.downstream import (
    CORE,
    DATASETS,
    DEFAULT_RECIPE,
    VARIANTS,
    recipe_name,
    without_latent,
)
from benchmarks.evaluation.learning_curve import dataset_scores
from sklearn_cmim import CMIMTransformer

SECTION = "readout"


class RecipeFeatures:
    """A model's informative embedding under one recipe at a time (``set_recipe``).

    Each (layers, pooling) pair costs one pass over the molecules: the recipe without the latent
    is read from the one with it (``downstream.without_latent``).
    """

    def __init__(self, model: CMIMTransformer):
        self.model = model
        self.recipe = DEFAULT_RECIPE
        self._with_latent: dict[tuple, np.ndarray] = {}

    def set_recipe(self, layers: str, pooling: str, with_latent: bool) -> RecipeFeatures:
        self.recipe = (layers, pooling, with_latent)
        return self

    def transform(self, smiles: list[str]) -> np.ndarray:
        layers, pooling, with_latent = self.recipe
        key = (layers, pooling, tuple(smiles))
        if key not in self._with_latent:
            self._with_latent = {k: v for k, v in self._with_latent.items() if k[2] == key[2]}
            self.model.set_params(embedding="informative", informative_layers=layers,
                                  informative_pooling=pooling, informative_with_latent=True)
            self._with_latent[key] = self.model.transform(smiles)
        X = self._with_latent[key]
        return X if with_latent else without_latent(X, self.model)


def measure(name: str, args) -> dict:
    """Per recipe and task, the scaffold split's inner-CV and test scores of the chosen head."""
    features = RecipeFeatures(load_model(name, errors="nan"))
    scores = defaultdict(dict)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown tokens: counted by the coverage benchmark
        for dataset in args.datasets:
            for recipe in VARIANTS:
                result = dataset_scores(features.set_recipe(*recipe), "cMIM informative", dataset, args)
                scores[recipe_name(*recipe)][dataset] = result["scaffold"]
            print(name, dataset, flush=True)
    return dict(scores)


def mean_ranks(models: dict[str, dict], score: str) -> dict[str, float]:
    """Mean rank (1 = best) of each recipe over every task of the given models, by ``score``
    (``"inner"`` or ``"test"``): lowest RMSE, highest ROC-AUC."""
    ranks = defaultdict(list)
    for recipes in models.values():
        for dataset in next(iter(recipes.values())):
            sign = 1 if DATASETS[dataset].task == "regression" else -1
            order = sorted(recipes, key=lambda r: sign * recipes[r][dataset][score])
            for rank, recipe in enumerate(order, start=1):
                ranks[recipe].append(rank)
    return {recipe: float(np.mean(r)) for recipe, r in ranks.items()}


def choices(models: dict[str, dict]) -> dict:
    """The recipe each model's inner CV chooses, and the one it chooses over all models; on a tie
    the default stays, since a change has to earn its place."""
    default = recipe_name(*DEFAULT_RECIPE)
    out = {}
    for label, group in [*((name, {name: recipes}) for name, recipes in models.items()), ("all", models)]:
        inner, test = mean_ranks(group, "inner"), mean_ranks(group, "test")
        chosen = min(inner, key=lambda recipe: (round(inner[recipe], 9), recipe != default))
        out[label] = {"inner_mean_rank": inner, "test_mean_rank": test, "chosen": chosen}
    return out


def markdown(report: dict, command: str) -> str:
    default = recipe_name(*DEFAULT_RECIPE)
    datasets = report["config"]["datasets"]
    lines = ["## Informative-embedding recipe of the bundled models", "",
             f"Written by `{command}`. Scaffold split; for each recipe the better of the linear and "
             "kernel heads by scaffold-grouped inner CV on the train and valid parts (the candidates "
             "table's protocol): its inner-CV score, and its score on the test part in brackets. "
             "Mean ranks are over the tasks (1 = best). The choice is the best mean rank by inner CV; "
             f"the test scores never choose. The package's default is {default}. "
             f"This run took {report['seconds'] / 60:.0f} min.", ""]
    for model, recipes in report["models"].items():
        ranks = report["choices"][model]
        rows = []
        for recipe, per_task in recipes.items():
            marks = " (chosen)" if recipe == ranks["chosen"] else ""
            marks += " (default)" if recipe == default else ""
            rows.append([recipe.replace(" | ", ", ") + marks,
                         *(f"{fmt(per_task[d]['inner'])} ({fmt(per_task[d].get('test'))})" for d in datasets),
                         f"{ranks['inner_mean_rank'][recipe]:.1f}", f"{ranks['test_mean_rank'][recipe]:.1f}"])
        lines += [f"### `{model}`", "",
                  markdown_table(["recipe", *(DATASETS[d].label for d in datasets),
                                  "mean rank, inner CV", "mean rank, test"], rows), ""]
    overall = report["choices"]["all"]
    chosen, ranks = overall["chosen"], overall["inner_mean_rank"]
    runner_up = min((r for r in ranks if r != chosen), key=ranks.get)
    verdict = "keeps the default" if chosen == default else f"chooses **{chosen}** over the default"
    lines += [f"Over all models, inner CV {verdict}: mean rank {ranks[chosen]:.2f}, against "
              f"{ranks[runner_up]:.2f} for the next best, {runner_up}."]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=["cmim-broad", "mim-broad"],
                        help="bundled names or model directories")
    parser.add_argument("--datasets", nargs="+", default=CORE, choices=list(DATASETS))
    parser.add_argument("--out", type=Path, help="JSON (default docs/benchmarks)")
    parser.add_argument("--markdown", type=Path, help="report to update (default docs/benchmarks.md)")
    parser.add_argument("--quick", action="store_true", help="smoke run: a tiny model fitted on ESOL")
    args = parser.parse_args(argv)
    set_outputs(args, "readout-quick")
    # learning_curve's scoring options: the test part's score, no random CV, every molecule.
    args.test, args.random_cv, args.max_molecules = True, False, None
    command = command_line("benchmarks.evaluation.readout", argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            from sklearn_cmim.datasets import load_esol
            tiny = CMIMTransformer(**QUICK_MODEL, max_epochs=1, batch_size=64, random_state=0)
            args.models = [str(tiny.fit(load_esol()[0][:200]).save_pretrained(Path(tmp, "tiny")))]
            args.datasets, args.max_molecules = ["esol"], 200
        models = {name: measure(name, args) for name in args.models}
    report = {"config": {"models": args.models, "datasets": args.datasets, "command": command},
              "models": models, "choices": choices(models), "seconds": time.perf_counter() - start}
    write_json(args.out / "readout.json", report)
    update_markdown_section(args.markdown, SECTION, markdown(report, command))
    for label, choice in report["choices"].items():
        print(f"{label}: {choice['chosen']}")
    return report


if __name__ == "__main__":
    as_command(main)
