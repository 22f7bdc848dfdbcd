"""A map of the embedding space: ESOL molecules projected onto two principal components, coloured
by their measured solubility.

If the embeddings carry what drives solubility, the colours change smoothly across the map.
"""

from _common import embedder, esol, make_parser, parse
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main() -> None:
    args = parse(make_parser(__doc__))
    smiles, solubility = esol(args)

    # Standardised before PCA, so that the components are not just the features of largest scale.
    projection = make_pipeline(embedder(args), StandardScaler(), PCA(n_components=2, random_state=0))
    xy = projection.fit_transform(smiles)
    explained = projection[-1].explained_variance_ratio_

    # A bare Figure renders PNGs with matplotlib's Agg backend and never looks for a display.
    figure = Figure(figsize=(5.6, 4.5), layout="constrained")
    ax = figure.subplots()
    points = ax.scatter(xy[:, 0], xy[:, 1], c=solubility, cmap="viridis", s=12, alpha=0.8, edgecolors="none")
    figure.colorbar(points, ax=ax, label="measured log solubility (mol/L)")
    ax.set(xlabel=f"principal component 1 ({explained[0]:.0%} of the variance)",
           ylabel=f"principal component 2 ({explained[1]:.0%})",
           title=f"cMIM embeddings of {len(smiles)} ESOL molecules")
    path = args.output_dir / "embedding_map.png"
    figure.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
