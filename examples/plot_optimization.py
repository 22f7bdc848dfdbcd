"""Optimising a molecule: more soluble molecules near a seed, by a solubility model's predictions.

A pipeline fitted on ESOL predicts aqueous solubility from cMIM embeddings. CMA-ES then searches
the latent space around a seed molecule; the decoded molecules at least ``--similarity`` similar
to the seed are scored by the pipeline, and the best one is kept. The left panel follows the best
predicted solubility found so far, generation by generation; the right one draws the seed and the
best molecule. The scores are the model's predictions, not measurements: molecules to check first,
not answers.
"""

from _common import embedder, esol, make_parser, parse
from matplotlib.figure import Figure
from rdkit import Chem
from rdkit.Chem import Draw
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from sklearn_cmim import optimize_molecules


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--seed", default="CCOc1ccc(NC(C)=O)cc1", help="the molecule to start from "
                        "(default: phenacetin)")
    parser.add_argument("--similarity", type=float, default=0.4,
                        help="smallest Tanimoto similarity to the seed (default: %(default)s)")
    parser.add_argument("--budget", type=int, default=100,
                        help="most molecules the solubility model scores (default: %(default)s)")
    parser.add_argument("--random-state", type=int, default=0, help="seed of the search")
    args = parse(parser)

    smiles, solubility = esol(args)
    solubility_model = make_pipeline(embedder(args), StandardScaler(), SVR(C=5.0)).fit(smiles, solubility)
    # The search moves through the latent means, which the decoder turns back into molecules.
    cmim = embedder(args, embedding="latent").fit(smiles)
    budget = 10 if args.quick else args.budget  # --quick: a tiny model, a token search
    results = optimize_molecules(cmim, [args.seed], solubility_model, similarity=args.similarity,
                                 budget=budget, random_state=args.random_state)
    best, history = results["smiles"][0], results["history"][0]
    print(f"{args.seed}: predicted log solubility {results['seed_score'][0]:.2f}; best found {best}: "
          f"{results['score'][0]:.2f} (similarity {results['similarity'][0]:.2f}, "
          f"{results['n_scored'][0]} molecules scored)")

    figure = Figure(figsize=(9, 3.8), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[1, 1.3])
    left.step(range(len(history)), history, where="post", marker="o", markersize=3)
    left.set(xlabel="CMA-ES generation", ylabel="best predicted log solubility (mol/L)",
             title=f"similarity to the seed >= {args.similarity}")
    # The seed and the best molecule side by side, each at its own scale.
    image = Draw.MolsToGridImage([Chem.MolFromSmiles(args.seed), Chem.MolFromSmiles(best)], molsPerRow=2,
                                 subImgSize=(300, 260), drawMolsSameScale=False,
                                 legends=[f"seed: {results['seed_score'][0]:.2f}",
                                          "best found: " + (f"{results['score'][0]:.2f}" if best != args.seed
                                                            else "none better")])
    right.imshow(image)
    right.set_axis_off()
    path = args.output_dir / "optimization.png"
    figure.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
