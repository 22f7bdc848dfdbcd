"""Pretraining corpora streamed from SMILES files, split, sharded and batched reproducibly.

Read top-down: :class:`Corpus` yields the SMILES field of every record of a list of files
without ever holding a file in memory; :class:`HoldOut` decides by record number which records
are held out for validation and which rank trains on each of the others; :class:`MoleculeEncoder`
turns SMILES into token ids, skipping and counting bad molecules. One rank's endless, resumable
sequence of batches made of them is :class:`~sklearn_cmim.training.streams.BatchStream`.

A *record* is one data line (CSV rows after the header but blank lines, every line of a .smi/.txt
file), numbered from 0 across the files in the order given. Record numbers, not content, decide the
split and the sharding, so they are the same on every run, rank and machine.
"""

from __future__ import annotations

import csv
import gzip
import math
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from .standardize import MoleculeError, Standardizer, canonical_smiles
from .tokenizer import Vocabulary

__all__ = ["SKIP_REASONS", "Corpus", "CorpusError", "HoldOut", "MoleculeEncoder", "build_vocabulary",
           "standardised_set", "validation_set", "validation_sets"]

FORMATS = {".smi": "lines", ".txt": "lines", ".csv": "csv"}
SKIP_REASONS = ("invalid", "untokenizable", "unknown_token", "too_long", "excluded")  # see MoleculeEncoder
# A long field must reach the molecule checks as one bad item, not stop the csv module at its
# default 128 KiB. The limit is process-wide, so it is only ever raised, to the largest value a
# C long holds on every platform (32 bits on Windows).
CSV_FIELD_LIMIT = 2**31 - 1


class CorpusError(ValueError):
    """A corpus that cannot be read as asked (missing file, unknown format or column, no molecules)."""


class Corpus:
    """The SMILES of every record of some files, streamed in order.

    Parameters
    ----------
    paths : list of path
        ``.smi``, ``.txt`` (first whitespace-separated field of each line) or ``.csv`` files, each
        optionally gzip-compressed (``.csv.gz``).
    column : str, optional
        CSV column holding the SMILES. Default: a column named ``smiles`` (any case), else the first.

    Examples
    --------
    >>> from sklearn_cmim.datasets import DATA_DIR
    >>> next(Corpus([DATA_DIR / "delaney.csv"]).records())
    (0, 'OCC3OC(OCC2OC(OC(C#N)c1ccccc1)C(O)C(O)C2O)C(O)C(O)C3O')
    """

    def __init__(self, paths, column: str | None = None):
        if not paths:
            raise CorpusError("no input files given")
        self.paths = [Path(p) for p in paths]
        self.column = column
        # Opening each file once here turns a typo in a path or column into an error before training.
        self.columns = [self._column_index(path) for path in self.paths]

    @property
    def name(self) -> str:
        """The first file's name without its format suffixes: ``moses/train.csv.gz`` -> ``train``."""
        name = self.paths[0].name
        return name.split(".", 1)[0] if "." in name else name

    def count(self) -> int:
        """The number of records (a pass over the files)."""
        return sum(1 for _ in self.records())

    def records(self, start: int = 0) -> Iterator[tuple[int, str]]:
        """``(record number, SMILES)`` for every record from number ``start`` on, across all files."""
        return islice(enumerate(s for _, s in self.lines()), start, None)

    def lines(self) -> Iterator[tuple[int, str]]:
        """``(line number, SMILES)`` for every record, numbered from 1 within each file."""
        return (item for path, col in zip(self.paths, self.columns, strict=True)
                for item in self._read(path, col))

    @staticmethod
    def _format(path: Path) -> tuple[str, bool]:
        compressed = path.suffix.lower() == ".gz"
        suffix = Path(path.stem).suffix if compressed else path.suffix
        if suffix.lower() not in FORMATS:
            raise CorpusError(f"{path}: unknown format; expected .smi, .txt or .csv, optionally .gz")
        return FORMATS[suffix.lower()], compressed

    def _lines(self, path: Path) -> Iterator[str]:
        """The lines of a file; a read error is a :class:`CorpusError` naming the file and line."""
        _, compressed = self._format(path)
        try:
            # utf-8-sig: Excel starts its UTF-8 CSVs with a byte-order mark, which would otherwise
            # stick to the first column's name.
            handle = (gzip.open if compressed else open)(path, "rt", encoding="utf-8-sig", newline="")
        except OSError as error:
            raise CorpusError(f"cannot read {path}: {error.strerror or error}") from None
        number = 0
        with handle:
            try:
                for line in handle:
                    number += 1
                    yield line
            except UnicodeDecodeError:
                raise CorpusError(self._not_utf8(path)) from None
            except (OSError, EOFError, zlib.error) as error:  # a truncated or corrupt .gz, mostly
                after = f" after line {number}" if number else ""
                raise CorpusError(f"cannot read {path}{after}: {error}") from None

    def _not_utf8(self, path: Path) -> str:
        """Which line of ``path`` is not UTF-8: the decoder reads ahead, so its error has no line."""
        _, compressed = self._format(path)
        with (gzip.open if compressed else open)(path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as error:
                    return (f"line {number} of {path} is not UTF-8 text (byte {line[error.start]:#04x}: "
                            f"{error.reason}); save the file as UTF-8")
        return f"{path} is not UTF-8 text; save it as UTF-8"

    def _csv_rows(self, path: Path) -> Iterator[tuple[int, list[str]]]:
        """``(line number, fields)`` of each row of a CSV file but blank lines, which pandas skips too.
        A row spanning lines (a quoted line break, an unclosed quote) would shift later line numbers."""
        csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
        with closing(self._lines(path)) as lines:
            # A last line gets its line break, so that a quote open at the end leaves one in its field.
            rows = csv.reader(line if line.endswith(("\n", "\r")) else line + "\n" for line in lines)
            end = 0
            try:
                for row in rows:
                    start, end = end + 1, rows.line_num
                    if end > start:
                        raise CorpusError(f"line {start} of {path}: the row runs on to line {end} (a quoted "
                                          "line break, or an unclosed quote?); a .csv row must be one line")
                    if row and row[-1].endswith(("\n", "\r")):
                        raise CorpusError(f"line {start} of {path}: a quote opened here is never closed")
                    if row and not (len(row) == 1 and row[0].isspace()):
                        yield start, row
            except csv.Error as error:
                raise CorpusError(f"line {rows.line_num} of {path}: {error}") from None

    def _column_index(self, path: Path) -> int | None:
        kind, _ = self._format(path)
        if kind != "csv":
            with closing(self._lines(path)) as lines:
                next(lines, None)  # reads it now, so that an unreadable file fails here
            return None
        with closing(self._csv_rows(path)) as rows:
            line, first = next(rows, (1, []))
        names = [name.strip() for name in first]
        if self.column is not None:
            # Exactly, else in any case (as "smiles" is found) where that picks one column.
            wanted = self.column.strip()
            found = ([names.index(wanted)] if wanted in names
                     else [i for i, name in enumerate(names) if name.lower() == wanted.lower()])
            if len(found) != 1:
                which = "several columns" if found else "no column"
                raise CorpusError(f"{path} has {which} {self.column!r} in any case; its columns are {names}")
            return found[0]
        lowered = [name.lower() for name in names]
        if "smiles" in lowered:
            return lowered.index("smiles")
        # Read as a header, a file without one would lose its first molecule, silently.
        if names and canonical_smiles(names[0]) is not None:
            raise CorpusError(f"{path}: line {line} starts with {names[0]!r}, a molecule, where a .csv file "
                              "has its header (the column names): add one, or name the file .smi; if it "
                              f"is the header, name the SMILES column (--column {names[0]})")
        return 0

    def _read(self, path: Path, column: int | None) -> Iterator[tuple[int, str]]:
        """``(line number, SMILES field)`` of each record of a file."""
        if column is None:
            with closing(self._lines(path)) as lines:
                for number, line in enumerate(lines, 1):
                    yield number, (line.split(maxsplit=1) or [""])[0]  # an empty line: an empty SMILES
            return
        with closing(self._csv_rows(path)) as rows:
            next(rows, None)  # the header
            for number, row in rows:
                yield number, row[column].strip() if column < len(row) else ""


@dataclass(frozen=True)
class HoldOut:
    """Which records are validation data, and which rank trains on each of the others.

    Every ``every``-th record (numbers 0, every, 2 * every, ...) is held out; the remaining
    records, numbered again from 0 in order, go to rank ``training number % world_size``.

    Examples
    --------
    >>> split = HoldOut(every=3)
    >>> [split.is_validation(i) for i in range(4)]
    [True, False, False, True]
    >>> [split.owner(i, world_size=2) for i in (1, 2, 4, 5)]
    [0, 1, 0, 1]
    """

    every: int = 1000

    def __post_init__(self):
        if self.every < 2:
            raise ValueError(f"the hold-out interval must be at least 2, got {self.every}")

    def is_validation(self, record: int) -> bool:
        return record % self.every == 0

    def owner(self, record: int | np.ndarray, world_size: int) -> int | np.ndarray:
        """Rank that trains on a training record (or, elementwise, on an array of them)."""
        held_out_before = (record + self.every - 1) // self.every
        return (record - held_out_before) % world_size


def standardised_set(paths: Iterable[Path], standardizer: Standardizer) -> frozenset[str]:
    """The standardised SMILES of every readable molecule of some SMILES files."""
    out = set()
    for path in paths:
        for _, text in Corpus([path]).records():
            try:
                out.add(standardizer(text))
            except MoleculeError:
                continue
    return frozenset(out)


class MoleculeEncoder:
    """SMILES -> token ids, or ``None`` for a molecule that must be skipped (counted by reason).

    Reasons: ``invalid`` (RDKit or the standardiser rejects it), ``untokenizable`` (characters the
    tokenizer cannot read), ``unknown_token`` (a token outside the vocabulary: training on
    ``<unk>`` would teach the model nothing it could decode), ``too_long`` (over ``max_length``
    tokens with <bos>/<eos>; never truncated), ``excluded`` (its standardised SMILES is in
    ``exclude``: a molecule kept out of pretraining, such as an evaluation set's, under any salt,
    charge or stereo mark the standardiser takes off).
    """

    def __init__(self, standardizer: Standardizer, vocabulary: Vocabulary, max_length: int,
                 exclude: frozenset[str] = frozenset()):
        self.standardizer = standardizer
        self.vocabulary = vocabulary
        self.max_length = max_length
        self.exclude = exclude
        self.skipped: Counter = Counter()

    def __call__(self, smiles: str) -> tuple[list[int], str] | None:
        """Token ids and the standardised SMILES, or ``None`` (and a count) for a bad molecule."""
        return self.count(self.encode(smiles))

    def encode(self, smiles: str) -> tuple[list[int], str] | str:
        """Token ids and the standardised SMILES, or the reason to skip the molecule (uncounted).

        Depends on nothing but its arguments, so worker processes can run it.
        """
        try:
            standard = self.standardizer(smiles)
        except MoleculeError:
            return "invalid"
        if standard in self.exclude:
            return "excluded"
        unknown: Counter = Counter()
        try:
            ids = self.vocabulary.encode(standard, unknown)
        except ValueError:
            return "untokenizable"
        if unknown:
            return "unknown_token"
        if len(ids) > self.max_length:
            return "too_long"
        return ids, standard

    def count(self, result: tuple[list[int], str] | str, tally: bool = True) -> tuple[list[int], str] | None:
        """A result of :meth:`encode`, with a skipped molecule returned as ``None`` and counted
        (unless ``tally`` is false: a molecule met again in a later epoch is not another one)."""
        if isinstance(result, str):
            if tally:
                self.skipped[result] += 1
            return None
        return result


def build_vocabulary(corpora: list[Corpus], split: HoldOut, standardizer: Standardizer,
                     max_records: int, min_count: int = 1) -> Vocabulary:
    """The tokens held by at least ``min_count`` molecules of a sample of each corpus.

    Each corpus gives up to ``max_records`` training records spread evenly over the whole file
    (a corpus gathered from several sources keeps them in blocks, so a prefix would see one), which
    keeps start-up time bounded. Molecules whose tokens are too rare for an id are skipped in
    training (counted as ``unknown_token``).
    """
    smiles, read = [], 0
    for corpus in corpora:
        n_records = corpus.count()
        if not n_records:
            raise CorpusError(f"{', '.join(map(str, corpus.paths))} holds no molecules")
        stride = max(1, math.ceil(n_records / max_records))
        for record, text in corpus.records():
            if record % stride or split.is_validation(record):
                continue
            read += 1
            try:
                smiles.append(standardizer(text))
            except MoleculeError:
                continue
    if not read:
        raise CorpusError(f"the corpora hold no training record: record 0 and every {split.every}th after "
                          "it are held out for validation (give more molecules, or another --holdout-every)")
    if not smiles:
        raise CorpusError(f"no valid molecule among the {read:,} training records read to learn the "
                          "vocabulary")
    return Vocabulary.build(smiles, min_count)


def validation_sets(corpora: list[Corpus], split: HoldOut, encoder: MoleculeEncoder, size: int) -> dict:
    """:func:`validation_set` of each corpus, by name: what a pretraining run validates on.

    Names must differ, or one corpus's set would replace another's (``a/data.smi``, ``b/data.csv``).
    """
    names = [corpus.name for corpus in corpora]
    if clash := sorted({name for name in names if names.count(name) > 1}):
        files = ", ".join(str(corpus.paths[0]) for corpus in corpora if corpus.name in clash)
        raise CorpusError(f"corpora are reported by file name, and {files} share the name "
                          f"{clash[0]!r}: rename one")
    return {corpus.name: validation_set(corpus, split, encoder, size) for corpus in corpora}


def validation_set(corpus: Corpus, split: HoldOut, encoder: MoleculeEncoder, size: int):
    """Up to ``size`` held-out molecules (ids, standardised SMILES), read from the corpus start."""
    molecules = []
    for record, text in corpus.records():
        if len(molecules) == size:
            break
        if split.is_validation(record) and (encoded := encoder(text)) is not None:
            molecules.append(encoded)
    return molecules
