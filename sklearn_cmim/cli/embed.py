"""``cmim embed``: embed every molecule of a SMILES file, streamed in chunks to .npy or .csv.

    cmim embed molecules.smi --output embeddings.npy
    cmim embed library.csv.gz --column canonical_smiles --embedding latent --output latents.csv

Memory stays flat however long the file is: molecules are read, embedded and written a chunk
at a time (a first pass, which parses no molecule, counts them to size the .npy file). Row i of
the output is record i of the input; a .csv output starts with the input SMILES as given.
"""

from __future__ import annotations

from pathlib import Path

from ..chem.smiles_files import check_output, read_smiles
from ..file_embedding import WRITERS, BadMolecule, describe_bad, embed_file, load_model
from .common import ArgumentParser, HelpFormatter, add_file_options, add_options, report_error, report_warning

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "cmim embed") -> ArgumentParser:
    """The argument parser of ``cmim embed``.

    Examples
    --------
    >>> from sklearn_cmim.cli.embed import build_parser
    >>> args = build_parser().parse_args(["molecules.smi", "--output", "embeddings.npy"])
    >>> args.model, args.embedding, args.errors, args.chunk_size
    ('cmim-broad', 'informative', 'raise', 1000)
    """
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    add_options(parser, "input")
    parser.add_argument("--output", type=Path, required=True, help="embeddings to write: .npy or .csv")
    add_options(parser, "--model")
    parser.add_argument("--embedding", choices=("informative", "latent"), default="informative",
                        help="decoder-state informative embeddings, or the latent mean")
    add_file_options(parser, errors="a bad molecule stops the run, or gets a NaN row",
                     chunk_size="molecules read, embedded and written at a time")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="auto and fp32 embed in fp32, so a molecule's embedding does not depend on "
                             "its batch; bf16 (where the hardware has it) is 1.4-2.7x as fast, and moves "
                             "latent embeddings by about 1e-3, informative ones by up to a few hundredths, "
                             "with their batch neighbours")
    return parser


def main(argv=None, prog: str = "cmim embed") -> int:
    """Run ``cmim embed``: embed every molecule of a SMILES file into a .npy or .csv file.

    Returns
    -------
    status : int
        0 on success; 2 after a user error (a bad path, column, output suffix or model, a model
        whose weights give non-finite values, or a bad molecule under ``--errors raise``),
        reported in one line on stderr with nothing written.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from sklearn_cmim.cli.embed import main
    >>> tmp = tempfile.TemporaryDirectory()
    >>> smi = Path(tmp.name, "molecules.smi")
    >>> _ = smi.write_text("CCO ethanol\\nc1ccccc1 benzene\\n")
    >>> npy = Path(tmp.name, "embeddings.npy")
    >>> main([str(smi), "--output", str(npy)])  # doctest: +ELLIPSIS
    wrote ...embeddings.npy
    0
    >>> np.load(npy).shape
    (2, 1024)

    A .csv output starts with the input SMILES:

    >>> csv = Path(tmp.name, "latents.csv")
    >>> main([str(smi), "--output", str(csv), "--embedding", "latent"])  # doctest: +ELLIPSIS
    wrote ...latents.csv
    0
    >>> lines = csv.read_text().splitlines()
    >>> lines[0][:30], lines[1].split(",")[0], len(lines[1].split(","))
    ('smiles,latent0,latent1,latent2', 'CCO', 257)
    >>> tmp.cleanup()
    """
    args = build_parser(prog).parse_args(argv)
    if args.output.name.lower() in WRITERS:  # a dotfile: Path(".npy").suffix is ""
        return report_error(prog, f"--output {args.output} is a suffix without a file name; give one, "
                                  f"e.g. {args.output.with_name('embeddings' + args.output.name)}")
    if args.output.suffix.lower() not in WRITERS:  # before loading the model
        return report_error(prog, f"--output must end in .npy or .csv, got {args.output}")
    try:
        check_output(args.output, args.input)
        read_smiles(args.input, args.column)  # a bad path or column fails here, before the model loads
        model = load_model(args.model, embedding=args.embedding, inference_batch_size=args.batch_size,
                           device=args.device, precision=args.precision)
        n_rows, bad = embed_file(model, args.input, args.output, args.column, args.errors, args.chunk_size)
    except BadMolecule as error:
        return report_error(prog, f"{error} (with --errors nan it gets a NaN row)")
    except (OSError, ValueError) as error:
        return report_error(prog, error)
    if bad:
        rows = "its row is" if sum(bad.values()) == 1 else "their rows are"
        report_warning(prog, f"{describe_bad(bad, n_rows, model.model_.config.max_length)}; {rows} NaN")
    print(f"wrote {args.output}")
    return 0
