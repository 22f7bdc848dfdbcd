"""Turning user input (SMILES strings, RDKit Mols, arrays, pandas) into token id sequences.

One policy for every bad item, applied in ``fit``, ``transform`` and ``score``: with
``errors="raise"`` the first bad item raises an error naming its index and value; with
``errors="nan"`` it is marked ``None`` here and becomes a NaN row (or is skipped in ``fit``).
Molecules longer than ``max_length`` tokens count as bad items: they are never truncated.
"""

from __future__ import annotations

import numbers
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from rdkit import Chem

from ..exceptions import UnknownTokenWarning, user_stacklevel
from .standardize import MoleculeError, Standardizer
from .tokenizer import Vocabulary, tokenize

__all__ = ["EncodedInput", "MoleculeInputMixin", "as_items", "check_n_samples", "encode_items",
           "encode_smiles", "length_problem", "n_tokens", "standardize_items", "token_problem"]

ERRORS = ("raise", "nan")
NAN_HINT = "(pass errors='nan' to get a NaN row instead)"


class MoleculeInputMixin:
    """scikit-learn tags of an estimator whose X is a sequence of molecules, not a 2-D array."""

    _requires_fit = True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.requires_fit = self._requires_fit
        if tags.transformer_tags is not None:  # float32 out, whatever comes in
            tags.transformer_tags.preserves_dtype = []
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"X_types": ["string"], "requires_fit": self._requires_fit, "preserves_dtype": []}


def as_items(X, name: str = "X") -> list:
    """A flat list of the molecules in X (list, tuple, 1-D or (n, 1) array or nested list, Series,
    DataFrame); ``name`` is what the error messages call it."""
    if isinstance(X, (str, bytes, Chem.Mol)):
        raise TypeError(f"{name} must be a sequence of molecules, not a single one: wrap it in a list")
    if hasattr(X, "to_numpy"):  # pandas Series or one-column DataFrame
        X = X.to_numpy()
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        elif X.ndim != 1:
            raise ValueError(f"{name} must be 1-D or have one column of molecules, got shape {X.shape}")
    items = list(X)
    if not items:
        raise ValueError(f"{name} is empty: at least one molecule is needed")
    # A list of lists is a table, as scikit-learn reads it; in a 1-D array a list is one item.
    if isinstance(X, (list, tuple)) and all(isinstance(item, (list, tuple)) for item in items):
        widths = sorted({len(item) for item in items})
        if widths != [1]:
            raise ValueError(f"{name} must be 1-D or have one column of molecules, got rows of {widths} "
                             "items")
        items = [item[0] for item in items]
    return items


def describe(item, limit: int = 80) -> str:
    if isinstance(item, Chem.Mol):  # an empty Mol's SMILES is "", which would show as nothing
        text = Chem.MolToSmiles(item) if item.GetNumAtoms() else "an empty RDKit Mol (no atoms)"
    else:
        text = repr(item)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def standardize_items(items: list, standardizer: Standardizer, errors: str,
                      max_length: int | None = None,
                      check: Callable[[str], str | None] | None = None) -> list[str | None]:
    """Standardised SMILES per item; ``None`` for bad items when ``errors="nan"``.

    With ``max_length``, SMILES the tokenizer cannot read or longer than ``max_length`` tokens
    are bad items too; with ``check``, so are those for which it returns a problem (a string).
    Every check runs here, item by item, so that ``errors="raise"`` names the first bad item
    whatever makes it bad.
    """
    if errors not in ERRORS:
        raise ValueError(f"errors must be one of {ERRORS}, got {errors!r}")
    out: list[str | None] = []
    for index, item in enumerate(items):
        if not isinstance(item, (str, Chem.Mol)):
            if errors == "raise":
                raise TypeError(f"X[{index}] = {describe(item)} is neither a SMILES string nor an "
                                f"RDKit Mol {NAN_HINT}")
            out.append(None)
            continue
        try:
            smiles = standardizer(item)
        except MoleculeError as error:
            if errors == "raise":
                raise ValueError(f"X[{index}] = {describe(item)} is not a valid molecule: {error} "
                                 f"{NAN_HINT}") from None
            out.append(None)
            continue
        problem = None if max_length is None else token_problem(smiles, max_length)
        if problem is None and check is not None:
            problem = check(smiles)
        if problem and errors == "raise":
            raise ValueError(f"X[{index}] = {describe(item)}: {problem} {NAN_HINT}")
        out.append(None if problem else smiles)
    return out


def token_problem(smiles: str, max_length: int) -> str | None:
    """Why ``smiles`` cannot be fed to a model reading ``max_length`` tokens, or ``None``."""
    try:
        length = n_tokens(smiles)
    except ValueError as error:
        return str(error)
    return length_problem(length, max_length)


def n_tokens(smiles: str) -> int:
    """The tokens a model reads for ``smiles``, with <bos> and <eos>; ``ValueError`` if it cannot
    be tokenised."""
    return len(tokenize(smiles)) + 2


def length_problem(length: int, max_length: int) -> str | None:
    """Why a molecule of ``length`` tokens is too long for a model reading ``max_length``, or ``None``."""
    if length > max_length:
        return (f"it is {length} tokens long with <bos>/<eos>, over max_length={max_length}; "
                "long molecules are rejected, never truncated")
    return None


@dataclass
class EncodedInput:
    """Token ids per item (``None`` marks a bad item) and the unseen tokens met on the way."""

    sequences: list[list[int] | None]
    smiles: list[str | None]
    unknown: Counter = field(default_factory=Counter)

    @property
    def valid(self) -> np.ndarray:
        return np.array([s is not None for s in self.sequences])

    def warn_unknown(self) -> None:
        """One warning per call, listing the unseen tokens and how often each occurred."""
        if self.unknown:
            warnings.warn(UnknownTokenWarning(self.unknown), stacklevel=user_stacklevel())


def encode_items(items: list, standardizer: Standardizer, vocabulary: Vocabulary,
                 max_length: int, errors: str) -> EncodedInput:
    """Standardise, length-check and tokenise every item under the ``errors`` policy."""
    return encode_smiles(standardize_items(items, standardizer, errors, max_length), vocabulary)


def encode_smiles(smiles: list[str | None], vocabulary: Vocabulary) -> EncodedInput:
    """Token ids of SMILES checked by :func:`standardize_items` (``None`` stays ``None``)."""
    encoded = EncodedInput([], list(smiles))
    for s in smiles:
        encoded.sequences.append(None if s is None else vocabulary.encode(s, encoded.unknown))
    return encoded


def check_n_samples(n_samples) -> int:
    # bool is an Integral; sample(True) is a slip, not a request for one molecule
    if not isinstance(n_samples, numbers.Integral) or isinstance(n_samples, bool) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    return int(n_samples)

