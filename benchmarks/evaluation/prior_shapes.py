"""Which latent distribution ``sample`` should draw from: shapes fitted to training molecules' codes.

A-MIM trains the codes against N(0, I), but the latent means of real molecules fill a much smaller
region, so few draws of N(0, I) decode to valid molecules. This fits candidate distributions to
the latent means of a model's training molecules (records never held out, drawn as
``scripts/bundled_models/latent_prior.py`` draws them) and decodes draws of each:

* a diagonal Gaussian (what ``CMIMTransformer.latent_prior_`` is) and a full-covariance one,
  each drawn at several temperatures (the noise scaled by it);
* mixtures of full-covariance Gaussians, at several temperatures;
* draws around single fitting molecules' means (a kernel density estimate) at a few noise scales;
* N(0, I), for reference.

Each is scored by validity, uniqueness (of the valid ones), novelty (of the distinct valid ones,
against every corpus the model read, as written and as the model read it, and the fitting
molecules) and, what the choice rests on, the share of draws that are valid, distinct and new.
Each shape's best scale is picked on the same draws it is reported on, which flatters every
shape alike by about the draws' sampling error. A full run needs ``../shared/data`` and the
corpora prepared (``scripts/bundled_models/prepare.sh``).

    python -m benchmarks.evaluation.prior_shapes cmim-broad mim-broad
    python -m benchmarks.evaluation.prior_shapes --quick     # CI smoke run on bundled ESOL
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
from sklearn.mixture import GaussianMixture

from benchmarks.common import (
    as_command,
    at_least,
    command_line,
    corpora_smiles,
    generation_metrics,
    load_model,
    markdown_table,
    set_outputs,
    training_records,
    update_markdown_section,
    write_json,
)
from sklearn_cmim.chem.standardize import canonical_smiles
from sklearn_cmim.datasets import load_esol
from sklearn_cmim.nn.sampling import LatentPrior
from sklearn_cmim.persistence import load_pretrained

SECTION = "prior_shapes"
TEMPERATURES = (0.2, 0.3, 0.5, 0.7, 1.0)
MIXTURE_TEMPERATURES = (0.5, 0.7, 1.0)
AROUND_SIGMAS = (0.1, 0.13, 0.2)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=["cmim-broad"],
                        help="bundled names or model directories")
    parser.add_argument("--fit-molecules", type=at_least(2), default=4000,
                        help="training molecules to fit to")
    parser.add_argument("--draws", type=at_least(1), default=300, help="draws decoded per shape and scale")
    parser.add_argument("--components", type=int, nargs="+", default=[16, 64], help="mixture sizes")
    parser.add_argument("--out", type=Path, help="JSON (default docs/benchmarks)")
    parser.add_argument("--markdown", type=Path, help="report to update (default docs/benchmarks.md)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 64 bundled ESOL molecules stand in for the training ones")
    args = parser.parse_args(argv)
    if args.quick:
        args.fit_molecules, args.draws, args.components = 64, 8, [2]
    set_outputs(args, "prior-shapes-quick")
    return args


def fitting_set(name: str, args) -> tuple[list[str], set[str]]:
    """The molecules to fit to, and what a draw must differ from to count as new."""
    if args.quick:
        esol = load_esol()[0][:args.fit_molecules]
        return esol, {canonical_smiles(s) for s in esol}
    arguments = load_pretrained(name).metadata["pretraining"]["arguments"]
    molecules = training_records(arguments, args.fit_molecules, np.random.default_rng(0))
    return molecules, corpora_smiles() | {canonical_smiles(s) for s in molecules}


def candidates(mu: np.ndarray, args, rng: np.random.Generator):
    """(shape, scale, draws) for every candidate distribution fitted to the latent means ``mu``."""
    n, width = args.draws, mu.shape[1]
    yield "N(0, I)", None, rng.standard_normal((n, width))
    diagonal = LatentPrior.fit(mu)
    for t in TEMPERATURES:
        yield "diagonal Gaussian", t, dataclasses.replace(diagonal, temperature=t).draw(n, rng)
    cholesky = np.linalg.cholesky(np.cov(mu, rowvar=False) + 1e-6 * np.eye(width))
    for t in TEMPERATURES:
        yield "full Gaussian", t, diagonal.mean + t * rng.standard_normal((n, width)) @ cholesky.T
    for k in args.components:
        mixture = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=0).fit(mu)
        factors = np.linalg.cholesky(mixture.covariances_)
        for t in MIXTURE_TEMPERATURES:
            component = rng.choice(k, n, p=mixture.weights_)
            noise = (factors[component] @ rng.standard_normal((n, width, 1)))[..., 0]
            yield f"mixture of {k} full Gaussians", t, mixture.means_[component] + t * noise
    for sigma in AROUND_SIGMAS:
        centres = mu[rng.choice(len(mu), n)]
        yield "around single training molecules", sigma, centres + sigma * rng.standard_normal((n, width))


def measure(name: str, args) -> dict:
    start = time.perf_counter()
    model = load_model(name, embedding="latent", errors="nan", random_state=0)
    molecules, known = fitting_set(name, args)
    mu = model.transform(molecules).astype(np.float64)
    mu = mu[np.isfinite(mu).all(axis=1)]
    rows = []
    for shape, scale, z in candidates(mu, args, np.random.default_rng(0)):
        decoded = model.inverse_transform(z.astype(np.float32))
        row = {"shape": shape, "scale": scale, **generation_metrics(decoded, known)}
        rows.append(row)
        print(f"{name} | {shape} | {scale}: {row['validity']:.1%} valid, "
              f"{row['valid_distinct_new']:.1%} valid, distinct and new", flush=True)
    return {"fitted_to": len(mu), "draws": args.draws, "rows": rows, "seconds": time.perf_counter() - start}


def markdown(report: dict) -> str:
    lines = [f"## Latent prior: which shape to sample from\n\nWritten by `{report['command']}`. Each "
             "distribution is fitted to the latent means of training molecules (never held-out records) "
             "and drawn at the scale given (temperature: the noise's factor; around single molecules: "
             "the noise's standard deviation). Uniqueness is over the valid draws, novelty over the "
             "distinct valid ones against every corpus the model read and the fitting molecules; the "
             "last column is the share of all draws that are valid, distinct and new. `sample` draws "
             "from the diagonal Gaussian, at a temperature each bundled model chose on other draws "
             "(`scripts/bundled_models/latent_prior.py`; the model cards give it). The best share is in "
             "bold; a shape's best scale, like that bold row, is picked on the same draws it is reported "
             "on, which flatters every shape alike by about the draws' sampling error.\n"]
    for name, result in report["models"].items():
        best = max(row["valid_distinct_new"] for row in result["rows"])
        rows = [[row["shape"], "" if row["scale"] is None else row["scale"], f"{row['validity']:.1%}",
                 f"{row['uniqueness']:.1%}", f"{row['novelty']:.1%}",
                 f"**{row['valid_distinct_new']:.1%}**" if row["valid_distinct_new"] == best
                 else f"{row['valid_distinct_new']:.1%}"] for row in result["rows"]]
        header = ["shape", "scale", "valid", "unique", "new", "valid, distinct, new"]
        lines += [f"### `{name}` ({result['fitted_to']:,} molecules fitted, {result['draws']} draws each)\n",
                  markdown_table(header, rows), ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    report = {"command": command_line("benchmarks.evaluation.prior_shapes", argv), "quick": args.quick,
              "models": {name: measure(name, args) for name in args.models}}
    write_json(args.out / f"{SECTION}.json", report)
    update_markdown_section(args.markdown, SECTION, markdown(report))
    return report


if __name__ == "__main__":
    as_command(main)
