"""Small MoleculeNet regression sets shipped with the package, so examples and tests run offline.

Copied unchanged from the chemprop repository's ``data/`` folder (MoleculeNet, Wu et al. 2018;
that repository is MIT-licensed). The measurements come from Delaney 2004 (ESOL), Mobley and
Guthrie 2014 (FreeSolv) and AstraZeneca's deposition in ChEMBL (Lipophilicity, CHEMBL3301361;
ChEMBL data are CC BY-SA 3.0). ESOL lists 5 SMILES twice, with their own measurements; a
cross-validation that must keep a molecule on one side of each fold groups them. Larger sets are
read from a local copy by the benchmarks.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

__all__ = ["load_esol", "load_freesolv", "load_lipophilicity"]

DATA_DIR = Path(__file__).parent / "data"


def _load(filename: str) -> tuple[list[str], np.ndarray]:
    with open(DATA_DIR / filename, newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return [r[0] for r in rows], np.array([float(r[1]) for r in rows])


def load_esol() -> tuple[list[str], np.ndarray]:
    """ESOL (Delaney): 1,128 SMILES and their aqueous solubility, log mol/L.

    Returns
    -------
    smiles : list of str
        The molecules, in the file's order.
    y : ndarray of shape (1128,), float64
        log10 of the solubility in mol/L.

    Examples
    --------
    >>> from sklearn_cmim.datasets import load_esol
    >>> smiles, y = load_esol()
    >>> len(smiles), y.shape
    (1128, (1128,))
    >>> smiles[1], float(y[1])
    ('Cc1occc1C(=O)Nc2ccccc2', -3.3)
    """
    return _load("delaney.csv")


def load_freesolv() -> tuple[list[str], np.ndarray]:
    """FreeSolv: 642 SMILES and their hydration free energy, kcal/mol.

    Returns
    -------
    smiles : list of str
        The molecules, in the file's order.
    y : ndarray of shape (642,), float64
        Hydration free energy in kcal/mol.

    Examples
    --------
    >>> from sklearn_cmim.datasets import load_freesolv
    >>> smiles, y = load_freesolv()
    >>> len(smiles), y.shape
    (642, (642,))
    >>> smiles[0], float(y[0])
    ('CN(C)C(=O)c1ccc(cc1)OC', -11.01)
    """
    return _load("freesolv.csv")


def load_lipophilicity() -> tuple[list[str], np.ndarray]:
    """Lipophilicity: 4,200 SMILES and their logD at pH 7.4.

    Returns
    -------
    smiles : list of str
        The molecules, in the file's order.
    y : ndarray of shape (4200,), float64
        Octanol/water distribution coefficient, logD at pH 7.4.

    Examples
    --------
    >>> from sklearn_cmim.datasets import load_lipophilicity
    >>> smiles, y = load_lipophilicity()
    >>> len(smiles), y.shape
    (4200, (4200,))
    >>> float(y.min()), float(y.max())
    (-1.5, 4.5)
    """
    return _load("lipo.csv")
