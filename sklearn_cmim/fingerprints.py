"""ECFP (Morgan) fingerprints as a scikit-learn transformer: the baseline users pick today."""

from __future__ import annotations

from numbers import Integral
from typing import ClassVar

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import StrOptions

from .chem.inputs import ERRORS, MoleculeInputMixin, as_items, standardize_items
from .chem.standardize import Standardizer
from .params import Range

__all__ = ["ECFPTransformer"]


class ECFPTransformer(MoleculeInputMixin, TransformerMixin, BaseEstimator):
    """Morgan fingerprint bits of radius ``radius`` (2 gives ECFP4), on standardised molecules.

    Bits, not counts, and without chirality: the :class:`~sklearn_cmim.Standardizer` drops
    stereochemistry, salts and charges first, so enantiomers, and a salt and its parent, get
    the same row.

    Parameters
    ----------
    radius : int, default=2
        Radius of the circular environments; the diameter (4 for ECFP4) is twice this. At most
        2**32 - 1; a radius past a molecule's size gives the bits its size allows.
    n_bits : int, default=2048
        Length of the folded bit vector.
    errors : {"raise", "nan"}, default="raise"
        As in :class:`~sklearn_cmim.CMIMTransformer`: bad items raise, or get a NaN row.

    Raises
    ------
    ValueError
        From ``fit`` and ``transform``, if a parameter is invalid (the message names it).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cmim import ECFPTransformer
    >>> X = ECFPTransformer(n_bits=64).fit_transform(["CCO", "c1ccccc1"])
    >>> X.shape, X.dtype
    ((2, 64), dtype('float32'))
    >>> bool(np.isin(X, (0.0, 1.0)).all())
    True
    >>> bool(np.isnan(ECFPTransformer(errors="nan").transform(["not a molecule"])).all())
    True
    >>> ECFPTransformer(n_bits=3).get_feature_names_out()
    array(['ecfp4_0', 'ecfp4_1', 'ecfp4_2'], dtype=object)
    """

    _requires_fit = False  # stateless: transform works on an unfitted instance

    # Checked by ``fit`` and, since it works unfitted, by ``transform``.
    _parameter_constraints: ClassVar[dict] = {
        "radius": [Range(Integral, 0, 2**32 - 1, closed="both")],  # RDKit's radius is an unsigned int
        "n_bits": [Range(Integral, 1, 2**24, closed="both")],  # RDKit's fpSize is a 32-bit count
        "errors": [StrOptions(set(ERRORS))],
    }

    def __init__(self, radius=2, n_bits=2048, errors="raise"):
        self.radius = radius
        self.n_bits = n_bits
        self.errors = errors

    def fit(self, X, y=None):
        self._validate_params()
        return self

    def transform(self, X):
        self._validate_params()
        smiles = standardize_items(as_items(X), Standardizer(), self.errors)
        mols = [None if s is None else Chem.MolFromSmiles(s) for s in smiles]
        # Environments stop growing once they span the molecule, so a radius past the largest
        # molecule's atom count gives the same bits, while RDKit would loop through every step.
        # int(): RDKit takes Python ints only, not the NumPy ones of a parameter grid.
        radius = min(int(self.radius), max((m.GetNumAtoms() for m in mols if m is not None), default=0))
        generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=int(self.n_bits))
        out = np.full((len(smiles), self.n_bits), np.nan, dtype=np.float32)
        for row, mol in enumerate(mols):
            if mol is not None:
                out[row] = generator.GetFingerprintAsNumPy(mol)
        return out

    def get_feature_names_out(self, input_features=None):
        """One name per bit, ``ecfp{diameter}_{bit}``; with it, ``set_output(transform="pandas")`` works."""
        self._validate_params()
        return np.asarray([f"ecfp{2 * self.radius}_{bit}" for bit in range(self.n_bits)], dtype=object)
