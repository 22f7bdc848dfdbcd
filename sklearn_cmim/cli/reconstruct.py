"""``cmim reconstruct``: encode each molecule of a SMILES file and decode its latent mean greedily.

    cmim reconstruct molecules.smi --output reconstructions.tsv

Writes ``input<TAB>decoded<TAB>match`` per molecule (after a header line; an input holding a tab
or a quote is quoted, as in a CSV file) and ends with the exact-match accuracy on stderr: the
share of molecules that decode to their own canonical SMILES, as :meth:`CMIMTransformer.score`
counts it. Molecules are streamed a chunk at a time.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter

from ..chem.smiles_files import check_output, chunked, count_smiles, read_smiles, text_output
from ..file_embedding import CHUNK_SIZE, BadMolecule, ChunkEmbedder, check_file, describe_bad, load_model
from ..progress import SHOW_AFTER, progress
from .common import (
    ArgumentParser,
    HelpFormatter,
    add_file_options,
    add_options,
    output_path,
    report_error,
    report_warning,
)

__all__ = ["build_parser", "main", "reconstruct_file"]


def reconstruct_file(model, source, handle, column: str | None = None, errors: str = "raise",
                     chunk_size: int = CHUNK_SIZE) -> tuple[int, int, Counter]:
    """Write ``input<TAB>decoded<TAB>match`` lines for every molecule of a SMILES file (tab-separated
    values as the csv module writes them: a field holding a tab or a quote is quoted).

    Parameters
    ----------
    model : CMIMTransformer
        Loaded by :func:`~sklearn_cmim.file_embedding.load_model` with ``embedding="latent"``.
    source : str or path
        The SMILES file (see :func:`~sklearn_cmim.chem.smiles_files.read_smiles`).
    handle : text stream
        Where the lines go.
    column : str, optional
        CSV column holding the SMILES.
    errors : {"raise", "nan"}, default="raise"
        A bad molecule raises :class:`~sklearn_cmim.file_embedding.BadMolecule`, found before any
        molecule is decoded or line written, or gets empty ``decoded`` and ``match`` fields and is
        left out of the accuracy.
    chunk_size : int, default=CHUNK_SIZE

    Returns
    -------
    n_matches, n_read : int
        Exact matches, and molecules read.
    bad : collections.Counter
        The bad molecules among them, by what is wrong (see
        :func:`~sklearn_cmim.file_embedding.describe_bad`).
    """
    import numpy as np

    from ..chem.standardize import canonical_smiles  # on use: --help must not load RDKit

    n_rows = count_smiles(source, column)
    if n_rows == 0:
        raise ValueError(f"{source} holds no molecules")
    embed = ChunkEmbedder(model, errors, f"line {{}} of {source}")
    if errors == "raise":  # before the first line is written or the first molecule decoded
        check_file(embed, source, column, n_rows, chunk_size)
    n_matches = n_read = 0
    # csv quotes a field holding a tab (a CSV field can), which would shift the columns after it.
    writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
    writer.writerow(["input", "decoded", "match"])
    for chunk in progress(chunked(read_smiles(source, column), chunk_size), total=n_rows,
                          label="reconstructing molecules", after=SHOW_AFTER, size=len):
        latents = embed(chunk)
        decoded = model.inverse_transform(latents)
        for (_, smiles), output, read in zip(chunk, decoded, np.isfinite(latents).all(axis=1), strict=True):
            n_read += 1
            if not read:  # a bad molecule: NaN latents
                writer.writerow([smiles, "", ""])
                continue
            # Compared with what the model read, as score() does: the standardised molecule. A
            # decoding the model did not finish (None) is written empty, and is no match.
            match = canonical_smiles(output) == canonical_smiles(model.standardizer_(smiles))
            n_matches += match
            writer.writerow([smiles, output or "", match])
    return n_matches, n_read, embed.bad


def build_parser(prog: str = "cmim reconstruct") -> ArgumentParser:
    """The argument parser of ``cmim reconstruct``.

    Examples
    --------
    >>> from sklearn_cmim.cli.reconstruct import build_parser
    >>> args = build_parser().parse_args(["molecules.smi", "--errors", "nan"])
    >>> args.input.name, args.output, args.errors, args.model
    ('molecules.smi', None, 'nan', 'cmim-broad')
    """
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    add_options(parser, "input")
    parser.add_argument("--output", type=output_path,
                        help="file to write the lines to (default, or -: stdout)")
    add_options(parser, "--model")
    add_file_options(parser, chunk_size="molecules read and decoded at a time",
                     errors="a bad molecule stops the run, or is written undecoded and not counted")
    return parser


def main(argv=None, prog: str = "cmim reconstruct") -> int:
    """Run ``cmim reconstruct``: encode and greedily decode each molecule of a SMILES file.

    Returns
    -------
    status : int
        0 on success, with the exact-match accuracy on stderr; 2 after a user error (a bad
        path, column or model, a bad molecule under ``--errors raise``, or no readable molecule),
        reported in one line on stderr.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from sklearn_cmim.cli.reconstruct import main
    >>> tmp = tempfile.TemporaryDirectory()
    >>> smi = Path(tmp.name, "molecules.smi")
    >>> _ = smi.write_text("CCO\\nc1ccccc1\\n")
    >>> main([str(smi), "--output", str(Path(tmp.name, "reconstructed.tsv"))])
    0
    >>> lines = Path(tmp.name, "reconstructed.tsv").read_text().splitlines()
    >>> lines[0], [line.split("\\t")[0] for line in lines[1:]]
    ('input\\tdecoded\\tmatch', ['CCO', 'c1ccccc1'])
    >>> tmp.cleanup()
    """
    args = build_parser(prog).parse_args(argv)
    try:
        check_output(args.output, args.input)
        read_smiles(args.input, args.column)  # a bad path or column fails here, before the model loads
        model = load_model(args.model, embedding="latent", inference_batch_size=args.batch_size,
                           device=args.device)
        with text_output(args.output) as handle:
            n_matches, n_read, bad = reconstruct_file(model, args.input, handle, args.column,
                                                      args.errors, args.chunk_size)
            n_bad = sum(bad.values())
            left_out = describe_bad(bad, n_read, model.model_.config.max_length) if n_bad else ""
            if n_bad == n_read:  # raised within the block, so that the run leaves no output file
                raise ValueError(f"no molecule of {args.input} can be decoded: {left_out}")
    except BadMolecule as error:
        return report_error(prog, f"{error} (with --errors nan it is left out)")
    except (OSError, ValueError) as error:
        return report_error(prog, error)
    if n_bad:
        report_warning(prog, f"{left_out}; {'it is' if n_bad == 1 else 'they are'} left out")
    print(f"exact-match accuracy {n_matches / (n_read - n_bad):.6f} "
          f"({n_matches} of {n_read - n_bad} molecules decoded to themselves)", file=sys.stderr)
    return 0
