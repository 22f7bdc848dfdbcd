"""``cmim sample``: decode molecules around given molecules, or from the model's latent prior.

    cmim sample --n 10 --around "CC(=O)Oc1ccccc1C(=O)O"
    cmim sample --n 10 --around-file seeds.smi --sigma 0.1 --output near.smi
    cmim sample --n 100 --random-state 0 --output prior.smi

With --around (or --around-file), --n molecules are decoded greedily around each given molecule,
in the order given, from its latent mean plus sigma * N(0, I) noise: at the default sigma nearly
all are valid, most of them the molecule itself; a larger sigma gives more new molecules and
fewer valid ones. Without, each is decoded from a latent drawn from the prior the model carries,
a Gaussian fitted to its training molecules' codes: with the bundled models a third to a half
are valid, nearly all of them new molecules (--prior standard draws N(0, I) instead, of which very
few are valid). One SMILES per line, an empty line where the decoding did not finish (no end
within the model's maximum length); the last line on stderr says how many are valid (RDKit
parses them) and how many of those are unique.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from ..chem.smiles_files import check_output, read_smiles, text_output
from ..exceptions import UnknownTokenWarning
from ..file_embedding import ChunkEmbedder, load_model
from ..nn.sampling import DEFAULT_SIGMA
from .common import (
    ArgumentParser,
    HelpFormatter,
    add_options,
    given_options,
    non_negative_float,
    output_path,
    positive_int,
    random_seed,
    report_error,
)

__all__ = ["build_parser", "main", "summary"]


def summary(smiles) -> str:
    """A line saying how many molecules are valid (RDKit parses them) and how many are unique.

    Examples
    --------
    >>> summary(["CCO", "OCC", "C1C", "c1ccccc1"])
    '4 molecules: 3 valid (75.0%), 2 unique among the valid (66.7%)'
    """
    from ..chem.standardize import canonical_smiles  # on use: --help must not load RDKit

    canonical = [c for c in map(canonical_smiles, smiles) if c is not None]
    n_valid, n_unique = len(canonical), len(set(canonical))
    return (f"{len(smiles)} molecules: {n_valid} valid ({n_valid / len(smiles):.1%}), {n_unique} "
            f"unique among the valid ({n_unique / max(n_valid, 1):.1%})")


def check_memory(n_molecules: int) -> None:
    """Raise ``MemoryError`` for more decoded molecules than this machine's memory holds, at about a
    hundred bytes each."""
    try:
        holds = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 100
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows): numpy's MemoryError says it
        return
    if n_molecules > holds:
        raise MemoryError


def build_parser(prog: str = "cmim sample") -> ArgumentParser:
    """The argument parser of ``cmim sample``.

    Examples
    --------
    >>> from sklearn_cmim.cli.sample import build_parser
    >>> args = build_parser().parse_args(["--n", "10", "--around", "CCO", "c1ccccc1"])
    >>> args.n, args.around, args.sigma, args.model
    (10, ['CCO', 'c1ccccc1'], 0.07, 'cmim-broad')
    """
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--n", type=positive_int, required=True,
                        help="molecules to decode (around each given molecule, with --around)")
    add_options(parser, "--model")
    around = parser.add_mutually_exclusive_group()
    around.add_argument("--around", nargs="+", metavar="SMILES", help="sample around these molecules")
    around.add_argument("--around-file", type=Path, metavar="FILE",
                        help="sample around the molecules of this SMILES file (.smi, .txt or .csv)")
    add_options(parser, "--column")
    parser.add_argument("--sigma", type=non_negative_float, default=DEFAULT_SIGMA,
                        help="standard deviation of the noise added to each molecule's latent: larger "
                             "gives more new molecules, fewer of them valid; 0 decodes the latent mean")
    parser.add_argument("--prior", choices=("fitted", "standard"), default="fitted",
                        help="without --around: draw from the model's fitted latent prior, or from N(0, I)")
    parser.add_argument("--random-state", type=random_seed, help="seed, for reproducible samples")
    parser.add_argument("--output", type=output_path,
                        help="file to write the SMILES to (default, or -: stdout)")
    add_options(parser, "--device")
    return parser


def main(argv=None, prog: str = "cmim sample") -> int:
    """Run ``cmim sample``: decode molecules from the latent prior or around given molecules.

    Returns
    -------
    status : int
        0 on success, with a summary line (valid and unique molecules) on stderr; 2 after a
        user error (a bad file, model or molecule), reported in one line on stderr.

    Examples
    --------
    Two molecules around each of two given ones, written to a file, one SMILES per line:

    >>> import tempfile
    >>> from pathlib import Path
    >>> from sklearn_cmim.cli.sample import main
    >>> tmp = tempfile.TemporaryDirectory()
    >>> output = Path(tmp.name, "around.smi")
    >>> main(["--n", "2", "--around", "CCO", "c1ccccc1", "--random-state", "0",
    ...       "--output", str(output)])
    0
    >>> len(output.read_text().splitlines())
    4

    Without ``--around``, from the prior (without ``--output``, to stdout):

    >>> prior = Path(tmp.name, "prior.smi")
    >>> main(["--n", "3", "--random-state", "0", "--output", str(prior)])
    0
    >>> len(prior.read_text().splitlines())
    3
    >>> tmp.cleanup()
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    around = args.around is not None or args.around_file is not None
    if around and args.prior != "fitted":
        parser.error("--prior chooses what to draw from without --around; with it, draws are around "
                     "the given molecules: drop one")
    if not around and given_options(lambda: build_parser(prog), argv, ["sigma"]):
        parser.error("--sigma is the noise around the given molecules: it needs --around or --around-file")
    if args.column is not None and args.around_file is None:
        parser.error("--column names the SMILES column of --around-file: it needs one")
    try:
        check_output(args.output, args.around_file)  # before the sampling, which takes a while
        if args.around_file is not None:
            seeds = list(read_smiles(args.around_file, args.column))
            where = f"line {{}} of {args.around_file}"
            if not seeds:
                raise ValueError(f"{args.around_file} holds no molecules")
        else:
            seeds, where = list(enumerate(args.around or [], 1)), "--around molecule {}"
        check_memory(args.n * max(1, len(seeds)))  # before numpy tries, and fails or swaps
        model = load_model(args.model, embedding="latent", device=args.device)
        if seeds:
            # Checked first, before any decoding: the model reads bad seeds as NaN rows, so this
            # is what names one by its line. The encoder pass it repeats is cheap beside decoding.
            ChunkEmbedder(model, "raise", where)(seeds)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UnknownTokenWarning)  # the check above reported them
                smiles = model.sample(args.n, random_state=args.random_state,
                                      around=[smiles for _, smiles in seeds], sigma=args.sigma)
        elif args.prior == "fitted" and model.latent_prior_ is None:
            raise ValueError(f"{args.model} carries no latent prior (a directory cmim export wrote "
                             "without its corpora); pass --prior standard, or sample --around molecules")
        else:
            smiles = model.sample(args.n, random_state=args.random_state, prior=args.prior)
        with text_output(args.output) as handle:
            handle.writelines(f"{s or ''}\n" for s in smiles)  # a decoding that did not finish: empty
    except (OSError, ValueError) as error:
        return report_error(prog, error)
    except MemoryError:
        return report_error(prog, f"--n {args.n}: too many molecules to hold in memory; sample fewer "
                                  "at a time, each run with its own --random-state")
    hint = "" if seeds else (f" (from the {args.prior} prior; sampling --around known molecules gives "
                             "more valid ones)")
    print(summary(smiles) + hint, file=sys.stderr)
    return 0
