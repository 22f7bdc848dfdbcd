"""Embedding a SMILES file chunk by chunk with a loaded model, into .npy or .csv: the library
behind ``cmim embed``, and the model loading and bad-molecule policy ``cmim sample``,
``cmim reconstruct`` and ``cmim optimize`` share.

Memory stays flat however long the file is: molecules are read, embedded and written a chunk
at a time (a first pass, which parses no molecule, counts them to size the .npy file; under
``--errors raise`` a second checks every molecule before any is embedded). Row i of
the output is record i of the input; a .csv output starts with the input SMILES as given.

Importing this module loads neither torch nor RDKit nor scikit-learn (the commands' ``--help``
imports it): the model is loaded on use.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .chem.smiles_files import chunked, count_smiles, read_smiles, written_atomically
from .progress import SHOW_AFTER, progress

if TYPE_CHECKING:
    from .transformer import CMIMTransformer

__all__ = ["CHUNK_SIZE", "TOO_LONG", "UNREADABLE", "WRITERS", "BadMolecule", "ChunkEmbedder",
           "check_file", "describe_bad", "embed_file", "load_model"]

# Molecules read, embedded and written at a time: memory stays flat, and the progress bar moves
# every second or so on a CPU core. Larger chunks embed no faster: the batches are sorted by
# length within a chunk, and a thousand molecules already sort into well-filled batches.
CHUNK_SIZE = 1_000
# What can be wrong with a molecule, as the messages say it.
UNREADABLE, TOO_LONG = "cannot be read", "is too long"


def load_model(model: str, **params) -> CMIMTransformer:
    """A bundled model (by name) or a model directory, loaded and ready to transform.

    Parameters
    ----------
    model : str
        A name from :func:`sklearn_cmim.list_pretrained` or a ``save_pretrained`` directory.
    **params
        Further :class:`CMIMTransformer` parameters (``embedding``, ``device`` ...).

    Returns
    -------
    model : CMIMTransformer
        Fitted, with ``errors="nan"``: callers apply their own policy to bad molecules.
    """
    from .transformer import CMIMTransformer  # on use: --help must not load torch

    return CMIMTransformer.from_pretrained(model, errors="nan", **params)


class BadMolecule(ValueError):
    """A molecule of an input that the model cannot read or that is too long for it, under
    ``--errors raise``."""


class ChunkEmbedder:
    """Embeds chunks of ``(line, SMILES)`` records under an ``--errors`` policy, counting bad ones.

    Parameters
    ----------
    model : CMIMTransformer
        Loaded by :func:`load_model`, so that bad molecules come back as NaN rows.
    errors : {"raise", "nan"}
        "raise": the first bad molecule raises :class:`BadMolecule`; "nan": it keeps its NaN row.
    where : str
        Where a record is, as a template for its line number, e.g. ``"line {} of in.smi"``.

    Attributes
    ----------
    bad : collections.Counter
        The bad molecules met so far, by what is wrong: :data:`UNREADABLE` or :data:`TOO_LONG`.

    Calling it raises ``ValueError``, whatever ``errors``, when the model gives non-finite values
    for a molecule it reads: its weights are damaged, and no molecule is to blame.
    """

    def __init__(self, model: CMIMTransformer, errors: str, where: str):
        self.model = model
        self.errors = errors
        self.where = where
        self.bad = Counter()

    def __call__(self, chunk: list[tuple[int, str]]) -> np.ndarray:
        from .chem.inputs import describe  # on use: --help must not load RDKit

        # What transform does, in its two steps: which molecules are bad is the encoding's verdict,
        # not read from NaN rows, which a model with damaged weights gives good molecules too.
        encoded = self.model._encode([smiles for _, smiles in chunk])
        X = self.model._transform_encoded(encoded)
        valid = encoded.valid
        broken = np.flatnonzero(valid & ~np.isfinite(X).all(axis=1))
        if broken.size:
            line, smiles = chunk[broken[0]]
            raise ValueError(f"the model gave non-finite values for {self.where.format(line)} "
                             f"({describe(smiles)}, a molecule it reads); its weights may be damaged "
                             "(a training run that diverged?)")
        for row in np.flatnonzero(~valid):
            line, smiles = chunk[row]
            kind, reason = self.problem(smiles)
            if self.errors == "raise":
                raise BadMolecule(f"{self.where.format(line)}: {describe(smiles)} {kind}: {reason}")
            self.bad[kind] += 1
        return X

    def check(self, chunk: list[tuple[int, str]]) -> None:
        """Raise :class:`BadMolecule` for the first bad molecule of ``chunk``, embedding none: this
        costs what reading the molecules costs, so a file can be vetted before any work."""
        from .chem.inputs import describe  # on use: --help must not load RDKit

        for line, smiles in chunk:
            found = self.problem(smiles)
            if found is not None:
                raise BadMolecule(f"{self.where.format(line)}: {describe(smiles)} {found[0]}: {found[1]}")

    def problem(self, smiles: str) -> tuple[str, str] | None:
        """Why the model cannot embed ``smiles``: :data:`UNREADABLE` or :data:`TOO_LONG`, and the
        reason, from the checks ``transform`` makes, in its order; ``None`` if it can."""
        from .chem.inputs import length_problem, n_tokens  # on use: --help must not load RDKit

        try:
            length = n_tokens(self.model.standardizer_(smiles))
        except ValueError as error:  # neither RDKit nor the tokenizer can read it
            return UNREADABLE, str(error)
        reason = length_problem(length, self.model.model_.config.max_length)
        return None if reason is None else (TOO_LONG, reason)


def describe_bad(bad: Counter, n_rows: int, max_length: int) -> str:
    """The bad molecules of a file in words, as :attr:`ChunkEmbedder.bad` counts them.

    Examples
    --------
    >>> from collections import Counter
    >>> describe_bad(Counter({TOO_LONG: 10, UNREADABLE: 2}), 2039, 128)
    "10 of 2039 molecules are longer than the model's max_length (128 tokens) and 2 cannot be read"
    >>> describe_bad(Counter({TOO_LONG: 1}), 270, 128)
    "1 of 270 molecules is longer than the model's max_length (128 tokens)"
    >>> describe_bad(Counter({UNREADABLE: 1}), 1, 128)
    '1 of 1 molecule cannot be read'
    """
    verb = "is" if bad[TOO_LONG] == 1 else "are"
    phrases = [(bad[TOO_LONG], f"{verb} longer than the model's max_length ({max_length} tokens)"),
               (bad[UNREADABLE], "cannot be read")]
    (n, said), *more = [(n, text) for n, text in phrases if n]
    molecules = "molecule" if n_rows == 1 else "molecules"
    return f"{n} of {n_rows} {molecules} {said}" + "".join(f" and {m} {text}" for m, text in more)


def write_npy(path: Path, embedded, n_rows: int, names: list[str]) -> None:
    # The header of the final shape, then each chunk's rows appended with plain writes: a
    # memory-mapped file would keep every written page resident and grow with the output.
    with open(path, "wb") as handle:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                  "fortran_order": False, "shape": (n_rows, len(names))}
        np.lib.format.write_array_header_1_0(handle, header)
        written = 0
        for _, X in embedded:
            handle.write(np.ascontiguousarray(X, dtype=np.float32).tobytes())
            written += len(X)
    if written != n_rows:  # the counting pass and the embedding pass must agree
        raise RuntimeError(f"wrote {written} rows into a .npy sized for {n_rows}")


def write_csv(path: Path, embedded, n_rows: int, names: list[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["smiles", *names])
        for chunk, X in embedded:
            # Nine significant digits give every float32 back exactly.
            writer.writerows([smiles, *(f"{v:.9g}" for v in row)]
                             for (_, smiles), row in zip(chunk, X, strict=True))


WRITERS = {".npy": write_npy, ".csv": write_csv}


def as_counted(chunks, n_rows: int, source) -> Iterator[list]:
    """``chunks``, checked to hold the ``n_rows`` records a first pass counted: a file written to
    while it is read would not fit the .npy sized for it, nor line up with its rows."""
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if seen > n_rows:  # stopped at once: the file may be growing for a long while yet
            raise ValueError(f"{source} changed while it was being read ({n_rows} records counted, more "
                             "found); embed a copy that nothing writes to")
        yield chunk
    if seen < n_rows:
        raise ValueError(f"{source} changed while it was being read ({n_rows} records counted, {seen} "
                         "found); embed a copy that nothing writes to")


def check_file(embed: ChunkEmbedder, source, column: str | None, n_rows: int, chunk_size: int) -> None:
    """Raise :class:`BadMolecule` for the first bad molecule of ``source``, of ``n_rows``, before
    any is embedded: one near the end of a long file then stops a run at once, not hours in."""
    for chunk in progress(as_counted(chunked(read_smiles(source, column), chunk_size), n_rows, source),
                          total=n_rows, label="checking molecules", after=SHOW_AFTER, size=len):
        embed.check(chunk)


def embed_file(model: CMIMTransformer, source, output, column: str | None = None,
               errors: str = "raise", chunk_size: int = CHUNK_SIZE) -> tuple[int, Counter]:
    """Embed every molecule of a SMILES file into a ``.npy`` or ``.csv`` file, a chunk at a time.

    Parameters
    ----------
    model : CMIMTransformer
        Loaded by :func:`load_model`.
    source, output : str or path
        The SMILES file (see :func:`~sklearn_cmim.chem.smiles_files.read_smiles`) and the ``.npy``
        (float32 array) or ``.csv`` (input SMILES, then one column per feature) to write.
    column : str, optional
        CSV column holding the SMILES.
    errors : {"raise", "nan"}, default="raise"
        Bad molecules raise :class:`BadMolecule` (and nothing is written), or get NaN rows. Under
        "raise", every molecule is checked before the first is embedded.
    chunk_size : int, default=CHUNK_SIZE
        Molecules read, embedded and written at a time; peak memory grows with it, not with the file.

    Returns
    -------
    n_rows : int
        Molecules written.
    bad : collections.Counter
        Those among them that got NaN rows, by what is wrong (see :func:`describe_bad`).

    Raises
    ------
    ValueError
        With nothing written: ``source`` holds no molecules or changed while it was read, or the
        model gives non-finite values for a molecule it reads (see :class:`ChunkEmbedder`).
    """
    output = Path(output)
    writer = WRITERS.get(output.suffix.lower())
    if writer is None:
        raise ValueError(f"the output must be a .npy or .csv file, got {output}")
    n_rows = count_smiles(source, column)
    if n_rows == 0:
        raise ValueError(f"{source} holds no molecules")
    embed = ChunkEmbedder(model, errors, f"line {{}} of {source}")
    if errors == "raise":
        check_file(embed, source, column, n_rows, chunk_size)
    chunks = progress(as_counted(chunked(read_smiles(source, column), chunk_size), n_rows, source),
                      total=n_rows, label="embedding molecules", after=SHOW_AFTER, size=len)
    with written_atomically(output) as temporary:
        writer(temporary, ((chunk, embed(chunk)) for chunk in chunks), n_rows,
               list(model.get_feature_names_out()))
    return n_rows, embed.bad
