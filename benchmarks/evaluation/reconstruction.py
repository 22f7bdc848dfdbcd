"""Claim 3 of docs/method.md: exact-match reconstruction of cMIM against MIM at the same budget.

Measures each model's greedy exact reconstruction (canonical SMILES, against the molecule as the
model reads it, standardised) of held-out molecules: the first N MOSES ``test_scaffolds``
molecules (scaffolds absent from training), N of the broad corpus's held-out records and N
molecules of the five MoleculeNet tasks, where ``../shared/data`` holds them; a molecule the
models trained on after all (the same molecule under another record, once standardised:
``benchmarks.common.trained_smiles``) is left out of each. Each set is also broken down by length
in SMILES tokens, which is where the misses lie, and the MoleculeNet one by task. The validation
learning curve that ``cmim pretrain`` stored in each model's metadata is set beside it. Writes a
table and a figure into ``docs/benchmarks.md``. Full run, on the two bundled models (about 20
minutes on 2 CPU cores; ``scripts/bundled_models/prepare.sh`` first, for what they read):

    python -m benchmarks.evaluation.reconstruction --cmim-model cmim-broad --mim-model mim-broad

Smoke run (two tiny models trained on bundled ESOL, held-out ESOL molecules; seconds):

    python -m benchmarks.evaluation.reconstruction --quick
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.common import (
    DOCS_MARKDOWN,
    ROOT,
    as_command,
    at_least,
    command_line,
    load_model,
    markdown_table,
    pyplot,
    relative_link,
    trained_smiles,
    update_markdown_section,
    write_json,
)
from benchmarks.evaluation.downstream import (
    CORE,
    DATASETS,
    QUICK_TRAIN_MOLECULES,
    load_dataset,
    train_quick_models,
)
from benchmarks.evaluation.learning_curve import held_out_sets
from sklearn_cmim.chem.standardize import canonical_smiles
from sklearn_cmim.chem.tokenizer import tokenize
from sklearn_cmim.datasets import load_esol
from sklearn_cmim.persistence import load_pretrained

MOLECULENET_SET = "MoleculeNet (5 tasks)"
# Upper ends of the length bins, in SMILES tokens (<bos>/<eos> excluded); the last bin is open.
LENGTH_BINS = (20, 40, 60, 80)


def reconstruct(estimator, molecules: list[str]) -> list[dict]:
    """Per molecule the model can read: its length in tokens, whether its decoded latent mean is
    the molecule itself (as ``CMIMTransformer.score`` counts it), and whether the decoding is a
    valid molecule. ``estimator`` gives latent embeddings with ``errors="nan"``; molecules it
    cannot read (too long for it, unparsable) are left out, as ``score`` then leaves them out."""
    Z = estimator.transform(molecules)
    decoded = estimator.inverse_transform(Z)
    rows = []
    for smiles, z, output in zip(molecules, Z, decoded, strict=True):
        if not np.isfinite(z).all():
            continue
        standard = estimator.standardizer_(smiles)
        got = canonical_smiles(output)
        rows.append({"smiles": smiles, "tokens": len(tokenize(standard)), "valid": got is not None,
                     "exact": got is not None and got == canonical_smiles(standard)})
    return rows


def length_bin(tokens: int) -> str:
    low = 0
    for high in LENGTH_BINS:
        if tokens <= high:
            return f"{low + 1}-{high}"
        low = high
    return f"over {low}"


BIN_NAMES = [length_bin(high) for high in LENGTH_BINS] + [length_bin(LENGTH_BINS[-1] + 1)]


def by_length(rows: list[dict]) -> dict[str, dict]:
    """Molecules, exact decodings and valid decodings per length bin, shortest first."""
    counts = {name: {"n": 0, "exact": 0, "valid": 0} for name in BIN_NAMES}
    for row in rows:
        cell = counts[length_bin(row["tokens"])]
        cell["n"] += 1
        cell["exact"] += row["exact"]
        cell["valid"] += row["valid"]
    return {name: cell for name, cell in counts.items() if cell["n"]}


def pooled(results: dict) -> dict[str, dict]:
    """One model's length bins summed over its held-out sets."""
    total = {name: {"n": 0, "exact": 0, "valid": 0} for name in BIN_NAMES}
    for held_out in results["sets"].values():
        for name, cell in held_out["by_length"].items():
            for key, count in cell.items():
                total[name][key] += count
    return {name: cell for name, cell in total.items() if cell["n"]}


def by_task(rows: list[dict], task_of: dict[str, str]) -> dict[str, dict]:
    """Molecules and exact decodings per MoleculeNet task."""
    counts = {name: {"n": 0, "exact": 0} for name in CORE}
    for row in rows:
        cell = counts[task_of[row["smiles"]]]
        cell["n"] += 1
        cell["exact"] += row["exact"]
    return {name: cell for name, cell in counts.items() if cell["n"]}


def task_origins() -> dict[str, str]:
    """The MoleculeNet task each of their SMILES comes from (the first, for one in several)."""
    origin = {}
    for name in CORE:
        for smiles in load_dataset(name)[0]:
            origin.setdefault(smiles, name)
    return origin


def measure(label: str, model: str, sets: dict[str, list[str]],
            task_of: dict[str, str] | None = None) -> dict:
    """Exact reconstruction of each set of molecules and the stored pretraining record of one model;
    ``task_of`` breaks the MoleculeNet set down by task."""
    metadata = load_pretrained(model).metadata
    estimator = load_model(model, embedding="latent", errors="nan")
    result = {"label": label, "model": str(model), "contrastive_weight": metadata.get("contrastive_weight"),
              "pretraining": metadata.get("pretraining", {}),
              "learning_curve": metadata.get("learning_curve", []), "sets": {}}
    for name, molecules in sets.items():
        rows = reconstruct(estimator, molecules)
        hits = sum(r["exact"] for r in rows)
        result["sets"][name] = {"hits": hits, "n": len(rows), "accuracy": hits / len(rows),
                                "unreadable": len(molecules) - len(rows), "by_length": by_length(rows)}
        if task_of and name == MOLECULENET_SET:
            result["sets"][name]["by_task"] = by_task(rows, task_of)
        print(f"{label} ({model}), {name}: {hits / len(rows):.1%} of {len(rows)} exactly reconstructed",
              flush=True)
    return result


def plot(report: dict, out: Path) -> list[Path]:
    plt = pyplot()
    results = report["results"]
    if plt is None or not any(r["learning_curve"] for r in results):
        return []
    first = next(iter(results[0]["sets"]))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, r in enumerate(results):
        curve = r["learning_curve"]
        ax.plot([p["molecules_seen"] for p in curve], [100 * p["accuracy"] for p in curve],
                marker="o", color=f"C{i}", label=f"{r['label']} (validation)")
        if curve:  # the held-out test figure, at the model's final budget
            ax.scatter([curve[-1]["molecules_seen"]], [100 * r["sets"][first]["accuracy"]], marker="*", s=150,
                       color=f"C{i}", label=f"{r['label']} ({first})")
    ax.set_xlabel("molecules seen in pretraining")
    ax.set_ylabel("exact reconstruction (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("Greedy exact reconstruction, same budget", fontsize=10)
    fig.tight_layout()
    path = out / "reconstruction.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def unreadable(result: dict) -> list[str]:
    """A line naming the molecules left out because the model cannot read them, if any."""
    left_out = [f"{held_out['unreadable']:,} of {name}" for name, held_out in result["sets"].items()
                if held_out["unreadable"]]
    if not left_out:
        return []
    return [f"Left out, as `score` leaves them out: molecules the models cannot read (longer than "
            f"their `max_length`, or unparsable), {', '.join(left_out)}.", ""]


def markdown(report: dict, figures: list[Path], markdown_path: Path) -> str:
    results = report["results"]
    cmim, mim = results
    sets = list(cmim["sets"])
    rows = [[r["label"], f"`{Path(r['model']).name}`", r["contrastive_weight"],
             f"{r['pretraining'].get('steps', 'n/a')}", f"{r['pretraining'].get('molecules_seen', 0):,}",
             *(f"{r['sets'][name]['accuracy']:.1%}" for name in sets)] for r in results]
    # Counts, not rounded percentages: two models a molecule apart would otherwise read as equal.
    verdicts = [f"{name}: {'yes' if cmim['sets'][name]['hits'] >= mim['sets'][name]['hits'] else 'no'} "
                f"({cmim['sets'][name]['hits']:,} of {cmim['sets'][name]['n']:,} molecules against "
                f"{mim['sets'][name]['hits']:,})" for name in sets]
    lines = [
        "## Reconstruction: cMIM against MIM (claim 3)", "",
        f"Written by `{report['command']}`"
        + (" (**quick mode**: tiny models; the numbers mean nothing)." if report["quick"] else ".")
        + " Greedy exact match (canonical SMILES, against the molecule as the model reads it, "
        f"standardised) on held-out molecules: {report['source']}.", "",
        markdown_table(["model", "directory", "contrastive weight", "steps", "molecules seen", *sets], rows),
        "", *unreadable(cmim),
        "**Does cMIM reconstruct at least as well as MIM at the same budget?** "
        + "; ".join(verdicts) + ".", "",
        "By length in SMILES tokens, the sets above pooled: the share decoded exactly, and the share "
        "decoded to a valid molecule (exact or not).", "",
    ]
    lengths = {r["label"]: pooled(r) for r in results}
    lines += [markdown_table(
        ["tokens", "molecules", *(f"{label} {what}" for label in lengths for what in ("exact", "valid"))],
        [[name, f"{cell['n']:,}", *(f"{lengths[label][name][what] / cell['n']:.1%}" for label in lengths
                                   for what in ("exact", "valid"))]
         for name, cell in lengths[cmim["label"]].items()]), ""]
    tasks = {r["label"]: r["sets"].get(MOLECULENET_SET, {}).get("by_task") for r in results}
    if all(tasks.values()):
        lines += [f"{MOLECULENET_SET}, by task: the share decoded exactly.", "",
                  markdown_table(["task", "molecules", *tasks],
                                 [[DATASETS[name].label, f"{cell['n']:,}",
                                   *(f"{tasks[label][name]['exact'] / cell['n']:.1%}"
                                                            for label in tasks)]
                                  for name, cell in tasks[cmim["label"]].items()]), ""]
    curves = {r["label"]: {p["molecules_seen"]: p["accuracy"] for p in r["learning_curve"]} for r in results}
    seen = sorted(set().union(*curves.values()))
    if seen:
        lines += ["Validation learning curves (the held-out records of the pretraining corpora that "
                  "`cmim pretrain` scored):", "",
                  markdown_table(["molecules seen", *curves],
                                 [[f"{n:,}", *(f"{c[n]:.1%}" if n in c else "" for c in curves.values())]
                                  for n in seen]), ""]
    lines += [f"![{path.stem}]({relative_link(path, markdown_path)})" for path in figures]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cmim-model", help="bundled model name or directory (lambda = 1)")
    parser.add_argument("--mim-model", help="bundled model name or directory (lambda = 0)")
    parser.add_argument("--molecules", type=at_least(1), default=2000, help="molecules of each held-out set")
    parser.add_argument("--out", type=Path, help="JSON and figure (default docs/benchmarks)")
    parser.add_argument("--markdown", type=Path, help=f"report to update (default {DOCS_MARKDOWN})")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny models on bundled ESOL")
    args = parser.parse_args(argv)
    if not args.quick and not (args.cmim_model and args.mim_model):
        parser.error("--cmim-model and --mim-model are required outside --quick")
    default_out = ROOT / "runs" / "reconstruction-quick" if args.quick else ROOT / "docs" / "benchmarks"
    args.out = args.out or default_out
    args.markdown = args.markdown or (args.out / "benchmarks.md" if args.quick else DOCS_MARKDOWN)
    args.out.mkdir(parents=True, exist_ok=True)

    if args.quick:
        paths = train_quick_models(args.out / "models")
        sets = {"ESOL": load_esol()[0][QUICK_TRAIN_MOLECULES:QUICK_TRAIN_MOLECULES + 40]}
        source = "40 bundled ESOL molecules the quick models did not see"
        task_of = None
    else:
        paths = {"cmim": args.cmim_model, "mim": args.mim_model}
        arguments = load_pretrained(args.cmim_model).metadata.get("pretraining", {}).get("arguments", {})
        sets = held_out_sets(args.molecules, arguments.get("holdout_every", 1000), trained_smiles())
        source = (f"the first {len(sets['MOSES test_scaffolds']):,} molecules of MOSES test_scaffolds"
                  + (", molecules spread over the broad corpus's held-out records" if "broad held-out" in sets
                     else "") + ", and a random sample of the five MoleculeNet tasks' molecules; in each, "
                  "only molecules that are, standardised, in no corpus the models trained on")
        task_of = task_origins()
    command = command_line("benchmarks.evaluation.reconstruction", argv)
    report = {"command": command, "quick": args.quick, "source": source,
              "results": [measure("cMIM", paths["cmim"], sets, task_of),
                          measure("MIM", paths["mim"], sets, task_of)]}
    write_json(args.out / "reconstruction.json", report)
    figures = plot(report, args.out)
    update_markdown_section(args.markdown, "reconstruction", markdown(report, figures, args.markdown))
    return report


if __name__ == "__main__":
    as_command(main)
