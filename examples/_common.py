"""What the examples share: their command line, the model they run on, where figures go, and
how a decoding that is no molecule is drawn.

Every example runs on a model bundled with the package (``--model``, default ``cmim-broad``), or,
with ``--quick``, on a tiny model trained from scratch in seconds, so that CI can run them all.
"""

import argparse
from pathlib import Path

import numpy as np
from rdkit import Chem

from sklearn_cmim import CMIMTransformer, list_pretrained
from sklearn_cmim.config import DEFAULT_MODEL
from sklearn_cmim.datasets import load_esol

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "_static" / "examples"

# --quick: small enough to train in about a second. Its figures show what an example does,
# not what cMIM can do: two epochs on a few dozen molecules teach a model very little.
QUICK_MOLECULES = 48
QUICK_MODEL = dict(d_model=32, n_heads=2, d_ff=64, n_encoder_layers=1, n_decoder_layers=1,
                   n_latents=1, latent_dim=8, max_epochs=2, batch_size=8, random_state=0)


def make_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every example has; each adds its own."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="bundled model, one of sklearn_cmim.list_pretrained() (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="train a tiny model on a few dozen ESOL molecules instead (seconds, for CI)")
    parser.add_argument("--output-dir", type=Path, default=FIGURES,
                        help="folder for the figure (default: docs/_static/examples)")
    return parser


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line; without --quick, stop in one line unless the model is bundled."""
    args = parser.parse_args()
    bundled = list_pretrained()
    if not args.quick and args.model not in bundled:
        parser.exit(1, f"{parser.prog}: no bundled model named {args.model!r} (bundled: "
                       f"{', '.join(bundled) or 'none'}); run with --quick to train a tiny one instead\n")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    return args


def esol(args: argparse.Namespace) -> tuple[list[str], np.ndarray]:
    """The ESOL molecules and their solubilities: all 1,128, or the first few dozen with --quick."""
    smiles, solubility = load_esol()
    n = QUICK_MOLECULES if args.quick else len(smiles)
    return smiles[:n], solubility[:n]


def embedder(args: argparse.Namespace, **params) -> CMIMTransformer:
    """An unfitted estimator: the bundled model as it is (``max_epochs=0``: ``fit`` only loads
    it), or with --quick a tiny model that ``fit`` trains from scratch."""
    if args.quick:
        return CMIMTransformer(**QUICK_MODEL, **params)
    return CMIMTransformer(pretrained=args.model, max_epochs=0, **params)


def drawable(smiles: str | None) -> tuple[Chem.Mol, bool]:
    """The molecule to draw for a decoded string, and whether it is one.

    RDKit's grid draws neither an empty ``Mol`` nor the legend under it, and an unfinished
    decoding is None or "", so a decoding that is no molecule gets a one-atom stand-in drawn as
    "?": its cell and legend then show.
    """
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is not None and mol.GetNumAtoms():
        return mol, True
    stand_in = Chem.RWMol()
    stand_in.AddAtom(Chem.Atom(0))
    stand_in.GetAtomWithIdx(0).SetProp("atomLabel", "?")
    return stand_in.GetMol(), False
