"""Generative metrics of a pretrained model, as reported in its model card.

* greedy exact-match reconstruction of held-out MOSES ``test_scaffolds`` molecules, and (where
  ``../shared/data`` has them) of the broad corpus's held-out records and a sample of the five
  MoleculeNet tasks' molecules, leaving out any the model read under another record (the same
  molecule once standardised);
* validity, uniqueness and novelty (against the corpora the model read) of molecules decoded from
  draws of N(0, I); of the latent prior the model carries, which ``sample`` draws from by default
  (a Gaussian fitted to its training molecules' latent means, which an A-MIM model need not match
  to N(0, I)); and of latents perturbed around held-out molecules (z = mu + sigma * noise) at a
  few noise scales, with MolMIM's non-identicality and effective novelty (valid, new and not the
  seed), so that its published figures can stand beside ours;
* the learning curve stored by ``cmim pretrain`` (accuracy against molecules seen).

    python -m benchmarks.evaluation.pretrained_metrics cmim-broad --card docs/models/cmim-broad.md \
        --hardware "one NVIDIA H200 GPU, bf16 autocast, shared with the twin"

(with ``../shared/data`` beside the repository and, for the bundled twins, the corpora they read
prepared by ``scripts/bundled_models/prepare.sh``).

Smoke run (the bundled cmim-broad on a handful of bundled ESOL molecules, card written beside its
JSON; seconds):

    python -m benchmarks.evaluation.pretrained_metrics --quick
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    BROAD,
    ROOT,
    as_command,
    generation_metrics,
    load_model,
    read_moses,
    smiles_rows,
    trained_smiles,
    write_json,
)
from benchmarks.evaluation.learning_curve import held_out_sets
from sklearn_cmim.chem.standardize import canonical_smiles
from sklearn_cmim.datasets import load_esol
from sklearn_cmim.persistence import load_pretrained

# What the card says of a corpus, by file name; ChEMBL's licence asks for the attribution.
CORPORA = {
    "train.csv.gz": "MOSES train (1,584,663 molecules, MIT)",
    "broad.csv.gz": "the broad drug-like corpus (612,849 molecules from ChEMBL 30/31, MoleculeACE, MUV, HIV "
                    "and ZINC; described in the README of the shared data folder kept beside the "
                    "repository, shared/data/README.md, which a clone does not include)",
    "fragments.smi": "BRICS fragments of 40,000 molecules of each of the two (`python -m "
                     "sklearn_cmim.chem.fragments`), MoleculeNet molecules excluded",
}
# MolMIM's published sampling figures (BioNeMo framework's MolMIM model card, MolMIM 70M v24.3;
# definitions from the MolMIM paper, arXiv 2208.09016, appendix A.6). No figure for draws of its
# prior is published there: these are draws around seed molecules, at the radius that did best.
MOLMIM = {"radius": 2.0, "validity": 0.99, "novelty": 0.69, "uniqueness": 1.0, "changed": 1.0,
          "effective_novelty": 0.68, "reconstruction": 0.9988}
CHEMBL = ("Contains data from ChEMBL (ChEMBL 30 and 31, EMBL-EBI), licensed under CC BY-SA 3.0: the "
          "broad corpus's ChEMBL-derived rows were used to train this model.")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="cmim-broad",
                        help="bundled model name or model directory (default cmim-broad)")
    parser.add_argument("--reconstruct", type=int, default=2000, help="test_scaffolds molecules")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--sigma", type=float, nargs="+", default=[0.05, 0.07, 0.1, 0.13, 0.2],
                        help="noise scales around held-out latents")
    parser.add_argument("--out", type=Path, help="JSON (default docs/benchmarks)")
    parser.add_argument("--card", type=Path, help="write a markdown model card here")
    parser.add_argument("--hardware", default="unspecified", help="where the model was trained, for the card")
    parser.add_argument("--wall-time", default="unrecorded", help="training wall time, for the card")
    parser.add_argument("--notes", default="", help="a paragraph for the card (status, caveats)")
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke run: a handful of bundled ESOL molecules, card beside the JSON")
    args = parser.parse_args(argv)
    args.name = Path(args.model).name
    args.out = args.out or ROOT / ("runs/pretrained-metrics-quick" if args.quick else "docs/benchmarks")
    if args.quick:
        args.reconstruct, args.samples = 8, 8
        args.card = args.card or args.out / f"{args.name}.md"
        args.notes = args.notes or (
            "**Quick mode** (`--quick`): a handful of bundled ESOL molecules stand in for every held-out "
            "set, and novelty is against bundled ESOL; the numbers mean nothing.")
    return args


def molecule_sets(args, arguments: dict) -> dict:
    """The molecules each metric reads: ``held_out`` and ``other`` are reconstructed, ``test`` is
    perturbed, and ``training`` is what novelty is against. A quick run reads bundled ESOL only,
    so it runs on a fresh clone."""
    n = args.samples
    if args.quick:
        esol = load_esol()[0]
        return {"source": "bundled ESOL", "held_out": esol[:args.reconstruct], "other": {},
                "test": esol[args.reconstruct:args.reconstruct + n],
                "training": {canonical_smiles(s) for s in esol}}
    training = set(read_moses("train.csv.gz"))
    # Novelty is against every corpus the model read, as written and, for the bundled twins (the
    # models that read the broad corpus), as they read it; held out is what they never read.
    trained = frozenset()
    if any(Path(p).name == BROAD.name for p in arguments.get("inputs", [])):
        trained = trained_smiles()
        training.update(smiles_rows(BROAD), trained)
    other = held_out_sets(args.reconstruct, arguments.get("holdout_every", 1000), trained)
    return {"source": "MOSES test_scaffolds", "held_out": other.pop("MOSES test_scaffolds"), "other": other,
            # MOSES test molecules, disjoint from the test_scaffolds ones.
            "test": read_moses("test.csv.gz", n), "training": training}


def sampling(cmim, sets: dict, args) -> tuple[dict, dict, list[dict]]:
    """Generative metrics of N(0, I) draws, of the fitted prior's, and around held-out latents."""
    training = sets["training"]
    standard = generation_metrics(cmim.sample(args.samples, random_state=0, prior="standard"), training)
    # Seed 0: the bundled models' temperatures were chosen on other draws (seed 1).
    prior = cmim.latent_prior_
    fitted = {**generation_metrics(cmim.sample(args.samples, random_state=0), training),
              "fitted_to": prior.n_molecules, "temperature": prior.temperature}
    rng = np.random.default_rng(0)
    mu = cmim.transform(sets["test"])
    seeds = [canonical_smiles(s) for s in sets["test"]]
    around = []
    for sigma in args.sigma:
        noise = rng.standard_normal(mu.shape).astype(np.float32)
        decoded = cmim.inverse_transform(mu + sigma * noise)
        # Around one molecule, uniqueness says little: what matters is how often a valid sample
        # is another molecule than the one it was drawn around (MolMIM's non-identicality), and
        # how many distinct ones are also new (its effective novelty, over all draws).
        valid = [(c, seed) for d, seed in zip(decoded, seeds, strict=True)
                 if d and (c := canonical_smiles(d))]
        effective = {c for c, seed in valid if c != seed and c not in training}
        around.append({**generation_metrics(decoded, training), "sigma": sigma,
                       "changed": sum(c != seed for c, seed in valid) / max(len(valid), 1),
                       "effective_novelty": len(effective) / len(decoded)})
    for name, m in [("N(0, I)", standard), ("fitted prior", fitted),
                    *((f"around held-out (sigma={m['sigma']})", m) for m in around)]:
        print(f"{name}: validity {m['validity']:.1%}, uniqueness {m['uniqueness']:.1%}, "
              f"novelty {m['novelty']:.1%}")
    return standard, fitted, around


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    metadata = load_pretrained(args.model).metadata
    cmim = load_model(args.model, embedding="latent", random_state=0, errors="nan")
    sets = molecule_sets(args, metadata.get("pretraining", {}).get("arguments", {}))
    accuracy = cmim.score(sets["held_out"])
    print(f"greedy exact reconstruction, {len(sets['held_out'])} {sets['source']} molecules: {accuracy:.1%}")
    other_sets = {name: cmim.score(smiles) for name, smiles in sets["other"].items()}
    for name, value in other_sets.items():
        print(f"greedy exact reconstruction, {name}: {value:.1%}")
    standard, fitted, around = sampling(cmim, sets, args)

    results = {"model": args.model, "quick": args.quick, "reconstruction_source": sets["source"],
               "reconstruction_test_scaffolds": accuracy, "reconstruction_n": len(sets["held_out"]),
               "reconstruction_other": other_sets, "sampling_standard_normal": standard,
               "sampling_fitted_prior": fitted, "sampling_around_held_out": around,
               "learning_curve": metadata.get("learning_curve", []),
               "pretraining": metadata.get("pretraining", {}),
               "seconds": time.perf_counter() - start}
    write_json(args.out / f"{args.name}-metrics.json", results)
    if args.card:
        args.card.parent.mkdir(parents=True, exist_ok=True)
        args.card.write_text(model_card(results, metadata, args))
    return results


def model_card(results: dict, metadata: dict, args) -> str:
    """The measured facts of a model as a markdown page (regenerate it, do not edit it by hand)."""
    run = metadata.get("pretraining", {})
    arguments = run.get("arguments", {})
    lines = [
        f"# Model card: `{args.model}`", "",
        "Generated by `python -m benchmarks.evaluation.pretrained_metrics`; every number below was "
        "measured.", "",
        "| | |", "|---|---|",
        f"| data | {corpora(arguments)} |",
        *([f"| started from | `{run['initialised_from']['model']}` "
           f"({run['initialised_from'].get('molecules_seen', 0):,} molecules seen), its vocabulary and "
           "position table extended |"] if run.get("initialised_from") else
          [f"| started from | `{arguments['init_from']}` |"] if arguments.get("init_from") else []),
        f"| contrastive weight | {metadata.get('contrastive_weight')} (temperature "
        f"{metadata.get('temperature')}) |",
        f"| architecture | d_model {arguments.get('d_model')}, {arguments.get('n_encoder_layers')} encoder + "
        f"{arguments.get('n_decoder_layers')} decoder layers, K={arguments.get('n_latents')} latents of "
        f"D={arguments.get('latent_dim')}, dropout {arguments.get('dropout')} |",
        f"| optimisation | {optimisation(run, arguments)} |",
        f"| steps done | {run.get('steps')} ({run.get('molecules_seen', 0):,} molecules seen) |",
        f"| hardware | {args.hardware} |",
        f"| training wall time | {args.wall_time} |",
    ]
    if args.notes:
        lines += ["", args.notes]
    if any(Path(p).name == "broad.csv.gz" for p in arguments.get("inputs", [])):
        lines += ["", CHEMBL]
    standard, fitted = results["sampling_standard_normal"], results["sampling_fitted_prior"]

    def rates(m: dict) -> str:
        return f"{m['validity']:.1%} / {m['uniqueness']:.1%} / {m['novelty']:.1%}"

    lines += [
        "", "## Measured", "",
        "| metric | value |", "|---|---|",
        f"| greedy exact reconstruction, {results['reconstruction_n']} {results['reconstruction_source']} "
        f"molecules | {results['reconstruction_test_scaffolds']:.1%} |",
        *(f"| greedy exact reconstruction, {results['reconstruction_n']} molecules of {name} | {value:.1%} |"
          for name, value in results.get("reconstruction_other", {}).items()),
        f"| samples of the fitted latent prior, `sample`'s default (a diagonal Gaussian fitted to "
        f"{fitted['fitted_to']:,} training molecules' latent means, temperature {fitted['temperature']}; "
        f"{fitted['n']}): validity / uniqueness / novelty | {rates(fitted)} |",
        f"| samples of N(0, I), `sample(prior='standard')` ({standard['n']}): validity / uniqueness / "
        f"novelty | {rates(standard)} |",
        *(f"| around held-out molecules (z = mu + {m['sigma']} noise, {m['n']}): validity / uniqueness / "
          f"novelty / another molecule than the seed / effective novelty | {rates(m)} / {m['changed']:.1%} / "
          f"{m['effective_novelty']:.1%} |"
          for m in results["sampling_around_held_out"]),
        "",
        "Uniqueness is over the valid molecules, novelty over the unique valid ones (against MOSES "
        "train, and the broad corpus and the fragments where the model read them, as written and as "
        "the model read them, standardised). Held-out molecules are those the model never read, "
        "standardised, under any record. Around a held-out molecule, each draw has a seed of its "
        "own, so uniqueness is near 100% by construction, and the seed "
        "itself counts as new; effective novelty counts the distinct valid draws that are new and "
        "not their seed, over all draws (the MolMIM paper's definition). A larger noise scale trades "
        "validity for novelty. The prior's temperature was chosen on other draws "
        "(`scripts/bundled_models/latent_prior.py`).",
        "", "## Beside MolMIM", "",
        molmim_comparison(results),
        "", "## Learning curve (held-out validation molecules)", "",
    ]
    curve = results["learning_curve"]
    each = list(curve[-1].get("corpora", {})) if curve else []
    lines += [markdown_row(["molecules seen", "exact reconstruction", *each, "reconstruction loss"]),
              "|---" * (3 + len(each)) + "|"]
    lines += [markdown_row([f"{p['molecules_seen']:,}", f"{p['accuracy']:.1%}",
                            *(f"{p['corpora'][c]['accuracy']:.1%}" if c in p.get("corpora", {}) else ""
                              for c in each), f"{p['rec']:.4f}"]) for p in curve]
    return "\n".join(lines) + "\n"


def molmim_comparison(results: dict) -> str:
    """MolMIM's published sampling figures beside this model's, where the definitions match."""
    best = max(results["sampling_around_held_out"], key=lambda m: m["effective_novelty"])
    fitted = results["sampling_fitted_prior"]
    m = MOLMIM
    return (
        "MolMIM (65M parameters, about 1.5 billion ZINC-15 molecules; BioNeMo framework's model card "
        f"for MolMIM 70M v24.3) reports {m['reconstruction']:.2%} greedy exact reconstruction of its "
        f"validation set and, around seed molecules at its best radius ({m['radius']}): validity "
        f"{m['validity']:.0%}, uniqueness {m['uniqueness']:.0%}, novelty {m['novelty']:.0%}, another "
        f"molecule than the seed {m['changed']:.0%}, effective novelty {m['effective_novelty']:.0%}. "
        f"This model's best noise scale by the same measure is {best['sigma']}: validity "
        f"{best['validity']:.1%}, another molecule than the seed {best['changed']:.1%}, effective novelty "
        f"{best['effective_novelty']:.1%}. The two noise scales are not comparable (each latent space "
        "has its own spread), only the best of each. MolMIM publishes no validity for draws of its "
        f"prior; its validity around seeds is the nearest figure: this model's prior gives "
        f"{fitted['validity']:.1%}.")


def optimisation(run: dict, arguments: dict) -> str:
    """The optimiser settings in words; a run trained in stages (a wall-time budget each, or a
    number of steps) lists them."""
    head = f"batch {arguments.get('batch_size')}, AdamW"
    if not run.get("stages"):
        return f"{head} lr {arguments.get('learning_rate')}, schedule over {arguments.get('max_steps')} steps"
    stages = "; ".join(f"stage {i}: peak lr {stage['learning_rate']}, {stage_length(stage)}"
                       for i, stage in enumerate(run["stages"], 1))
    return f"{head}; {stages}; each stage {run.get('schedule', '')}"


def stage_length(stage: dict) -> str:
    """How long one stage trained, and where, if its stages ran on several machines."""
    where = f" on {stage['hardware']}" if "hardware" in stage else ""
    if stage.get("minutes") is None:
        return f"{stage['steps']:,} steps of {stage['batch_size']}{where}"
    return f"{stage['minutes']} min of wall time ({stage['steps']:,} steps){where}"


def markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def corpora(arguments: dict) -> str:
    """The corpora a run read, with their sampling weights and hold-out, in words."""
    inputs = arguments.get("inputs", [])
    weights = arguments.get("weights") or [1] * len(inputs)
    total = sum(weights) or 1
    named = [CORPORA.get(Path(p).name, Path(p).name) for p in inputs]
    held = f"every {arguments.get('holdout_every', 1000)}th record of each held out for validation"
    if len(inputs) == 1:
        return f"{named[0]}; {held}"
    shares = (f"{name}: {w / total:.0%} of the batches" for name, w in zip(named, weights, strict=True))
    return "; ".join(shares) + f"; {held}"


if __name__ == "__main__":
    as_command(main)
