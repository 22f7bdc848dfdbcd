"""Embeddings and descriptors together: a FeatureUnion of cMIM embeddings and RDKit descriptors.

Each feature set carries part of what decides a property. A FeatureUnion puts both side by side
in one pipeline, each block scaled its own way, in front of one kernel regressor; cross-validation
on ESOL scores each block alone and the two together, so you can see what each adds.
"""

from _common import embedder, esol, make_parser, parse
from matplotlib.figure import Figure
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import QuantileTransformer, StandardScaler
from sklearn.svm import SVR

from sklearn_cmim import RDKitDescriptorsTransformer


def main() -> None:
    args = parse(make_parser(__doc__))
    smiles, solubility = esol(args)

    embeddings = make_pipeline(embedder(args), StandardScaler())
    # Descriptors span many orders of magnitude (counts, areas, Ipc near 1e12): mapping each to a
    # normal distribution by its quantiles puts them on the scale an RBF kernel needs. The imputer
    # keeps the recipe working on molecules where a descriptor is undefined.
    descriptors = make_pipeline(RDKitDescriptorsTransformer(), SimpleImputer(strategy="median"),
                                QuantileTransformer(n_quantiles=20 if args.quick else 200,
                                                    output_distribution="normal"))
    feature_sets = {
        "cMIM embeddings": embeddings,
        "RDKit 2D descriptors": descriptors,
        "both (FeatureUnion)": FeatureUnion([("cmim", embeddings), ("rdkit", descriptors)]),
    }
    folds = KFold(n_splits=3 if args.quick else 5, shuffle=True, random_state=0)
    rmse = {}
    for name, features in feature_sets.items():
        model = make_pipeline(features, SVR(C=5.0))
        rmse[name] = -cross_val_score(model, smiles, solubility, cv=folds,
                                      scoring="neg_root_mean_squared_error")
        print(f"{name}: RMSE {rmse[name].mean():.3f} ± {rmse[name].std():.3f}")

    # A bare Figure renders PNGs with matplotlib's Agg backend and never looks for a display.
    figure = Figure(figsize=(5.6, 3.4), layout="constrained")
    ax = figure.subplots()
    names = list(rmse)
    ax.barh(names, [rmse[n].mean() for n in names], xerr=[rmse[n].std() for n in names],
            color=["tab:blue", "tab:gray", "tab:green"], capsize=4)
    ax.invert_yaxis()
    ax.set(xlabel="RMSE, log mol/L (lower is better)",
           title=f"ESOL, {folds.get_n_splits()}-fold cross-validation ({len(smiles)} molecules)")
    path = args.output_dir / "descriptor_union.png"
    figure.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
