"""Interpolation through the latent space: from one molecule to another in equal steps.

Both molecules are encoded to their latent means; the points on the straight line between the
two codes are decoded back to molecules and drawn with RDKit. A smooth latent space turns a
straight line into a series of small chemical edits.
"""

import numpy as np
from _common import drawable, embedder, esol, make_parser, parse
from rdkit.Chem import Draw


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--start", default="CCCCCCCO", help="first molecule (default: 1-heptanol)")
    parser.add_argument("--end", default="CCOc1ccc(NC(=O)C)cc1", help="last molecule (default: phenacetin)")
    parser.add_argument("--steps", type=int, default=8, help="molecules drawn, ends included")
    args = parse(parser)

    # embedding="latent": transform gives the latent means, which is what inverse_transform decodes.
    cmim = embedder(args, embedding="latent").fit(esol(args)[0])
    start, end = cmim.transform([args.start, args.end])
    weights = np.linspace(0.0, 1.0, args.steps)[:, None]
    decoded = cmim.inverse_transform((1 - weights) * start + weights * end)

    # A decoded string need not be a valid molecule: draw a "?" cell for those, and say so.
    molecules, legends = [], []
    for weight, smiles in zip(weights[:, 0], decoded, strict=True):
        print(f"t = {weight:.2f}  {smiles}")
        mol, valid = drawable(smiles)
        molecules.append(mol)
        legends.append(f"t = {weight:.2f}" + ("" if valid else " (invalid)"))
    # Each molecule at its own scale: a long one would otherwise shrink all the others.
    image = Draw.MolsToGridImage(molecules, molsPerRow=4, subImgSize=(240, 200), legends=legends,
                                 drawMolsSameScale=False)
    path = args.output_dir / "interpolation.png"
    image.save(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
