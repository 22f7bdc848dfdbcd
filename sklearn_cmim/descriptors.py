"""RDKit 2D descriptors as a scikit-learn transformer: the hand-crafted baseline of the benchmarks."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import Descriptors
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import StrOptions

from .chem.inputs import ERRORS, MoleculeInputMixin, as_items, standardize_items
from .chem.standardize import Standardizer

__all__ = ["RDKitDescriptorsTransformer"]

# Ipc and AvgIpc take time growing as the fourth power of the size: a row of a 500-atom molecule
# takes seconds, of a 1,000-atom one minutes, of the largest SMILES the Standardizer accepts days.
MAX_ATOMS = 500


class RDKitDescriptorsTransformer(MoleculeInputMixin, TransformerMixin, BaseEstimator):
    """RDKit's 2D descriptors (``rdkit.Chem.Descriptors.descList``) of standardised molecules.

    Molecules are standardised first (largest fragment, neutralised; see
    :class:`~sklearn_cmim.Standardizer`), so a salt and its parent get the same row. A descriptor
    that fails on a molecule, or whose value is not finite in float32 (``Ipc`` overflows on large
    molecules), gives NaN in that cell: impute before a model that cannot take NaN. Molecules of
    more than 500 heavy atoms are bad items, under ``errors``: some descriptors would take
    minutes to days on them.

    Some descriptors are heavy-tailed: ``Ipc`` reaches 1e31 on Lipophilicity, where 99% of the
    molecules are under 1e10. After ``StandardScaler``, a test molecule past the training range
    can lie millions of standard deviations out, and so can a linear model's prediction for it
    (in 3-fold CV of a ``Ridge`` on 1,500 Lipophilicity molecules, one fold's RMSE was 3e9).
    Map the descriptors through their quantiles instead (``QuantileTransformer``), as the
    benchmarks do, or leave ``Ipc`` out.

    Parameters
    ----------
    descriptors : list or array of str, default=None
        Names from ``descList`` to compute, in this order; ``None`` computes all of them (the
        list grows with RDKit's version: ``fit`` fixes it, see ``descriptor_names_``).
    standardizer : Standardizer, default=None
        ``None`` means ``Standardizer()``.
    errors : {"raise", "nan"}, default="raise"
        As in :class:`~sklearn_cmim.CMIMTransformer`: bad items raise, or get an all-NaN row.

    Attributes
    ----------
    descriptor_names_ : ndarray of str
        The descriptors chosen at ``fit``, which a fitted transformer computes from then on: a
        pipeline fitted under one RDKit version gives the same columns under another, or an
        error naming the descriptors that version lacks. An unfitted transformer computes what
        ``descriptors`` names in the RDKit at hand.
    rdkit_version_ : str
        The RDKit version at ``fit``.

    Examples
    --------
    >>> from sklearn_cmim import RDKitDescriptorsTransformer
    >>> rdkit2d = RDKitDescriptorsTransformer(descriptors=["MolWt", "NumHDonors"])
    >>> rdkit2d.fit_transform(["CCO", "OC(=O)c1ccccc1.[Na+]"]).round(1)
    array([[ 46.1,   1. ],
           [122.1,   1. ]], dtype=float32)
    >>> rdkit2d.get_feature_names_out()
    array(['MolWt', 'NumHDonors'], dtype=object)
    >>> RDKitDescriptorsTransformer(errors="nan").transform(["not a molecule"]).shape[1] > 200
    True
    """

    _requires_fit = False  # stateless: transform works on an unfitted instance

    # Checked by every method (each goes through ``_functions``), since none needs a fit first.
    # Names missing from ``descList`` are a separate check, in ``_functions``.
    _parameter_constraints: ClassVar[dict] = {
        "descriptors": ["array-like", None],  # a list of names; a lone string is refused
        "standardizer": [Standardizer, None],
        "errors": [StrOptions(set(ERRORS))],
    }

    def __init__(self, descriptors=None, standardizer=None, errors="raise"):
        self.descriptors = descriptors
        self.standardizer = standardizer
        self.errors = errors

    def _functions(self) -> list[tuple[str, object]]:
        """The descriptors fixed at ``fit``, or, unfitted, those the parameters choose."""
        self._validate_params()
        available = dict(Descriptors.descList)
        if not hasattr(self, "descriptor_names_"):
            names = self._chosen(available)
        elif missing := [name for name in self.descriptor_names_ if name not in available]:
            raise ValueError(f"this transformer was fitted under RDKit {self.rdkit_version_}, and RDKit "
                             f"{rdBase.rdkitVersion} has no descriptors {missing}: fit it again")
        else:
            names = list(self.descriptor_names_)
        return [(name, available[name]) for name in names]

    def _chosen(self, available: dict) -> list[str]:
        """The names the ``descriptors`` parameter chooses among ``available``, checked."""
        if self.descriptors is None:
            return list(available)
        if isinstance(self.descriptors, (set, frozenset)):
            raise ValueError("descriptors must be a list or an array, not a set: a set's order, and so "
                             "the columns', changes from one Python process to the next")
        names = [str(name) for name in self.descriptors]  # a list or an array
        unknown = [name for name in names if name not in available]
        if unknown:
            raise ValueError(f"unknown RDKit descriptors {unknown}; see rdkit.Chem.Descriptors.descList")
        if not names:
            raise ValueError("descriptors is empty: name at least one, or pass None for all of them")
        if repeated := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"descriptors names {repeated} more than once: its columns would share a name")
        return names

    def fit(self, X=None, y=None):
        """Check the parameters and fix the descriptors to compute; nothing is learned from ``X``.

        Returns
        -------
        self : RDKitDescriptorsTransformer
        """
        self._validate_params()
        self.descriptor_names_ = np.asarray(self._chosen(dict(Descriptors.descList)), dtype=object)
        self.rdkit_version_ = rdBase.rdkitVersion
        return self

    def transform(self, X):
        """Compute the descriptors.

        Parameters
        ----------
        X : sequence of str or rdkit.Chem.Mol
            SMILES strings or molecules: a list, 1-D array, (n, 1) array or pandas Series.

        Returns
        -------
        descriptors : ndarray of shape (n_samples, n_descriptors), float32
            NaN where a descriptor could not be computed; all-NaN rows for bad items when
            ``errors="nan"``.
        """
        functions = self._functions()
        smiles = standardize_items(as_items(X), self.standardizer or Standardizer(), self.errors,
                                   check=size_problem)
        out = np.full((len(smiles), len(functions)), np.nan, dtype=np.float32)
        with np.errstate(over="ignore"):  # a value past float32's range becomes inf, then NaN below
            for row, s in enumerate(smiles):
                if s is None:
                    continue
                mol = Chem.MolFromSmiles(s)  # the Standardizer guarantees it reads back
                for column, (_, function) in enumerate(functions):
                    try:
                        out[row, column] = function(mol)
                    except Exception:  # RDKit descriptors raise many unrelated types; the cell stays NaN
                        continue
        out[~np.isfinite(out)] = np.nan
        return out

    def get_feature_names_out(self, input_features=None):
        """The descriptor names, one per column."""
        return np.asarray([name for name, _ in self._functions()], dtype=object)


def size_problem(smiles: str) -> str | None:
    """Why the descriptors of ``smiles`` would take too long, or ``None``."""
    n_atoms = Chem.MolFromSmiles(smiles).GetNumAtoms()
    if n_atoms > MAX_ATOMS:
        return (f"it has {n_atoms} heavy atoms, over the {MAX_ATOMS} that RDKit's descriptors are "
                "computed for (some would take minutes to days)")
    return None
