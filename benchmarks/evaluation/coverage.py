"""How far the downstream datasets lie from the pretraining corpus.

A frozen featuriser can only describe what it learned to read. This measures, for a sample of
MOSES train (what the bundled models saw) and each MoleculeNet dataset, after the model's own
standardisation:

* size: heavy atoms and SMILES tokens (median), and the share longer than 99% of MOSES;
* chemistry MOSES lacks: molecules with a formal charge, with an element outside MOSES's set, or
  with a token outside the model's vocabulary (read as <unk>);
* molecules too long for the model (more tokens, with <bos> and <eos>, than its ``max_length``),
  which it refuses rather than truncates;
* similarity: each molecule's highest ECFP4 Tanimoto similarity to the MOSES sample (median).

    python -m benchmarks.evaluation.coverage --model cmim-broad
    python -m benchmarks.evaluation.coverage --quick        # CI smoke run on tiny samples
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from benchmarks.common import (
    DOCS_MARKDOWN,
    as_command,
    at_least,
    command_line,
    load_model,
    markdown_table,
    read_moses,
    set_outputs,
    update_markdown_section,
    write_json,
)
from benchmarks.evaluation.downstream import CORE, DATASETS, EXTRAS, holds_unknown_token, load_dataset
from sklearn_cmim import CMIMTransformer
from sklearn_cmim.chem.inputs import standardize_items
from sklearn_cmim.chem.tokenizer import tokenize
from sklearn_cmim.config import DEFAULT_MODEL


def profile(smiles: list[str], model: CMIMTransformer) -> list[dict]:
    """Per readable molecule: heavy atoms, tokens, charge, elements, <unk> tokens, fingerprint."""
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    max_length = model.model_.config.max_length
    rows = []
    for text in standardize_items(smiles, model.standardizer_, errors="nan"):
        mol = None if text is None else Chem.MolFromSmiles(text)
        if mol is None:
            continue
        rows.append({"heavy_atoms": mol.GetNumHeavyAtoms(), "tokens": len(tokenize(text)),
                     "charged": any(atom.GetFormalCharge() for atom in mol.GetAtoms()),
                     "elements": {atom.GetSymbol() for atom in mol.GetAtoms()},
                     "unknown": holds_unknown_token(model.vocabulary_, text),
                     "too_long": len(tokenize(text)) + 2 > max_length,
                     "fingerprint": generator.GetFingerprint(mol)})
    return rows


def share(flags) -> float:
    return float(np.mean(list(flags)))


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def summarise(rows: list[dict], reference: list[dict], reference_elements: set[str],
              long_tokens: float) -> dict:
    fingerprints = [m["fingerprint"] for m in reference]
    nearest = [max(DataStructs.BulkTanimotoSimilarity(r["fingerprint"], fingerprints)) for r in rows]
    return {
        "molecules": len(rows),
        "median_heavy_atoms": float(np.median([r["heavy_atoms"] for r in rows])),
        "median_tokens": float(np.median([r["tokens"] for r in rows])),
        "longer_than_moses_p99": share(r["tokens"] > long_tokens for r in rows),
        "charged": share(r["charged"] for r in rows),
        "new_elements": share(bool(r["elements"] - reference_elements) for r in rows),
        "unknown_tokens": share(r["unknown"] for r in rows),
        "too_long": share(r["too_long"] for r in rows),
        "median_nearest_moses_similarity": float(np.median(nearest)),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="bundled model name or directory")
    parser.add_argument("--reference", type=at_least(1), default=20_000, help="MOSES train molecules sampled")
    parser.add_argument("--extras", action="store_true", help="add ClinTox and Tox21")
    parser.add_argument("--out", type=Path, help="JSON (default docs/benchmarks)")
    parser.add_argument("--markdown", type=Path, help=f"report to update (default {DOCS_MARKDOWN})")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: 500 MOSES, 100 per dataset")
    args = parser.parse_args(argv)
    per_dataset = 100 if args.quick else None
    if args.quick:
        args.reference = 500
    set_outputs(args, "coverage-quick")
    command = command_line("benchmarks.evaluation.coverage", argv)

    model = load_model(args.model)
    rng = np.random.default_rng(0)
    moses = read_moses("train.csv.gz")
    reference = profile([moses[i] for i in np.sort(rng.choice(len(moses), args.reference, replace=False))],
                        model)
    elements = set().union(*(r["elements"] for r in reference))
    long_tokens = float(np.percentile([r["tokens"] for r in reference], 99))
    tenth = len(reference) // 10
    summary = {"MOSES train (sample)": summarise(reference[:tenth], reference[tenth:], elements, long_tokens)}
    for name in CORE + (EXTRAS if args.extras else []):
        smiles = load_dataset(name)[0][:per_dataset]
        summary[DATASETS[name].label] = summarise(profile(smiles, model), reference, elements, long_tokens)
        print(f"{DATASETS[name].label}: {summary[DATASETS[name].label]}", flush=True)
    report = {"config": {"model": args.model, "reference": len(reference), "moses_elements": sorted(elements),
                         "moses_p99_tokens": long_tokens, "quick": args.quick, "command": command},
              "datasets": summary}
    write_json(args.out / "coverage.json", report)
    update_markdown_section(args.markdown, "coverage", markdown(report))
    return report


def markdown(report: dict) -> str:
    config = report["config"]
    rows = [[name, s["molecules"], f"{s['median_heavy_atoms']:g}", f"{s['median_tokens']:g}",
             percent(s["longer_than_moses_p99"]), percent(s["charged"]), percent(s["new_elements"]),
             percent(s["unknown_tokens"]), percent(s["too_long"]),
             f"{s['median_nearest_moses_similarity']:.2f}"]
            for name, s in report["datasets"].items()]
    return "\n".join([
        "## How far the downstream data lies from MOSES", "",
        f"Written by `{config['command']}`" + (" (**quick mode**: tiny samples)." if config["quick"] else ".")
        + f" Reference: {config['reference']:,} molecules sampled from MOSES train, standardised as "
        f"`{config['model']}` standardises; its elements are {', '.join(config['moses_elements'])}, "
        f"and 99% of it has at most {config['moses_p99_tokens']:.0f} tokens. The MOSES row describes a "
        "tenth of the sample against the other nine tenths.", "",
        markdown_table(["dataset", "molecules", "median heavy atoms", "median tokens",
                        "longer than 99% of MOSES", "charged", "element MOSES lacks",
                        "token outside vocabulary", "too long for the model",
                        "median nearest-MOSES Tanimoto (ECFP4)"], rows), ""])


if __name__ == "__main__":
    as_command(main)
