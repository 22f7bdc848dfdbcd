"""Generative metrics of a pretrained model, as reported in its model card.

* greedy exact-match reconstruction of held-out MOSES ``test_scaffolds`` molecules;
* validity, uniqueness and novelty (against MOSES train) of molecules decoded from prior draws,
  and from latents perturbed around held-out molecules (z = mu + sigma * noise);
* the learning curve stored by ``cmim pretrain`` (accuracy against molecules seen).

    python benchmarks/pretrained_metrics.py cmim-moses --output runs/cmim-moses-metrics.json
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import time
from pathlib import Path

import numpy as np

from sklearn_cmim import CMIMTransformer
from sklearn_cmim.chem import canonical_smiles
from sklearn_cmim.persistence import load_pretrained

MOSES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "moses"


def read_smiles(name: str, n: int | None = None) -> list[str]:
    with gzip.open(MOSES / name, "rt") as handle:
        next(handle)
        return [line.strip() for line in itertools.islice(handle, n)]


def generation_metrics(smiles, training: set[str]) -> dict:
    """Validity, uniqueness (of the valid ones) and novelty (of the unique valid ones)."""
    canonical = [canonical_smiles(s) if s else None for s in smiles]
    valid = [c for c in canonical if c]
    unique = set(valid)
    return {"n": len(smiles), "validity": len(valid) / len(smiles),
            "uniqueness": len(unique) / max(len(valid), 1),
            "novelty": len(unique - training) / max(len(unique), 1),
            "examples": sorted(unique)[:5]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="bundled model name or model directory")
    parser.add_argument("--reconstruct", type=int, default=2000, help="test_scaffolds molecules")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--sigma", type=float, default=0.1, help="noise scale around held-out latents")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    cmim = CMIMTransformer(pretrained=args.model, max_epochs=0, embedding="latent", random_state=0)
    held_out = read_smiles("test_scaffolds.csv.gz", args.reconstruct)
    cmim.fit(held_out[:1])
    accuracy = cmim.score(held_out)
    print(f"greedy exact reconstruction, {len(held_out)} test_scaffolds molecules: {accuracy:.1%}")

    training = set(read_smiles("train.csv.gz"))
    prior = generation_metrics(cmim.sample(args.samples, random_state=0), training)
    rng = np.random.default_rng(0)
    mu = cmim.transform(read_smiles("test.csv.gz", args.samples))
    around = cmim.inverse_transform(mu + args.sigma * rng.standard_normal(mu.shape).astype(np.float32))
    around = generation_metrics(around, training)
    for name, m in (("prior", prior), (f"around held-out (sigma={args.sigma})", around)):
        print(f"{name}: validity {m['validity']:.1%}, uniqueness {m['uniqueness']:.1%}, "
              f"novelty {m['novelty']:.1%}")

    metadata = load_pretrained(args.model).metadata
    results = {"model": args.model, "reconstruction_test_scaffolds": accuracy,
               "reconstruction_n": len(held_out), "sampling_prior": prior,
               "sampling_around_held_out": {**around, "sigma": args.sigma},
               "learning_curve": metadata.get("learning_curve", []),
               "pretraining": metadata.get("pretraining", {}),
               "seconds": time.perf_counter() - start}
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
