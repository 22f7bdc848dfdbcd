"""Downstream property prediction: cMIM and MIM embeddings against ECFP4 and RDKit descriptors.

Tests claims 1 and 2 of docs/method.md on MoleculeNet: ESOL, FreeSolv, Lipophilicity (RMSE) and
BACE, BBBP (ROC-AUC); ClinTox and Tox21 with ``--extras`` (mean ROC-AUC over their tasks).
Full run, once the bundled models exist (several hours on two CPU cores, mostly random forests;
``--n-jobs`` parallelises the grid searches):

    python -m benchmarks.evaluation.downstream --cmim-model cmim-broad --mim-model mim-broad --n-jobs 2

Smoke run of the code (trains two tiny models on bundled ESOL; well under a minute), and the
command that (re)writes the committed scaffold split files alone:

    python -m benchmarks.evaluation.downstream --quick
    python -m benchmarks.evaluation.downstream --splits-only

Protocol. Every feature matrix is computed once per dataset: the featurisers are frozen
(pretrained models, fixed fingerprints), so no label information can leak through them.
Molecules that any feature set cannot featurise (unparsable, too long for the model) are dropped
for all feature sets alike, and counted. Each feature set then meets the same heads on the same
splits; each head's small grid is tuned by inner cross-validation on the training part only.

* Scaffold split: deterministic Murcko-scaffold split 80/10/10, written to
  ``benchmarks/splits/<dataset>_scaffold.json`` (CSV row indices). The valid part is merged with
  train, and heads are tuned by scaffold-grouped inner CV over both, so tuning sees the same
  unseen-scaffold shift as the test part and no molecule is spent on a single noisy hold-out.
  Scores are on the test part; error bars are bootstrap standard deviations over test molecules.
* Random CV: 5 folds x 3 seeds, mean ± standard deviation over the 15 test folds. Folds split
  molecules, not rows (a molecule listed twice once standardised stays on one side), in the heads'
  inner CV too.

"Best head" is chosen by its inner-CV score, never by the test score. Informative-embedding
variants (docs/method.md, Embeddings) are compared with a linear head (Ridge / logistic regression), the usual
probe of what a representation holds.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import math
import os
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem.Scaffolds import MurckoScaffold
from scipy.linalg import LinAlgWarning
from scipy.stats import rankdata
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import QuantileTransformer, StandardScaler
from sklearn.svm import SVC, SVR

from benchmarks.common import (
    DOCS_MARKDOWN,
    MOLECULENET,
    QUICK_MODEL,
    ROOT,
    as_command,
    at_least,
    command_line,
    fmt,
    load_model,
    markdown_table,
    mean_std,
    pyplot,
    relative_link,
    shared_file,
    update_markdown_section,
    write_json,
)
from sklearn_cmim import CMIMTransformer, Standardizer
from sklearn_cmim.chem.inputs import standardize_items
from sklearn_cmim.datasets import load_esol
from sklearn_cmim.descriptors import RDKitDescriptorsTransformer
from sklearn_cmim.fingerprints import ECFPTransformer
from sklearn_cmim.persistence import resolve_pretrained


@dataclass(frozen=True)
class Dataset:
    label: str
    file: str
    task: str  # "regression" (RMSE, lower is better) or "classification" (ROC-AUC)

    @property
    def metric(self) -> str:
        return "RMSE" if self.task == "regression" else "ROC-AUC"

    @property
    def heading(self) -> str:
        """The dataset's name and metric, as the reports' tables head a column or row."""
        return f"{self.label} ({self.metric})"


DATASETS = {
    "esol": Dataset("ESOL", "delaney.csv", "regression"),
    "freesolv": Dataset("FreeSolv", "freesolv.csv", "regression"),
    "lipophilicity": Dataset("Lipophilicity", "lipo.csv", "regression"),
    "bace": Dataset("BACE", "bace.csv", "classification"),
    "bbbp": Dataset("BBBP", "bbbp.csv", "classification"),
    "clintox": Dataset("ClinTox", "clintox.csv", "classification"),
    "tox21": Dataset("Tox21", "tox21.csv", "classification"),
}
CORE = ["esol", "freesolv", "lipophilicity", "bace", "bbbp"]
EXTRAS = ["clintox", "tox21"]
FEATURE_SETS = ["ECFP4", "RDKit 2D", "MIM latent", "MIM informative", "cMIM latent", "cMIM informative"]
VARIANTS = list(itertools.product(("last", "mean"), ("mean", "mean_max"), (True, False)))
# "cMIM informative" is the package's default recipe, whatever it is when the benchmark runs.
DEFAULT_RECIPE = tuple(CMIMTransformer().get_params()[f"informative_{part}"]
                       for part in ("layers", "pooling", "with_latent"))
SPLITS = ("scaffold", "random_cv")
# Claims checked task by task on the best-head scores. The first two, on the scaffold split, are
# the project's goal: each must hold on at least 4 of the 5 core tasks.
COMPARISONS = [  # (a, b, relation, what it tests: the goal or a claim of docs/method.md)
    ("cMIM informative", "ECFP4", "beats", "goal"),
    ("cMIM informative", "MIM informative", "matches or beats", "goal; claim 1"),
    ("cMIM latent", "MIM latent", "matches or beats", "claim 1"),
    ("MIM informative", "MIM latent", "beats", "claim 2"),
    ("cMIM informative", "cMIM latent", "beats", "claim 2"),
    ("cMIM informative", "RDKit 2D", "beats", "the other baseline"),
    ("MIM informative", "ECFP4", "beats", "the baselines"),
    ("MIM informative", "RDKit 2D", "beats", "the baselines"),
]
# Resamples of the scaffold test part for each claim's paired bootstrap.
PAIRED_RESAMPLES = 1000
SPLITS_DIR = ROOT / "benchmarks" / "splits"
# Part of every cached score's key: bump it when heads, grids or scoring change.
PROTOCOL_VERSION = 5
QUICK_TRAIN_MOLECULES = 300


# ------------------------------------------------------------------------------------------ data
def load_dataset(name: str) -> tuple[list[str], np.ndarray, list[str]]:
    """SMILES, labels (n, tasks) with NaN for missing ones, and the task names."""
    with open(shared_file(MOLECULENET / DATASETS[name].file), newline="") as handle:
        header, *rows = list(csv.reader(handle))
    labels = np.array([[float(v) if v else math.nan for v in row[1:]] for row in rows])
    return [row[0] for row in rows], labels, header[1:]


def murcko_scaffolds(smiles: list[str]) -> list[str | None]:
    """Murcko scaffold of each standardised molecule ("" when acyclic); None when RDKit cannot
    read the molecule, or its standardised SMILES back (Tox21's metallocenes)."""
    scaffolds = []
    for s in standardize_items(smiles, Standardizer(), errors="nan"):
        mol = None if s is None else Chem.MolFromSmiles(s)
        scaffolds.append(None if mol is None else
                         MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False))
    return scaffolds


def scaffold_groups(scaffolds: list[str | None]) -> np.ndarray:
    """An integer group per molecule, shared by molecules of one scaffold, for grouped inner CV."""
    return np.unique([s if s is not None else "" for s in scaffolds], return_inverse=True)[1]


def committed_split(name: str) -> dict[str, list[int]]:
    """The committed scaffold split of dataset ``name``: CSV row indices of train, valid and test."""
    return json.loads((SPLITS_DIR / f"{name}_scaffold.json").read_text())


def scaffold_split(scaffolds: list[str | None], fractions=(0.8, 0.1)) -> dict[str, list[int]]:
    """Positions of train/valid/test: whole scaffold groups, the largest ones to train first.

    Groups are taken by decreasing size; a group joins train while train stays within its share,
    else valid, else test, so test collects the rarest scaffolds (the usual MoleculeNet scaffold
    split). Groups of equal size are ordered by a hash of their scaffold, not by row position:
    MoleculeNet's BACE and BBBP files are sorted by label, and position order would fill the
    test part with singletons of one class. Unparsable molecules (scaffold None) are in no part.
    """
    groups = defaultdict(list)
    for position, scaffold in enumerate(scaffolds):
        if scaffold is not None:
            groups[scaffold].append(position)
    n = sum(map(len, groups.values()))
    train_cut, valid_cut = fractions[0] * n, (fractions[0] + fractions[1]) * n
    parts = {"train": [], "valid": [], "test": []}
    order = sorted(groups, key=lambda s: (-len(groups[s]), hashlib.sha256(s.encode()).hexdigest()))
    for scaffold in order:
        group = groups[scaffold]
        if len(parts["train"]) + len(group) <= train_cut:
            parts["train"] += group
        elif len(parts["train"]) + len(parts["valid"]) + len(group) <= valid_cut:
            parts["valid"] += group
        else:
            parts["test"] += group
    return {name: sorted(positions) for name, positions in parts.items()}


# ------------------------------------------------------------------------------------- features
def model_fingerprint(name_or_dir: str) -> str:
    """A hash of a model's files: what it computed stays valid while they are unchanged."""
    directory = resolve_pretrained(name_or_dir)
    digest = hashlib.sha256()
    for file in ("config.json", "vocab.json", "weights.pt"):
        digest.update((directory / file).read_bytes())
    return digest.hexdigest()[:16]


class Cache:
    """Feature matrices and scores on disk, keyed by a hash of everything that determines them,
    so a killed run (hours, on a CPU) resumes where it stopped and a rerun redoes only what a
    changed model or setting invalidates. Files are written whole, then renamed into place."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        # Compute time of everything served, recorded when it was computed (a cached entry keeps
        # its own), so the report can state what a run from an empty cache costs.
        self.compute_seconds, self.untimed, self.hits, self.misses = 0.0, 0, 0, 0

    def _served(self, seconds: float | None, hit: bool) -> None:
        self.hits, self.misses = self.hits + hit, self.misses + (not hit)
        if seconds is None:
            self.untimed += 1
        else:
            self.compute_seconds += seconds

    def _compute(self, compute):
        """``compute()`` and the seconds it took, counted as served."""
        start = time.perf_counter()
        value = compute()
        seconds = time.perf_counter() - start
        self._served(seconds, hit=False)
        return value, seconds

    def _path(self, key: dict, suffix: str) -> Path | None:
        if self.directory is None:
            return None
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        return self.directory / f"{digest[:24]}{suffix}"

    def _store(self, path: Path | None, write) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(path.name + ".partial")
            with open(temporary, "wb") as handle:
                write(handle)
            os.replace(temporary, path)

    def array(self, key: dict, compute) -> np.ndarray:
        path = self._path(key, ".npy")
        timing = None if path is None else path.with_suffix(".seconds")
        if path is not None and path.exists():
            self._served(float(timing.read_text()) if timing.exists() else None, hit=True)
            return np.load(path, allow_pickle=False)
        X, seconds = self._compute(compute)
        self._store(path, lambda handle: np.save(handle, X, allow_pickle=False))
        self._store(timing, lambda handle: handle.write(f"{seconds:.3f}".encode()))
        return X

    def array_seconds(self, key: dict) -> float | None:
        """The compute time recorded with the array of ``key``, if it is on disk."""
        path = self._path(key, ".seconds")
        return float(path.read_text()) if path is not None and path.exists() else None

    def result(self, key: dict, compute) -> dict:
        path = self._path(key, ".json")
        if path is not None and path.exists():
            result = json.loads(path.read_text())
            self._served(result.get("seconds"), hit=True)
            return result
        result, seconds = self._compute(compute)
        result["seconds"] = seconds
        # NaN survives (Python's json writes it); numpy scalars become Python ones.
        text = json.dumps(result, default=lambda value: value.item()).encode()
        self._store(path, lambda handle: handle.write(text))
        return result


def featurise(smiles: list[str], models: dict[str, tuple[CMIMTransformer, str]], wanted: list[str],
              cache: Cache) -> tuple[dict, dict]:
    """The wanted feature matrices of readable molecules, and the informative-embedding variants
    of each model whose informative embedding is wanted (read from the cache where it has them).

    A model's latent embedding is computed whenever any of its feature sets is wanted: its NaN
    rows (molecules the model cannot read) decide which molecules every feature set is scored on.
    """
    def cached(name: str, source: str, compute) -> np.ndarray:
        return cache.array({"smiles": smiles, "features": name, "source": source}, compute)

    fixed = {"ECFP4": lambda: ECFPTransformer(radius=2, n_bits=2048, errors="nan").transform(smiles),
             "RDKit 2D": lambda: RDKitDescriptorsTransformer(errors="nan").transform(smiles)}
    features = {name: cached(name, f"rdkit {rdBase.rdkitVersion}", compute)
                for name, compute in fixed.items() if name in wanted}
    variants = {}

    def embed(model, **params):
        return lambda: model.set_params(**params).transform(smiles)

    for label, (model, fingerprint) in models.items():
        features[f"{label} latent"] = cached(f"{label} latent", fingerprint, embed(model, embedding="latent"))
        if f"{label} informative" not in wanted:
            continue
        for layers, pooling, with_latent in VARIANTS:  # each recipe with the latent before it without
            name = variant_name(label, layers, pooling, with_latent)
            if with_latent:
                variants[name] = cached(name, fingerprint, embed(
                    model, embedding="informative", informative_layers=layers, informative_pooling=pooling,
                    informative_with_latent=True))
            else:
                variants[name] = without_latent(variants[variant_name(label, layers, pooling, True)], model)
        # The package's default recipe is one of the variants: the same matrix, met by every head.
        features[f"{label} informative"] = variants[variant_name(label, *DEFAULT_RECIPE)]
    return features, variants


def without_latent(with_latent: np.ndarray, model: CMIMTransformer) -> np.ndarray:
    """A recipe's informative embedding without the latent, from the same recipe's matrix with it:
    the latent mean is its leading columns, so the recipe costs no second pass over the molecules."""
    config = model.model_.config
    return with_latent[:, config.n_latents * config.latent_dim:]


def outside_vocabulary(smiles: list[str], models: dict[str, tuple[CMIMTransformer, str]]) -> dict:
    """Per model, how many of the molecules hold a token its vocabulary lacks (read as <unk>):
    MOSES has no charges, P or I, and MoleculeNet has all three."""
    counts = {}
    for label, (model, _) in models.items():
        standard = standardize_items(smiles, model.standardizer_, errors="nan")
        counts[label] = sum(holds_unknown_token(model.vocabulary_, text) for text in filter(None, standard))
    return counts


def holds_unknown_token(vocabulary, smiles: str) -> bool:
    """Whether the model would read any token of (standardised) ``smiles`` as <unk>."""
    unknown = Counter()
    vocabulary.encode(smiles, unknown)
    return bool(unknown)


def _rows_at(X: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """X's rows placed where ``mask`` is True, NaN rows elsewhere."""
    out = np.full((len(mask), X.shape[1]), np.nan, dtype=X.dtype)
    out[mask] = X
    return out


def variant_name(label: str, layers: str, pooling: str, with_latent: bool) -> str:
    return f"{label} | {recipe_name(layers, pooling, with_latent)}"


def recipe_name(layers: str, pooling: str, with_latent: bool) -> str:
    return f"layers {layers} | pool {pooling} | {'with' if with_latent else 'no'} latent"


# ---------------------------------------------------------------------------------------- heads
def make_heads(task: str, features: str, quick: bool, linear_only: bool = False,
               descriptor_columns: slice | None = None) -> dict:
    """Name -> (unfitted estimator, small grid) for one feature set. NaN cells are imputed.

    Before linear and kernel heads, embeddings are standardised; RDKit descriptors are mapped
    through their training quantiles instead, because some are heavy-tailed (``Ipc`` reaches
    1e22) and a standardised outlier in the test part would dominate a linear prediction; ECFP
    bits are left as they are: they share a 0/1 scale, and standardising would inflate rare bits.
    For a feature set joined with descriptors, ``descriptor_columns`` says which columns are the
    descriptors: each block is scaled its own way. Trees need none of this.
    """
    def quantiles():
        return QuantileTransformer(n_quantiles=20 if quick else 200, output_distribution="normal")

    def prep():
        if descriptor_columns is not None:
            rest = "passthrough" if features == "ECFP4" else StandardScaler()
            scaler = ColumnTransformer([("descriptors", quantiles(), descriptor_columns)], remainder=rest)
        elif features == "ECFP4":
            scaler = "passthrough"
        elif features == "RDKit 2D":
            scaler = quantiles()
        else:
            scaler = StandardScaler()
        # A joined set keeps every column, so that the descriptor block stays where it was.
        return [SimpleImputer(strategy="median", keep_empty_features=descriptor_columns is not None), scaler]

    # 100 trees and at most a fifth of the features per split keep the forests, by far the
    # slowest head, to minutes per dataset; finer forests rarely win on these embeddings.
    trees = 10 if quick else 100
    if task == "regression":
        heads = {
            "Ridge": (make_pipeline(*prep(), Ridge()),
                      {"ridge__alpha": [1.0, 10.0] if quick else [0.1, 1.0, 10.0, 100.0, 1000.0]}),
            # Targets are standardised so that SVR's epsilon and C mean the same on every dataset.
            "SVR": (TransformedTargetRegressor(make_pipeline(*prep(), SVR()), transformer=StandardScaler()),
                    {"regressor__svr__C": [1.0] if quick else [0.1, 1.0, 10.0]}),
            "RF": (make_pipeline(SimpleImputer(strategy="median"),
                                 RandomForestRegressor(n_estimators=trees, random_state=0)),
                   {"randomforestregressor__max_features": ["sqrt"] if quick else ["sqrt", 0.2]}),
        }
    else:
        heads = {
            "LogReg": (make_pipeline(*prep(), LogisticRegression(max_iter=2000)),
                       {"logisticregression__C": [0.1, 1.0] if quick else [0.01, 0.1, 1.0, 10.0]}),
            "SVC": (make_pipeline(*prep(), SVC()), {"svc__C": [1.0] if quick else [0.1, 1.0, 10.0]}),
            "RF": (make_pipeline(SimpleImputer(strategy="median"),
                                 RandomForestClassifier(n_estimators=trees, random_state=0)),
                   {"randomforestclassifier__max_features": ["sqrt"] if quick else ["sqrt", 0.2]}),
        }
    return dict(list(heads.items())[:1]) if linear_only else heads


def test_metric(task: str, y, prediction) -> float:
    """RMSE for regression, ROC-AUC of 0/1 labels for classification, as scikit-learn computes
    them. Written in NumPy because the bootstraps call it tens of thousands of times, where
    scikit-learn's input checks cost twenty times the metric."""
    y, prediction = np.asarray(y, dtype=float), np.asarray(prediction, dtype=float)
    if y.shape != prediction.shape or y.ndim != 1 or not len(y):
        raise ValueError(f"labels {y.shape} and predictions {prediction.shape} must be equal, "
                         "non-empty vectors")
    if not (np.isfinite(y).all() and np.isfinite(prediction).all()):
        raise ValueError("labels and predictions must be finite")
    if task == "regression":
        return float(np.sqrt(np.mean((y - prediction) ** 2)))
    positive = y == 1
    if not np.all(positive | (y == 0)):
        raise ValueError(f"ROC-AUC needs labels 0 and 1, not {sorted(set(y.tolist()) - {0.0, 1.0})}")
    n_positive = int(positive.sum())
    n_negative = len(y) - n_positive
    if not n_positive or not n_negative:
        raise ValueError("ROC-AUC is undefined when the labels hold one class")
    # Mann-Whitney: the chance that a positive outranks a negative, ties counting one half.
    ranks = rankdata(prediction)
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def predict(task: str, estimator, X):
    if task == "regression":
        return estimator.predict(X)
    if hasattr(estimator, "decision_function"):
        return estimator.decision_function(X)
    return estimator.predict_proba(X)[:, 1]


def better(task: str, a: float, b: float) -> bool:
    return a < b if task == "regression" else a > b


def inner_cv(task: str, folds: int, seed: int | None = None):
    """Inner CV over whole groups (the ``groups`` given with it): scaffolds in a fixed order for the
    scaffold split (``seed`` None); molecules shuffled by ``seed`` in random CV, so that tuning
    never validates on a molecule whose other row it trained on."""
    if seed is None:
        return StratifiedGroupKFold(folds) if task == "classification" else GroupKFold(folds)
    if task == "classification":
        return StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    return ShuffledGroupKFold(folds, seed)


class ShuffledGroupKFold:
    """K folds of whole groups drawn at random (``GroupKFold(shuffle=True)`` of scikit-learn 1.6,
    for the older versions the package supports): each fold holds about as many groups."""

    def __init__(self, n_splits: int, seed: int):
        self.n_splits, self.seed = n_splits, seed

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_splits

    def split(self, X, y=None, groups=None):
        if groups is None:
            raise ValueError("ShuffledGroupKFold needs the groups")
        shuffled = np.random.default_rng(self.seed).permutation(np.unique(groups))
        if len(shuffled) < self.n_splits:
            raise ValueError(f"{len(shuffled)} groups cannot make {self.n_splits} folds")
        for part in np.array_split(shuffled, self.n_splits):
            test = np.isin(groups, part)
            yield np.flatnonzero(~test), np.flatnonzero(test)


# ----------------------------------------------------------------------------------- evaluation
def evaluate_heads(X, Y, train, test, task, heads, cv, groups, n_jobs) -> dict:
    """Tune each head on ``train`` by inner CV and score it on ``test``, task by task.

    Returns per head: ``test`` and ``inner`` scores in the metric's units (mean over tasks for
    multi-task sets; rows with a missing label are skipped per task), the chosen ``params`` and
    the test ``pairs`` per task, which the bootstrap reuses: labels, predictions and the labelled
    molecules' positions in the test part. With no ``test`` rows only the inner-CV scores are
    measured.
    """
    scoring = "neg_root_mean_squared_error" if task == "regression" else "roc_auc"
    sign = -1.0 if task == "regression" else 1.0
    results = {}
    for name, (estimator, grid) in heads.items():
        tests, inners, params, pairs = [], [], [], []
        for t in range(Y.shape[1]):
            labelled = ~np.isnan(Y[test, t])
            tr, te = train[~np.isnan(Y[train, t])], test[labelled]
            one_class = [len(np.unique(Y[rows, t])) < 2 for rows in (tr, te) if len(rows)]
            if task == "classification" and any(one_class):
                continue  # AUC is undefined with one class; the task is left out of the mean
            search = GridSearchCV(estimator, grid, scoring=scoring, cv=cv, n_jobs=n_jobs)
            search.fit(X[tr], Y[tr, t], groups=None if groups is None else groups[tr])
            inners.append(sign * search.best_score_)
            params.append(search.best_params_)
            if len(te):
                prediction = predict(task, search.best_estimator_, X[te])
                tests.append(test_metric(task, Y[te, t], prediction))
                pairs.append((Y[te, t], prediction, np.flatnonzero(labelled)))
        results[name] = {"test": mean_std(tests)[0], "inner": mean_std(inners)[0],
                         "params": params[0] if len(params) == 1 else params,
                         "tasks_scored": len(inners), "pairs": pairs}
    return results


def best_head(task: str, per_head: dict) -> str:
    """The head with the best inner-CV score (NaN scores last)."""
    def key(name):
        inner = per_head[name]["inner"]
        return math.inf if not np.isfinite(inner) else (inner if task == "regression" else -inner)
    return min(per_head, key=key)


def resampler(pairs):
    """A function of a generator giving one bootstrap draw of the test molecules, shared by all
    tasks: for each pair, the indices of its molecules in the draw (one drawn twice counts twice).
    A pair's optional third element holds its molecules' positions in the test part; without it,
    the pair is the whole test part. Drawing molecules rather than each task's labels keeps the
    tasks' correlation in the spread."""
    positions = [np.asarray(pair[2], dtype=int) if len(pair) > 2 else np.arange(len(pair[0]))
                 for pair in pairs]
    size = max((int(p.max()) + 1 for p in positions if len(p)), default=0)

    def draw(rng: np.random.Generator) -> list[np.ndarray]:
        counts = np.bincount(rng.integers(0, size, size), minlength=size)
        return [np.repeat(np.arange(len(p)), counts[p]) for p in positions]
    return draw


def bootstrap_std(task: str, pairs, n: int, seed: int = 0) -> float:
    """Standard deviation of the test metric over bootstrap resamples of the test molecules."""
    rng = np.random.default_rng(seed)
    draw = resampler(pairs)
    pairs = [(np.asarray(y), np.asarray(prediction)) for y, prediction, *_ in pairs]
    scores = []
    for _ in range(n):
        per_task = []
        for (y, prediction), pick in zip(pairs, draw(rng), strict=True):
            if task == "classification" and len(np.unique(y[pick])) < 2:
                continue
            per_task.append(test_metric(task, y[pick], prediction[pick]))
        if per_task:
            scores.append(np.mean(per_task))
    return mean_std(scores)[1]


def paired_bootstrap(task: str, pairs_a, pairs_b, n: int, seed: int = 0) -> float | None:
    """The share of ``n`` bootstrap resamples of the test molecules on which feature set A's
    predictions score better than B's, both scored on the same resample: how often the win, or
    the loss, holds once the test part's sampling is allowed for (0.5: a coin toss)."""
    rng = np.random.default_rng(seed)
    for pair_a, pair_b in zip(pairs_a, pairs_b, strict=True):
        if len(pair_a[0]) != len(pair_b[0]):
            raise ValueError("the feature sets were scored on different test molecules")
    draw = resampler(pairs_a)
    triples = [(np.asarray(y), np.asarray(a), np.asarray(b))
               for (y, a, *_), (_, b, *_) in zip(pairs_a, pairs_b, strict=True)]
    wins = draws = 0
    for _ in range(n):
        a_scores, b_scores = [], []
        for (y, a, b), pick in zip(triples, draw(rng), strict=True):
            if task == "classification" and len(np.unique(y[pick])) < 2:
                continue
            a_scores.append(test_metric(task, y[pick], a[pick]))
            b_scores.append(test_metric(task, y[pick], b[pick]))
        if a_scores:
            draws += 1
            wins += better(task, float(np.mean(a_scores)), float(np.mean(b_scores)))
    return wins / draws if draws else None


def readable_labelled(scaffolds: list[str | None], Y: np.ndarray) -> np.ndarray:
    """Positions of the molecules RDKit reads (those with a scaffold, from ``murcko_scaffolds``)
    with at least one label: what the peers' random-CV folds share, whichever feature set or
    model reads them afterwards."""
    readable = np.array([s is not None for s in scaffolds])
    return np.flatnonzero(readable & ~np.isnan(Y).all(axis=1))


def molecule_groups(smiles: list[str]) -> np.ndarray:
    """An integer per row, shared by the rows of one molecule once standardised (a salt, a stereo
    mark or a charge apart): what the models and fingerprints read of them is the same."""
    standard = standardize_items(smiles, Standardizer(), errors="nan")
    keys = [s if s is not None else f"unreadable row {i}" for i, s in enumerate(standard)]
    return np.unique(keys, return_inverse=True)[1]


def random_cv_folds(positions, Y, task, folds, seeds, molecules):
    """(seed, train, test) position arrays; stratified for single-task classification.

    The folds split molecules, not rows: the rows of one molecule (``molecules``, from
    ``molecule_groups``) are all on one side, or a test row would have its twin in training.
    """
    _, first, group = np.unique(molecules[positions], return_index=True, return_inverse=True)
    for seed in seeds:
        if task == "classification" and Y.shape[1] == 1:
            splitter, strata = StratifiedKFold(folds, shuffle=True, random_state=seed), Y[positions[first], 0]
        else:
            splitter, strata = KFold(folds, shuffle=True, random_state=seed), None
        for train, test in splitter.split(first, strata):
            yield seed, positions[np.isin(group, train)], positions[np.isin(group, test)]


def evaluate_feature_set(X, Y, task, heads, scaffold_parts, random_folds, groups, args) -> dict:
    """Every head and the best head of one feature set, on the scaffold split and in random CV;
    ``groups`` holds the scaffold and the molecule of each row, which their inner CVs keep whole."""
    train = np.concatenate([scaffold_parts["train"], scaffold_parts["valid"]])
    per_head = evaluate_heads(X, Y, train, scaffold_parts["test"], task, heads,
                              inner_cv(task, args.inner_folds), groups["scaffold"], args.n_jobs)
    chosen = best_head(task, per_head)
    scaffold = {
        "heads": {name: {k: v for k, v in r.items() if k != "pairs"} for name, r in per_head.items()},
        "best": {"head": chosen, "test": per_head[chosen]["test"],
                 "bootstrap_std": bootstrap_std(task, per_head[chosen]["pairs"], args.bootstrap),
                 # Kept in the cache for the claims' paired bootstrap, left out of the report.
                 "pairs": [[part.tolist() for part in pair] for pair in per_head[chosen]["pairs"]]},
    }
    fold_scores, best_scores, best_names = defaultdict(list), [], []
    for seed, train, test in random_folds:
        per_head = evaluate_heads(X, Y, train, test, task, heads,
                                  inner_cv(task, args.inner_folds, seed), groups["molecule"], args.n_jobs)
        for name, r in per_head.items():
            fold_scores[name].append(r["test"])
        chosen = best_head(task, per_head)
        best_scores.append(per_head[chosen]["test"])
        best_names.append(chosen)
    random_cv = {
        "heads": {name: {"folds": s, "mean": mean_std(s)[0], "std": mean_std(s)[1]}
                  for name, s in fold_scores.items()},
        "best": {"folds": best_scores, "heads": best_names,
                 "mean": mean_std(best_scores)[0], "std": mean_std(best_scores)[1]},
    }
    return {"scaffold": scaffold, "random_cv": random_cv}


def capped(rows: np.ndarray, n: int | None) -> np.ndarray:
    """At most ``n`` of ``rows``, the same ones every run, spread over a file that may be ordered
    (by label, by source) rather than its first ``n``."""
    if not n or n >= len(rows):
        return rows
    return np.sort(np.random.default_rng(0).choice(rows, n, replace=False))


def prepare(name: str, args) -> tuple:
    """SMILES, labels, task names, scaffolds and scaffold split of a dataset (or of its random
    subset); the split is written to ``args.splits_dir`` as CSV row indices."""
    dataset = DATASETS[name]
    smiles, Y, tasks = load_dataset(name)
    rows = capped(np.arange(len(smiles)), args.max_molecules)
    if len(rows) < len(smiles):
        smiles, Y = [smiles[i] for i in rows], Y[rows]
    scaffolds = murcko_scaffolds(smiles)
    parts = scaffold_split(scaffolds)
    split_file = args.splits_dir / f"{name}_scaffold.json"
    write_json(split_file, {
        "dataset": name, "file": dataset.file, "rows": len(rows),
        "method": "Murcko scaffolds of standardised molecules; largest groups to train first, equal sizes "
                  "ordered by the SHA-256 of the scaffold; 80/10/10",
        **{part: rows[positions].tolist() for part, positions in parts.items()},
        "unparsable": [int(rows[p]) for p, s in enumerate(scaffolds) if s is None],
    })
    return smiles, Y, tasks, scaffolds, parts, split_file


def run_dataset(name: str, models: dict, args) -> dict:
    dataset = DATASETS[name]
    start = time.perf_counter()
    smiles, Y, tasks, scaffolds, parts, split_file = prepare(name, args)
    # Only molecules with a scaffold are featurised: ECFPTransformer raises, even with
    # errors="nan", on a molecule whose standardised SMILES RDKit cannot read back.
    readable = np.array([s is not None for s in scaffolds])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        features, variants = featurise([s for s, ok in zip(smiles, readable, strict=True) if ok], models,
                                       args.feature_sets, args.cache)
    for message in dict.fromkeys(str(w.message) for w in caught):  # each distinct one once, not per call
        print(f"  warning: {message}")
    features, variants = ({k: _rows_at(X, readable) for k, X in d.items()} for d in (features, variants))
    featurised = {k: ~np.isnan(X).all(axis=1) for k, X in {**features, **variants}.items()}
    usable = readable & np.logical_and.reduce(list(featurised.values()))
    print(f"{dataset.label}: {usable.sum()} of {len(smiles)} molecules usable; features in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    used_parts = {part: np.array([p for p in positions if usable[p]], dtype=int)
                  for part, positions in parts.items()}
    groups = {"scaffold": scaffold_groups(scaffolds), "molecule": molecule_groups(smiles)}
    folds = list(random_cv_folds(np.flatnonzero(usable), Y, dataset.task, args.folds, args.seeds,
                                 groups["molecule"]))

    results = {"label": dataset.label, "task": dataset.task, "tasks": tasks,
               "metric": dataset.metric,
               "molecules": len(smiles), "used": int(usable.sum()),
               "dropped": {"total": int((~usable).sum()),
                           "unparsable": sum(s is None for s in scaffolds),
                           # The variants come from the same models: their rows are those of the
                           # model's main feature sets.
                           **{k: int((readable & ~featurised[k]).sum()) for k in features
                              if (readable & ~featurised[k]).any()}},
               "scaffold_parts": {part: len(p) for part, p in used_parts.items()},
               "outside_vocabulary": outside_vocabulary([smiles[p] for p in np.flatnonzero(usable)], models),
               "split_file": relative_link(split_file, ROOT),
               "features": {}, "variants": {}}
    # Everything a score depends on besides its feature matrix, for the cache key.
    setting = {"dataset": name, "labels": Y.tolist(), "usable": np.flatnonzero(usable).tolist(),
               "scaffold_parts": {part: p.tolist() for part, p in used_parts.items()},
               "folds": args.folds, "seeds": args.seeds, "inner_folds": args.inner_folds,
               "bootstrap": args.bootstrap, "quick": args.quick,
               "protocol": PROTOCOL_VERSION}
    for kind, matrices, linear_only in (("features", features, False), ("variants", variants, True)):
        for feature_name, X in matrices.items():
            if kind == "features" and feature_name not in args.feature_sets:
                continue  # computed only for its NaN rows
            tick = time.perf_counter()
            heads = make_heads(dataset.task, feature_name, args.quick, linear_only)
            key = {**setting, "features": feature_name, "linear_only": linear_only,
                   "X": hashlib.sha256(np.ascontiguousarray(X).tobytes()).hexdigest()}
            def evaluate(X=X, heads=heads):
                return evaluate_feature_set(X, Y, dataset.task, heads, used_parts, folds, groups, args)

            results[kind][feature_name] = args.cache.result(key, evaluate)
            best = results[kind][feature_name]
            print(f"  {feature_name}: scaffold {fmt(best['scaffold']['best']['test'])}, random CV "
                  f"{fmt(best['random_cv']['best']['mean'])} ({time.perf_counter() - tick:.0f} s)",
                  flush=True)
    return results


# -------------------------------------------------------------------------------------- summary
def claims_summary(datasets: dict) -> dict:
    """Win counts of each comparison in COMPARISONS, per split, over the core tasks run."""
    summary = {}
    for split in SPLITS:
        for a, b, relation, tests in COMPARISONS:
            per_task, p_better = {}, {}
            for name in (n for n in CORE if n in datasets):
                task, features = datasets[name]["task"], datasets[name]["features"]
                score_a, score_b = (_best_score(features[f], split) for f in (a, b))
                per_task[name] = (better(task, score_a, score_b) or
                                  (relation == "matches or beats" and score_a == score_b))
                pairs = [features[f]["scaffold"]["best"].get("pairs") for f in (a, b)]
                if split == "scaffold" and None not in pairs:
                    p_better[name] = paired_bootstrap(task, *pairs, n=PAIRED_RESAMPLES)
            wins = sum(per_task.values())
            summary[f"{split}: {a} {relation} {b}"] = {
                "split": split, "a": a, "b": b, "relation": relation, "tests": tests, "wins": wins,
                "of": len(per_task), "per_task": per_task, "p_better": p_better,
                # Stated over all five core tasks; with fewer it is not decided.
                "at_least_4_of_5": (wins >= 4) if len(per_task) == len(CORE) else None,
            }
    return summary


def rank_variants(datasets: dict) -> dict:
    """Mean rank (1 = best) of each informative-embedding recipe over every task, model and split,
    and over every task and model by the inner-CV score alone.

    Ranks, not raw scores, so that RMSE and ROC-AUC tasks weigh alike. The test-score ranking says
    which recipe did best; the inner-CV ranking chooses among them from the scaffold split's
    training part alone, without any test molecule, which is how a default should be chosen.
    """
    ranks, inner_ranks = defaultdict(list), defaultdict(list)
    for result in datasets.values():
        by_model = defaultdict(dict)
        for name, scores in result["variants"].items():
            model, recipe = name.split(" | ", 1)
            by_model[model][recipe] = scores
        sign = 1 if result["task"] == "regression" else -1  # rank 1 = lowest RMSE, highest AUC
        for recipes in by_model.values():
            for split in SPLITS:
                order = sorted(recipes, key=lambda r: sign * _best_score(recipes[r], split))
                for rank, recipe in enumerate(order, start=1):
                    ranks[recipe].append(rank)
            order = sorted(recipes, key=lambda r: sign * _inner_score(recipes[r]))
            for rank, recipe in enumerate(order, start=1):
                inner_ranks[recipe].append(rank)
    mean_rank = {recipe: float(np.mean(r)) for recipe, r in ranks.items()}
    inner_mean_rank = {recipe: float(np.mean(r)) for recipe, r in inner_ranks.items()}
    return {"mean_rank": mean_rank, "comparisons": len(next(iter(ranks.values()), [])),
            "best": min(mean_rank, key=mean_rank.get) if mean_rank else None,
            "inner_mean_rank": inner_mean_rank,
            "inner_comparisons": len(next(iter(inner_ranks.values()), [])),
            "inner_best": min(inner_mean_rank, key=inner_mean_rank.get) if inner_mean_rank else None,
            "default": recipe_name(*DEFAULT_RECIPE)}


def goal(claims: dict) -> dict:
    keys = [f"scaffold: {a} {relation} {b}" for a, b, relation, _ in COMPARISONS[:2]]
    verdicts = [claims[k]["at_least_4_of_5"] for k in keys]
    return {"comparisons": keys, "met": None if None in verdicts else all(verdicts)}


def _best_score(result: dict, split: str) -> float:
    best = result[split]["best"]
    return best["test"] if split == "scaffold" else best["mean"]


def _inner_score(result: dict) -> float:
    """The scaffold split's inner-CV score of its best head: computed on the training part only."""
    scaffold = result["scaffold"]
    return scaffold["heads"][scaffold["best"]["head"]]["inner"]


def _best_error(result: dict, split: str) -> float:
    best = result[split]["best"]
    return best["bootstrap_std"] if split == "scaffold" else best["std"]


def split_titles(config: dict) -> dict[str, str]:
    return {"scaffold": "scaffold split, test part",
            "random_cv": f"random {config['folds']}-fold CV x {len(config['seeds'])} seed(s)"}


def plot(report: dict, out: Path) -> list[Path]:
    plt = pyplot()
    if plt is None:
        return []
    datasets, paths = report["datasets"], []
    for split, title in split_titles(report["config"]).items():
        fig, axes = plt.subplots(1, len(datasets), figsize=(3.2 * len(datasets), 3.6), squeeze=False)
        for ax, result in zip(axes[0], datasets.values(), strict=True):
            names = list(result["features"])
            ax.bar(range(len(names)), [_best_score(result["features"][n], split) for n in names],
                   yerr=[_best_error(result["features"][n], split) for n in names], capsize=3,
                   color=[f"C{i}" for i in range(len(names))])
            ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
            arrow = "lower is better" if result["task"] == "regression" else "higher is better"
            ax.set_title(f"{result['label']}\n{result['metric']} ({arrow})", fontsize=9)
            if result["task"] == "classification":
                ax.set_ylim(0.0, 1.0)
                ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)  # chance level
        fig.suptitle(f"Best head per feature set: {title}", fontsize=10)
        fig.tight_layout()
        path = out / f"downstream_{split}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def markdown(report: dict, figures: list[Path], markdown_path: Path, command: str) -> str:
    datasets, config = report["datasets"], report["config"]
    lines = [
        "## Downstream property prediction", "",
        f"Written by `{command}`. Models: cMIM `{config['cmim_model']}`, MIM `{config['mim_model']}`"
        + (" (**quick mode**: tiny models, tiny subsets; the numbers mean nothing)."
           if config["quick"] else "."),
        "Scaffold split: test part, heads tuned by scaffold-grouped inner CV on train + valid, "
        "± bootstrap std over test molecules. Random CV: mean ± std over the test folds. RMSE: lower "
        "is better; ROC-AUC: higher is better. The best head is chosen by inner CV, and named in "
        "brackets (with how often it won, in random CV).", "",
        wall_time(report["timing"]), "",
    ]
    titles = split_titles(config)
    header = ["dataset", "metric", "used / molecules", *FEATURE_SETS]
    for split, title in titles.items():
        rows = []
        for result in datasets.values():
            cells = []
            for name in FEATURE_SETS:
                r = result["features"][name]
                cells.append(f"{plus_minus(_best_score(r, split), _best_error(r, split))} "
                             f"({_head_label(r, split)})")
            rows.append([result["label"], result["metric"], f"{result['used']} / {result['molecules']}",
                         *cells])
        lines += [f"### Best head, {title}", "", markdown_table(header, rows), ""]
    lines += ["### Every head", ""]
    rows = []
    for result in datasets.values():
        for head in result["features"][FEATURE_SETS[0]]["scaffold"]["heads"]:
            for split in SPLITS:
                cells = []
                for name in FEATURE_SETS:
                    r = result["features"][name][split]["heads"][head]
                    cells.append(fmt(r["test"]) if split == "scaffold" else plus_minus(r["mean"], r["std"]))
                rows.append([result["label"], head, split, *cells])
    lines += [markdown_table(["dataset", "head", "split", *FEATURE_SETS], rows), ""]

    lines += ["### Informative-embedding variants (linear head)", "",
              "Decoder layers (last / mean of all) x pooling over tokens (mean / mean and max) x with or "
              "without the latent mean in front (docs/method.md, Embeddings).", ""]
    variant_names = list(next(iter(datasets.values()))["variants"])
    for split, title in titles.items():
        rows = [[name.replace(" | ", ", ")] + [fmt(_best_score(result["variants"][name], split))
                                               for result in datasets.values()]
                for name in variant_names]
        lines += [f"{title}:", "", markdown_table(["variant", *[r["label"] for r in datasets.values()]],
                                                   rows), ""]
    ranking = report["variant_ranking"]
    rows = [[recipe.replace(" | ", ", ") + (" (default)" if recipe == ranking["default"] else ""),
             f"{rank:.2f}", f"{ranking['inner_mean_rank'][recipe]:.2f}"]
            for recipe, rank in sorted(ranking["mean_rank"].items(), key=lambda kv: kv[1])]
    lines += [f"Mean rank of each recipe (1 = best) over the {ranking['comparisons']} task x model x split "
              "comparisons above, and over the "
              f"{ranking['inner_comparisons']} task x model comparisons of the scaffold split's inner-CV "
              "scores, which come from its training part alone:", "",
              markdown_table(["variant", "mean rank (test scores)", "mean rank (inner CV, no test data)"],
                             rows), "",
              f"Best mean rank: **{ranking['best']}** on the test scores, **{ranking['inner_best']}** on "
              f"the inner-CV scores; the package's default is {ranking['default']}.", ""]

    lines += ["### Claims", "", "Best-head scores compared task by task over the core tasks.", ""]
    verdict = {True: "yes", False: "no", None: "undecided (needs all 5 core tasks)"}
    rows = [[c["tests"], c["split"], f"{c['a']} {c['relation']} {c['b']}", f"{c['wins']} / {c['of']}",
             ", ".join(datasets[n]["label"] for n, won in c["per_task"].items() if won) or "none",
             verdict[c["at_least_4_of_5"]],
             ", ".join(f"{datasets[n]['label']} {p:.2f}" for n, p in c.get("p_better", {}).items()
                       if p is not None) or "-"] for c in report["claims"].values()]
    lines += [markdown_table(["tests", "split", "comparison", "tasks won", "won on",
                              "on >= 4 of 5 core tasks", "A better in resamples"], rows), "",
              f"*A better in resamples*: on the scaffold split, the share of {PAIRED_RESAMPLES:,} paired "
              "bootstrap resamples of each test part on which A's predictions score better than B's "
              "(both scored on the same molecules). Near 0.5 the task's win or loss is within the "
              "test part's sampling; near 0 or 1 it holds.", "",
              "**Goal** (on the scaffold split, cMIM informative beats ECFP4 and matches or beats MIM "
              f"informative, each on at least 4 of the 5 core tasks): **{verdict[report['goal']['met']]}**.",
              ""]

    lines += ["### Molecules dropped, and tokens the models lack", "",
              "Dropped for every feature set alike when any of them cannot featurise a molecule. The last "
              "column counts the used molecules holding a token outside each model's vocabulary, read "
              "as <unk>.", ""]
    rows = [[r["label"], r["molecules"], r["dropped"]["total"],
             ", ".join(f"{k}: {v}" for k, v in r["dropped"].items() if k != "total") or "none",
             " / ".join(str(r["scaffold_parts"][p]) for p in ("train", "valid", "test")),
             ", ".join(f"{label}: {n} ({n / r['used']:.1%})" for label, n in r["outside_vocabulary"].items())]
            for r in datasets.values()]
    lines += [markdown_table(["dataset", "molecules", "dropped", "why", "scaffold train / valid / test",
                              "with <unk> tokens"], rows), ""]
    lines += [f"![{path.stem}]({relative_link(path, markdown_path)})" for path in figures]
    return "\n".join(lines)


def without_pairs(report: dict) -> dict:
    """``report`` without the test predictions that the cache keeps for the paired bootstrap."""
    copy = json.loads(json.dumps(report))
    for result in copy["datasets"].values():
        for scores in (*result["features"].values(), *result["variants"].values()):
            scores["scaffold"]["best"].pop("pairs", None)
    return copy


def wall_time(timing: dict) -> str:
    """What a run from an empty cache costs: each feature matrix and score keeps the time it took
    to compute, so a report assembled from the cache still states the full run's compute time."""
    total = timing["compute_seconds"]
    amount = f"{total / 3600:.1f} h" if total >= 3600 else f"{total / 60:.1f} min"
    text = (f"Wall time: featurising and evaluating everything above took {amount} of compute, "
            "timed as each result was computed; this run "
            f"took {timing['this_run_seconds']:.0f} s and read {timing['cached']} of "
            f"{timing['cached'] + timing['computed']} results from the cache.")
    if timing["untimed"]:
        text += f" {timing['untimed']} cached results have no recorded time and are not counted."
    return text


def plus_minus(value: float, error: float) -> str:
    return fmt(value) if not np.isfinite(error) else f"{fmt(value)} ± {fmt(error)}"


def _head_label(result: dict, split: str) -> str:
    best = result[split]["best"]
    if split == "scaffold":
        return best["head"]
    return head_counts(best["heads"])


def head_counts(heads: list[str]) -> str:
    """The heads chosen in the folds, with how often each was chosen when they differ."""
    counts = {h: heads.count(h) for h in dict.fromkeys(heads)}
    return ", ".join(f"{h} x{n}" if len(counts) > 1 else h for h, n in counts.items())


# ----------------------------------------------------------------------------------------- main
def train_quick_models(directory: Path) -> dict[str, str]:
    """Tiny cMIM (lambda=1) and MIM (lambda=0) models on bundled ESOL, for the --quick run."""
    smiles = load_esol()[0][:QUICK_TRAIN_MOLECULES]
    paths = {}
    for label, weight in (("cmim", 1.0), ("mim", 0.0)):
        model = CMIMTransformer(**QUICK_MODEL, contrastive_weight=weight, max_epochs=2, batch_size=32,
                                random_state=0).fit(smiles)
        paths[label] = str(model.save_pretrained(directory / f"{label}-quick"))
    return paths


def model_comparison_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser holding the options every benchmark comparing the two models shares:
    the cMIM and MIM models and the datasets (``finetune.py`` uses it too)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cmim-model", help="bundled model name or directory (lambda = 1)")
    parser.add_argument("--mim-model", help="bundled model name or directory (lambda = 0)")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), help="default: the 5 core tasks")
    return parser


def parse_args(argv):
    parser = model_comparison_parser(__doc__)
    parser.add_argument("--extras", action="store_true", help="add ClinTox and Tox21")
    parser.add_argument("--max-molecules", type=at_least(1), help="random subset per dataset")
    parser.add_argument("--folds", type=at_least(2), default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--inner-folds", type=at_least(2), default=3)
    parser.add_argument("--bootstrap", type=at_least(2), default=200,
                        help="resamples for scaffold error bars")
    parser.add_argument("--n-jobs", type=int, default=1, help="parallel grid-search fits")
    parser.add_argument("--feature-sets", nargs="+", choices=FEATURE_SETS, default=FEATURE_SETS,
                        help="evaluate only these (fills the cache; the report needs all of them)")
    parser.add_argument("--cache", type=Path, help="features and scores kept here, so a killed run "
                        "resumes (default runs/downstream-cache)")
    parser.add_argument("--no-cache", action="store_true", help="compute everything afresh")
    parser.add_argument("--out", type=Path, help="JSON and figures (default docs/benchmarks)")
    parser.add_argument("--markdown", type=Path, help=f"report to update (default {DOCS_MARKDOWN})")
    parser.add_argument("--splits-dir", type=Path, help=f"default {SPLITS_DIR}")
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke run: 2 datasets x 120 molecules, 2 folds, 1 seed, small grids")
    parser.add_argument("--splits-only", action="store_true",
                        help="only write the scaffold split files (of all datasets unless --datasets)")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets = args.datasets or ["esol", "bace"]
        args.max_molecules = args.max_molecules or 120
        args.folds, args.seeds, args.inner_folds, args.bootstrap = 2, [0], 2, 20
        args.out = args.out or ROOT / "runs" / "downstream-quick"
    elif args.splits_only:
        args.datasets = args.datasets or CORE + EXTRAS
    else:
        for label, option in (("cMIM", "cmim_model"), ("MIM", "mim_model")):
            if not getattr(args, option) and any(f.startswith(label + " ") for f in args.feature_sets):
                parser.error(f"--{option.replace('_', '-')} is required for the {label} feature sets "
                             "outside --quick and --splits-only")
    args.datasets = (args.datasets or CORE) + (EXTRAS if args.extras else [])
    set_output_paths(args, "downstream-cache")
    return args


def set_output_paths(args, cache_name: str) -> None:
    """Fill in where a run writes (``out``, ``splits_dir``, ``markdown``) and its ``cache``
    (``runs/<cache_name>``), unless given. A quick run's tiny subsets must never overwrite the
    committed splits or the docs, so it writes below its ``out`` only; nor may the split of any
    random subset (``--max-molecules``), which learning_curve and chemprop_peer would then read."""
    args.out = args.out or ROOT / "docs" / "benchmarks"
    subset = args.quick or args.max_molecules
    args.splits_dir = getattr(args, "splits_dir", None) or (args.out / "splits" if subset else SPLITS_DIR)
    args.markdown = args.markdown or (args.out / "benchmarks.md" if args.quick else DOCS_MARKDOWN)
    default_cache = args.out / "cache" if args.quick else ROOT / "runs" / cache_name
    args.cache = Cache(None if args.no_cache else args.cache or default_cache)


def main(argv=None) -> dict:
    start = time.perf_counter()
    args = parse_args(argv)
    # Ridge's smallest alphas meet collinear features (descriptors, embedding dimensions); the
    # inner CV picks the alpha, so the solver's conditioning notes are noise in the log.
    warnings.filterwarnings("ignore", category=LinAlgWarning)
    if args.splits_only:
        for name in args.datasets:
            print(f"{name}: {prepare(name, args)[-1]}")
        return {}
    args.out.mkdir(parents=True, exist_ok=True)
    command = command_line("benchmarks.evaluation.downstream", argv)
    model_paths = {"cmim": args.cmim_model, "mim": args.mim_model}
    if args.quick and not all(model_paths.values()):
        model_paths = train_quick_models(args.out / "models")
    models = {label: (load_model(model_paths[key], errors="nan"), model_fingerprint(model_paths[key]))
              for label, key in (("MIM", "mim"), ("cMIM", "cmim"))
              if any(f.startswith(label + " ") for f in args.feature_sets)}
    datasets = {name: run_dataset(name, models, args) for name in args.datasets}
    if args.feature_sets != FEATURE_SETS:
        print("partial run: its scores are cached; run with every feature set for the report")
        return {"datasets": datasets}
    report = {
        "config": {"cmim_model": model_paths["cmim"], "mim_model": model_paths["mim"],
                   "quick": args.quick, "datasets": args.datasets, "max_molecules": args.max_molecules,
                   "folds": args.folds, "seeds": args.seeds, "inner_folds": args.inner_folds,
                   "bootstrap": args.bootstrap, "command": command},
        "datasets": datasets,
        "claims": claims_summary(datasets),
    }
    report["goal"] = goal(report["claims"])
    report["variant_ranking"] = rank_variants(datasets)
    report["timing"] = {"this_run_seconds": time.perf_counter() - start,
                        "compute_seconds": args.cache.compute_seconds, "untimed": args.cache.untimed,
                        "cached": args.cache.hits, "computed": args.cache.misses}
    report = without_pairs(report)
    write_json(args.out / "downstream.json", report)
    figures = plot(report, args.out)
    update_markdown_section(args.markdown, "downstream", markdown(report, figures, args.markdown, command))
    for comparison, c in report["claims"].items():
        print(f"{comparison}: {c['wins']} / {c['of']}")
    print(f"goal met: {report['goal']['met']}")
    return report


if __name__ == "__main__":
    as_command(main)
