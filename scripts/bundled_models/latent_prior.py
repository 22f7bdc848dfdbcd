"""Fit each bundled model's latent prior to its training molecules and store it in its config.

    PYTHONPATH=. python scripts/bundled_models/latent_prior.py sklearn_cmim/pretrained/cmim-broad \
        sklearn_cmim/pretrained/mim-broad

``CMIMTransformer.sample`` draws from this prior by default (docs/method.md, *Sampling*). The
molecules are 10,000 training records (never a held-out one) drawn from the corpora the model
read, in its batches' proportions (``benchmarks.common.training_records``). The temperature is
chosen on validation draws (a seed of their own; the model cards report fresh draws): the one of
``TEMPERATURES`` at which most of 500 draws decode to valid, distinct molecules found in no
corpus the model read, as written or as the model read them (standardised). Only ``config.json``
changes. Run it from the repository root (it reads the corpora through ``benchmarks``), with
``../shared/data`` beside it and the corpora prepared (``prepare.sh``).
"""

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from benchmarks.common import corpora_smiles, generation_metrics, training_records
from sklearn_cmim import CMIMTransformer
from sklearn_cmim.nn.inference import PRIOR_MOLECULES
from sklearn_cmim.nn.sampling import LatentPrior

TEMPERATURES = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7)
VALIDATION_DRAWS = 500


def choose_temperature(model, prior: LatentPrior, known: set[str]) -> float:
    scores = {}
    for temperature in TEMPERATURES:
        model.latent_prior_ = dataclasses.replace(prior, temperature=temperature)
        draws = model.sample(VALIDATION_DRAWS, random_state=1)
        scores[temperature] = generation_metrics(draws, known)["valid_distinct_new"]
        print(f"  temperature {temperature}: {scores[temperature]:.1%} valid, unique and new")
    return max(scores, key=scores.get)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="model directories to fit and update")
    args = parser.parse_args(argv)
    known = corpora_smiles()
    for directory in args.models:
        config_path = directory / "config.json"
        config = json.loads(config_path.read_text())
        molecules = training_records(config["metadata"]["pretraining"]["arguments"], PRIOR_MOLECULES,
                                     np.random.default_rng(0))
        model = CMIMTransformer.from_pretrained(directory, embedding="latent", errors="nan")
        prior = LatentPrior.fit(model.transform(molecules))
        prior = dataclasses.replace(prior, temperature=choose_temperature(model, prior, known))
        config["latent_prior"] = prior.to_dict()
        config_path.write_text(json.dumps(config, indent=2))
        spread = np.quantile(prior.std, [0.1, 0.5, 0.9]).round(3).tolist()
        print(f"{directory}: prior fitted to {prior.n_molecules:,} molecules; std quantiles "
              f"(10/50/90%) {spread}; temperature {prior.temperature}")


if __name__ == "__main__":
    main()
