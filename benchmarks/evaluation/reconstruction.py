"""Claim 3 of docs/method.md: exact-match reconstruction of cMIM against MIM at the same budget.

Measures each model's greedy exact reconstruction of the first N MOSES ``test_scaffolds``
molecules (scaffolds absent from training), and sets it beside the validation learning curve that
``cmim pretrain`` stored in the model's metadata. Writes a table and a figure into
``docs/benchmarks.md``. Full run, on the two bundled models (minutes on a CPU):

    python -m benchmarks.evaluation.reconstruction --cmim-model cmim-broad --mim-model mim-broad

Smoke run (two tiny models trained on bundled ESOL, held-out ESOL molecules; seconds):

    python -m benchmarks.evaluation.reconstruction --quick
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import (
    DOCS_MARKDOWN,
    ROOT,
    command_line,
    load_model,
    markdown_table,
    pyplot,
    read_moses,
    relative_link,
    update_markdown_section,
    write_json,
)
from benchmarks.evaluation.downstream import QUICK_TRAIN_MOLECULES, train_quick_models
from sklearn_cmim.datasets import load_esol
from sklearn_cmim.persistence import load_pretrained


def measure(label: str, model: str, molecules: list[str]) -> dict:
    """Exact reconstruction of ``molecules`` and the stored pretraining record of one model."""
    metadata = load_pretrained(model).metadata
    estimator = load_model(model)
    accuracy = estimator.score(molecules)
    print(f"{label} ({model}): {accuracy:.1%} of {len(molecules)} exactly reconstructed", flush=True)
    return {"label": label, "model": str(model), "accuracy": accuracy, "n": len(molecules),
            "contrastive_weight": metadata.get("contrastive_weight"),
            "pretraining": metadata.get("pretraining", {}),
            "learning_curve": metadata.get("learning_curve", [])}


def plot(results: list[dict], out: Path) -> list[Path]:
    plt = pyplot()
    if plt is None or not any(r["learning_curve"] for r in results):
        return []
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, r in enumerate(results):
        curve = r["learning_curve"]
        ax.plot([p["molecules_seen"] for p in curve], [100 * p["accuracy"] for p in curve],
                marker="o", color=f"C{i}", label=f"{r['label']} (validation)")
        if curve:  # the held-out test figure, at the model's final budget
            ax.scatter([curve[-1]["molecules_seen"]], [100 * r["accuracy"]], marker="*", s=150,
                       color=f"C{i}", label=f"{r['label']} (test_scaffolds)")
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


def markdown(report: dict, figures: list[Path], markdown_path: Path) -> str:
    results = report["results"]
    cmim, mim = results
    rows = [[r["label"], f"`{Path(r['model']).name}`", r["contrastive_weight"],
             f"{r['pretraining'].get('steps', 'n/a')}", f"{r['pretraining'].get('molecules_seen', 0):,}",
             f"{r['accuracy']:.1%} of {r['n']:,}"] for r in results]
    verdict = "yes" if cmim["accuracy"] >= mim["accuracy"] else "no"
    # Counts, not rounded percentages: two models a molecule apart would otherwise read as equal.
    hits = {r["label"]: f"{round(r['accuracy'] * r['n']):,} of {r['n']:,}" for r in results}
    lines = [
        "## Reconstruction: cMIM against MIM (claim 3)", "",
        f"Written by `{report['command']}`"
        + (" (**quick mode**: tiny models; the numbers mean nothing)." if report["quick"] else ".")
        + f" Greedy exact match (canonical SMILES) on {report['source']}.", "",
        markdown_table(["model", "directory", "contrastive weight", "steps", "molecules seen",
                        "exact reconstruction"], rows), "",
        f"**Does cMIM reconstruct at least as well as MIM at the same budget?** {verdict} "
        f"({hits[cmim['label']]} molecules against {hits[mim['label']]}).", "",
    ]
    curves = {r["label"]: {p["molecules_seen"]: p["accuracy"] for p in r["learning_curve"]} for r in results}
    seen = sorted(set().union(*curves.values()))
    if seen:
        lines += ["Validation learning curves (held-out MOSES train molecules):", "",
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
    parser.add_argument("--molecules", type=int, default=2000, help="MOSES test_scaffolds molecules")
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
        molecules = load_esol()[0][QUICK_TRAIN_MOLECULES:QUICK_TRAIN_MOLECULES + 40]
        source = f"{len(molecules)} bundled ESOL molecules the quick models did not see"
    else:
        paths = {"cmim": args.cmim_model, "mim": args.mim_model}
        molecules = read_moses("test_scaffolds.csv.gz", args.molecules)
        source = f"the first {len(molecules):,} molecules of MOSES test_scaffolds"
    command = command_line("benchmarks.evaluation.reconstruction", argv)
    report = {"command": command, "quick": args.quick, "source": source,
              "results": [measure("cMIM", paths["cmim"], molecules), measure("MIM", paths["mim"], molecules)]}
    write_json(args.out / "reconstruction.json", report)
    figures = plot(report["results"], args.out)
    update_markdown_section(args.markdown, "reconstruction", markdown(report, figures, args.markdown))
    return report


if __name__ == "__main__":
    main()
