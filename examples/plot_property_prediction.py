"""Property prediction: aqueous solubility from cMIM embeddings, predicted against measured.

A pipeline embeds the molecules and fits a support vector regressor on the embeddings. It learns
from 80% of ESOL and is judged on the other 20%, which it never sees during fitting.
"""

import numpy as np
from _common import embedder, esol, make_parser, parse
from matplotlib.figure import Figure
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR


def main() -> None:
    args = parse(make_parser(__doc__))
    smiles, solubility = esol(args)
    train_smiles, test_smiles, train_y, test_y = train_test_split(
        smiles, solubility, test_size=0.2, random_state=0)

    # Embedding features differ in scale, and an RBF kernel compares distances: standardise first.
    model = make_pipeline(embedder(args), StandardScaler(), SVR(C=5.0))
    predicted = model.fit(train_smiles, train_y).predict(test_smiles)
    rmse = float(np.sqrt(np.mean((predicted - test_y) ** 2)))

    # A bare Figure renders PNGs with matplotlib's Agg backend and never looks for a display.
    figure = Figure(figsize=(4.8, 4.5), layout="constrained")
    ax = figure.subplots()
    ax.scatter(test_y, predicted, s=14, alpha=0.7, edgecolors="none")
    low, high = min(test_y.min(), predicted.min()), max(test_y.max(), predicted.max())
    ax.plot([low, high], [low, high], color="0.4", linestyle="--", linewidth=1,
            label="prediction = measurement")
    r2 = r2_score(test_y, predicted)
    ax.set(xlabel="measured log solubility (mol/L)", ylabel="predicted log solubility (mol/L)",
           title=f"ESOL test split ({len(test_y)} molecules)\nRMSE {rmse:.2f}, R² {r2:.2f}")
    ax.legend(loc="upper left")
    ax.set_aspect("equal")
    path = args.output_dir / "property_prediction.png"
    figure.savefig(path, dpi=120)
    print(f"test RMSE {rmse:.3f} log mol/L; wrote {path}")


if __name__ == "__main__":
    main()
