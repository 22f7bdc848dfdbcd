"""``cmim optimize``: search the latent space around each seed molecule for ones that score higher.

    cmim optimize seeds.smi --objective qed --output better.csv
    cmim optimize seeds.smi --objective plogp --similarity 0.6 --budget 200 --random-state 0
    cmim optimize seeds.csv --objective solubility.joblib --output soluble.csv

For each molecule of SEEDS, CMA-ES proposes latent codes around its latent mean; they are decoded,
and the valid molecules at least --similarity similar to the seed (Tanimoto, Morgan radius 2,
2,048 bits) are scored, at most --budget of them per seed. Each seed is measured as the model reads
it, standardised (largest fragment, neutral, no stereochemistry): a salt's parent is no
improvement. One CSV row per seed: seed (as given), smiles (the best molecule found, the
standardised seed if none scored higher), score, improvement (never negative) and similarity.
--objective is "qed", "plogp" (penalised logP: logP - SA score - long-ring penalty) or a joblib
file holding a fitted scikit-learn estimator or pipeline that reads SMILES, whose predictions are
maximised (a classifier's probability of --positive-class).
Loading a joblib file runs code stored in it: pass only files you made or trust.
Needs the cma package: pip install 'sklearn-cmim[optimize]'.
"""

from __future__ import annotations

import csv
import sys
import warnings
from pathlib import Path

from ..chem.smiles_files import check_output, read_smiles, text_output
from ..config import MAX_POPSIZE
from ..exceptions import UnknownTokenWarning
from .common import (
    ArgumentParser,
    HelpFormatter,
    add_options,
    checked,
    output_path,
    positive_float,
    positive_int,
    random_seed,
    report_error,
)

__all__ = ["COLUMNS", "build_parser", "load_objective", "main"]

# The columns of the output, one row per seed.
COLUMNS = ("seed", "smiles", "score", "improvement", "similarity")
NAMED_OBJECTIVES = ("qed", "plogp")  # sklearn_cmim.objectives.OBJECTIVES, which loads RDKit
# How a file joblib.dump wrote starts: a pickle (protocol 2 or later), or a compressor's magic number.
JOBLIB_STARTS = (b"\x80", b"x", b"\x1f\x8b", b"BZ", b"]\x00", b"\xfd7zXZ", b'\x04"M\x18', b"ZF")

similarity_threshold = checked(float, lambda v: 0 <= v <= 1, "in [0, 1]")
population_size = checked(int, lambda v: 2 <= v <= MAX_POPSIZE, f"an integer from 2 to {MAX_POPSIZE:,}")


def load_objective(text: str):
    """An objective for :func:`~sklearn_cmim.optimization.optimize_molecules`: a name, kept as it
    is, or the estimator a joblib file holds (loading it runs the code it stores).

    Examples
    --------
    >>> load_objective("plogp")
    'plogp'
    """
    if text.lower() in NAMED_OBJECTIVES:
        return text.lower()
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"--objective {text!r} is neither one of {', '.join(NAMED_OBJECTIVES)} nor a "
                         "joblib file of a fitted estimator")
    with open(path, "rb") as handle:
        if not handle.read(5).startswith(JOBLIB_STARTS):  # unpickling text fails with a riddle
            raise ValueError(f"cannot load the estimator in {path}: it is not a joblib file (--objective "
                             f"is {', '.join(NAMED_OBJECTIVES)} or a file joblib.dump wrote)")
    import joblib

    try:
        return joblib.load(path)
    except Exception as error:  # unpickling fails in many ways, none of them the user's typo alone
        raise ValueError(f"cannot load the estimator in {path}: {error}") from None


def build_parser(prog: str = "cmim optimize") -> ArgumentParser:
    """The argument parser of ``cmim optimize``.

    Examples
    --------
    >>> from sklearn_cmim.cli.optimize import build_parser
    >>> args = build_parser().parse_args(["seeds.smi", "--objective", "qed"])
    >>> args.similarity, args.budget, args.sigma0, args.model
    (0.4, 100, 0.1, 'cmim-broad')
    """
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("seeds", type=Path, metavar="SEEDS",
                        help="SMILES file of the molecules to start from: .smi, .txt or .csv, optionally .gz")
    parser.add_argument("--objective", required=True, metavar="qed|plogp|MODEL.joblib",
                        help="what to maximise: QED, penalised logP, or the predictions of a fitted "
                             "estimator in a joblib file (which runs code when loaded: only your own "
                             "or trusted files)")
    parser.add_argument("--positive-class", metavar="LABEL",
                        help="for a classifier objective, the class whose probability is maximised "
                             "(default: 1 of classes 0/1, True of False/True)")
    parser.add_argument("--similarity", type=similarity_threshold, default=0.4,
                        help="smallest Tanimoto similarity to the seed a molecule must have; 0: none")
    parser.add_argument("--budget", type=positive_int, default=100,
                        help="most molecules scored per seed (each molecule once, the seed not counted)")
    parser.add_argument("--popsize", type=population_size,
                        help="codes decoded per seed and generation (default: CMA-ES's, 20 for the "
                             "bundled models)")
    parser.add_argument("--sigma0", type=positive_float, default=0.1,
                        help="initial CMA-ES step size in the latent space")
    parser.add_argument("--max-iter", type=positive_int,
                        help="most generations per seed (default: 5 x budget / popsize)")
    parser.add_argument("--random-state", type=random_seed, help="seed, for reproducible results")
    parser.add_argument("--output", type=output_path, help="CSV file to write (default, or -: stdout)")
    add_options(parser, "--column", "--model", "--device")
    return parser


def main(argv=None, prog: str = "cmim optimize") -> int:
    """Run ``cmim optimize``: the best molecule found around each seed, as CSV rows.

    Returns
    -------
    status : int
        0 on success, with a summary line on stderr; 2 after a user error (a bad file, seed,
        objective or model, or a missing ``cma`` package), reported in one line on stderr with
        nothing written.

    Examples
    --------
    >>> import csv, tempfile
    >>> from pathlib import Path
    >>> from sklearn_cmim.cli.optimize import main
    >>> tmp = tempfile.TemporaryDirectory()
    >>> seeds = Path(tmp.name, "seeds.smi")
    >>> _ = seeds.write_text("CCOc1ccccc1\\n")
    >>> output = Path(tmp.name, "better.csv")
    >>> main([str(seeds), "--objective", "qed", "--budget", "5", "--popsize", "6",
    ...       "--random-state", "0", "--output", str(output)])
    0
    >>> rows = list(csv.DictReader(output.open()))
    >>> list(rows[0]), rows[0]["seed"]
    (['seed', 'smiles', 'score', 'improvement', 'similarity'], 'CCOc1ccccc1')
    >>> tmp.cleanup()
    """
    args = build_parser(prog).parse_args(argv)
    try:
        objective_file = None if args.objective.lower() in NAMED_OBJECTIVES else Path(args.objective)
        check_output(args.output, args.seeds, objective_file)  # before the search, which takes a while
        seeds = list(read_smiles(args.seeds, args.column))  # a bad path or column fails here
        if not seeds:
            raise ValueError(f"{args.seeds} holds no molecules")
        objective = load_objective(args.objective)
        from ..file_embedding import ChunkEmbedder, load_model  # on use: --help must not load torch
        from ..optimization import optimize_molecules

        model = load_model(args.model, embedding="latent", device=args.device)
        # Checked first, naming a bad seed by its line; the encoder pass it repeats is cheap.
        ChunkEmbedder(model, "raise", f"line {{}} of {args.seeds}")(seeds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnknownTokenWarning)  # the check above reported them
            results = optimize_molecules(
                model, [smiles for _, smiles in seeds], objective, similarity=args.similarity,
                budget=args.budget, popsize=args.popsize, sigma0=args.sigma0, max_iter=args.max_iter,
                positive_class=args.positive_class, random_state=args.random_state, verbose=1)
        with text_output(args.output) as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(COLUMNS)
            writer.writerows(zip(*(results[column] for column in COLUMNS), strict=True))
    except (OSError, ValueError, TypeError, ImportError) as error:
        return report_error(prog, error)
    improved = int((results["improvement"] > 0).sum())
    print(f"{len(seeds)} seeds: {improved} improved ({improved / len(seeds):.1%}), mean improvement "
          f"{results['improvement'].mean():.3f}" + (f"; wrote {args.output}" if args.output else ""),
          file=sys.stderr)
    return 0
