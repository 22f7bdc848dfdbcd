"""SMILES files in, result files out, for the commands that go through a file molecule by molecule.

Inputs are read by :class:`~sklearn_cmim.chem.corpus.Corpus` (``.smi``/``.txt``/``.csv``, optionally
gzipped), one record at a time and numbered by line, so that an error can point into the file.
Outputs go to a temporary file beside the target that is renamed at the end, so a run that
fails leaves no partial file behind.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

__all__ = ["check_output", "chunked", "count_smiles", "current_umask", "read_smiles", "text_output",
           "written_atomically"]


def read_smiles(path: str | os.PathLike, column: str | None = None) -> Iterator[tuple[int, str]]:
    """``(line number, SMILES)`` for every record of a SMILES file, streamed.

    Parameters
    ----------
    path : str or path
        A ``.smi`` or ``.txt`` file (first whitespace-separated field of each line) or a ``.csv``
        file, each optionally gzip-compressed (``.csv.gz``), in UTF-8 (a byte-order mark is skipped).
    column : str, optional
        CSV column holding the SMILES: its exact name, else in any case where that picks one
        column. Default: a column named ``smiles`` (any case), else the first. Given for a file
        that is not a CSV, it is an error.

    Returns
    -------
    records : iterator of (int, str)
        Line numbers count from 1 and include a CSV's header line. A CSV row must be one line (a
        field holding a line break is an error), and blank lines of a CSV are left out, as pandas
        leaves them out, so that records line up with ``pandas.read_csv``'s rows. In a ``.smi`` or
        ``.txt`` file an empty line gives an empty string, so that records stay aligned with lines.

    Raises
    ------
    CorpusError
        At once rather than on first iteration: a missing file, an unknown format or column.
        While iterating, naming the file and line: a damaged file (a truncated ``.gz``), text that
        is not UTF-8, a CSV row that runs over several lines (a quoted line break, an unclosed quote).

    Examples
    --------
    >>> from sklearn_cmim.datasets import DATA_DIR
    >>> next(read_smiles(DATA_DIR / "delaney.csv"))
    (2, 'OCC3OC(OCC2OC(OC(C#N)c1ccccc1)C(O)C(O)C2O)C(O)C(O)C3O')
    """
    from .corpus import Corpus, CorpusError  # on use: --help must not load RDKit

    corpus = Corpus([path], column)  # opens the file now, so a bad path or column fails here
    if column is not None and corpus.columns[0] is None:  # an option ignored would hide a mistake
        raise CorpusError(f"{path} is not a .csv file, so it has no column {column!r}: each of its lines "
                          "starts with a SMILES")
    return corpus.lines()


def count_smiles(path: str | os.PathLike, column: str | None = None) -> int:
    """The number of records in a SMILES file (a pass that parses no molecule)."""
    return sum(1 for _ in read_smiles(path, column))


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last one shorter), read lazily.

    Examples
    --------
    >>> list(chunked(range(5), 2))
    [[0, 1], [2, 3], [4]]
    """
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def check_output(output: Path | None, *inputs: Path | None) -> None:
    """Raise ``ValueError`` now, before any work, if the file ``output`` cannot be written or would
    replace one of ``inputs``: a run must not fail at its end, nor destroy what it reads.

    ``None`` (stdout, an absent option) is always fine. The file itself is written atomically
    later (:func:`written_atomically`).
    """
    if output is None:
        return
    folder = output.parent
    if not folder.is_dir():
        why = f"{folder} is not a directory" if folder.exists() else f"directory {folder} does not exist"
        raise ValueError(f"cannot write {output}: {why}")
    name_max = _name_max(folder)  # checked before any look at the file, which would fail on it
    if len(os.fsencode(output.name)) > name_max:
        raise ValueError(f"cannot write {output}: its name is longer than the {name_max} bytes a file "
                         "name may have there")
    if output.is_dir():
        raise ValueError(f"cannot write {output}: it is a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {output}: directory {folder} is not writable")
    for path in inputs:  # samefile: a link or another spelling of the input is the input too
        if path is not None and output.exists() and path.exists() and output.samefile(path):
            raise ValueError(f"cannot write {output}: it is the input file {path}; choose another output")


def _name_max(folder: Path) -> int:
    """The longest file name, in bytes, that ``folder``'s file system takes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # Windows has no pathconf
        return 255


@contextmanager
def written_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``, renamed to ``path`` if the block succeeds, else deleted.

    The temporary file sits in the target's directory so that the rename is atomic.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
    # The start of the name only: any name the folder takes must leave room for the temporary one's.
    start = os.fsencode(path.name)[:100].decode(errors="ignore")
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{start}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        temporary.chmod(0o666 & ~current_umask())  # mkstemp's file is private; the output need not be
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def current_umask() -> int:
    """The process's umask: reading it means setting it, so it is set back at once."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def text_output(path: str | os.PathLike | None):
    """A text stream: stdout for ``None``, else the file ``path``, written atomically."""
    if path is None:
        yield sys.stdout
        return
    with written_atomically(path) as temporary, open(temporary, "w") as handle:
        yield handle
