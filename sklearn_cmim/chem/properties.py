"""Molecular properties that latent optimisation scores and compares molecules by: QED, penalised
logP and the Tanimoto similarity of Morgan fingerprints, with RDKit.

Public as ``sklearn_cmim.optimization.qed``, ``penalized_logp`` and ``tanimoto_similarity``, where
:func:`~sklearn_cmim.optimize_molecules` names them as objectives.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np
from rdkit import Chem, DataStructs
from rdkit.Chem import QED, Descriptors, RDConfig, rdFingerprintGenerator

from .inputs import as_items, describe

__all__ = ["NORMALIZATION", "morgan_fingerprint", "penalized_logp", "qed", "tanimoto_similarity"]

# Normalisation of penalised logP's three terms over ZINC-250k, as in the code of GCPN
# (bowenliu16/rl_graph_generation, reward_penalized_log_p) and hgraph2graph
# (wengong-jin/hgraph2graph, props/properties.py): (mean, std) of logP, of -SA and of -ring penalty.
NORMALIZATION = {"logp": (2.4570953396190123, 1.434324401111988),
                 "sa": (-3.0525811293166134, 0.8335207024513095),
                 "ring": (-0.0485696876403053, 0.2860212110245455)}


def _molecules(smiles, name: str) -> list[Chem.Mol]:
    items = as_items(smiles)
    mols = []
    for index, item in enumerate(items):
        mol = Chem.MolFromSmiles(item) if isinstance(item, str) and item.strip() else None
        if mol is None:
            raise ValueError(f"{name}: smiles[{index}] = {describe(item)} is not a SMILES RDKit can read")
        mols.append(mol)
    return mols


def qed(smiles) -> np.ndarray:
    """RDKit's quantitative estimate of drug-likeness (QED, Bickerton et al. 2012), in [0, 1].

    Parameters
    ----------
    smiles : sequence of str

    Returns
    -------
    scores : ndarray of shape (n_molecules,), float64

    Raises
    ------
    ValueError
        If a SMILES cannot be read (the message names its index).

    Examples
    --------
    >>> from sklearn_cmim.optimization import qed
    >>> qed(["CC(=O)Oc1ccccc1C(=O)O", "CCO"]).round(3)
    array([0.55 , 0.407])
    """
    return np.array([QED.qed(mol) for mol in _molecules(smiles, "qed")], dtype=float)


@functools.lru_cache(maxsize=1)
def _sascorer():
    """RDKit's Contrib SA_Score module (Ertl and Schuffenhauer 2009), loaded from the rdkit
    installation by path: it ships in the wheel's Contrib folder, which is not a package."""
    path = os.path.join(RDConfig.RDContribDir, "SA_Score", "sascorer.py")
    if not os.path.isfile(path):
        raise ImportError(f"RDKit's SA_Score contribution is missing ({path}); penalised logP needs it")
    spec = importlib.util.spec_from_file_location("sklearn_cmim._sascorer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ring_penalty(mol: Chem.Mol) -> int:
    # The reference implementations take the largest cycle of networkx's cycle basis, which on
    # bridged systems (adamantane: 8) can exceed the largest ring of RDKit's SSSR (6); followed
    # here so that scores compare with published ones. networkx comes with torch.
    import networkx as nx

    cycles = nx.cycle_basis(nx.Graph(Chem.GetAdjacencyMatrix(mol)))
    return max(max((len(cycle) for cycle in cycles), default=0) - 6, 0)


def penalized_logp(smiles, *, normalized=False) -> np.ndarray:
    """Penalised logP: Crippen logP minus the synthetic accessibility score minus a long-ring penalty.

    The objective of the constrained optimisation benchmark of JT-VAE (Jin et al. 2018) and its
    successors (GCPN, MolMIM): ``logP - SA - max(largest ring - 6, 0)``, with RDKit's Crippen
    logP, the SA score of RDKit's Contrib ``sascorer`` (1 easy to 10 hard), and rings taken from a
    cycle basis of the molecular graph as in the reference code.

    Parameters
    ----------
    smiles : sequence of str
    normalized : bool, default=False
        Standardise each term by its ZINC-250k mean and standard deviation first, as GCPN's reward
        and hgraph2graph's ``props/properties.py`` do (:data:`NORMALIZATION`). JT-VAE's own
        benchmark code (``molopt/optimize.py``) and the published improvements use the raw terms.

    Returns
    -------
    scores : ndarray of shape (n_molecules,), float64

    Raises
    ------
    ImportError
        If the RDKit installation lacks its Contrib ``SA_Score`` module.
    ValueError
        If a SMILES cannot be read (the message names its index).

    Notes
    -----
    The seed values shipped with JT-VAE's benchmark (``opt.test.logP-SA``) are ``logP - SA``
    without the ring penalty, as ``molopt/optimize.py`` scores them: the two agree on every seed
    without a ring larger than six atoms (758 of the 800), and differ by the penalty on the rest.

    Examples
    --------
    >>> from sklearn_cmim.optimization import penalized_logp
    >>> penalized_logp(["CCCCCCCC", "c1ccccc1O", "C1CCCCCCC1"]).round(2)
    array([2.06, 0.22, 0.12])
    """
    sascorer = _sascorer()
    scores = []
    for mol in _molecules(smiles, "penalized_logp"):
        terms = {"logp": Descriptors.MolLogP(mol), "sa": -sascorer.calculateScore(mol),
                 "ring": -_ring_penalty(mol)}
        if normalized:
            terms = {name: (value - NORMALIZATION[name][0]) / NORMALIZATION[name][1]
                     for name, value in terms.items()}
        scores.append(sum(terms.values()))
    return np.array(scores, dtype=float)


@functools.lru_cache(maxsize=1)
def _morgan():
    return rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)


def morgan_fingerprint(mol: Chem.Mol):
    """The fingerprint :func:`tanimoto_similarity` compares: Morgan, radius 2, 2,048 bits."""
    return _morgan().GetFingerprint(mol)


def tanimoto_similarity(a: str, b) -> np.ndarray:
    """Tanimoto similarity of Morgan fingerprints (radius 2, 2,048 bits) of ``a`` to each of ``b``.

    The similarity of the constrained optimisation benchmark (JT-VAE and its successors).

    Parameters
    ----------
    a : str
        A SMILES.
    b : sequence of str
        SMILES to compare with ``a``.

    Returns
    -------
    similarity : ndarray of shape (len(b),), float64, in [0, 1]

    Examples
    --------
    >>> from sklearn_cmim.optimization import tanimoto_similarity
    >>> tanimoto_similarity("CCOc1ccccc1", ["CCOc1ccccc1", "CCCOc1ccccc1", "CCN"]).round(2)
    array([1.  , 0.64, 0.15])
    """
    reference = morgan_fingerprint(_molecules([a], "tanimoto_similarity")[0])
    others = [morgan_fingerprint(mol) for mol in _molecules(b, "tanimoto_similarity")]
    return np.array(DataStructs.BulkTanimotoSimilarity(reference, others), dtype=float)
