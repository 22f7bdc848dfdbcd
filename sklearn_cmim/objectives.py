"""What :func:`~sklearn_cmim.optimize_molecules` maximises: a named property, a fitted estimator or
a callable, turned into one function from a list of SMILES to one finite score per molecule."""

from __future__ import annotations

from numbers import Real

import numpy as np

from .chem.properties import penalized_logp, qed

__all__ = ["OBJECTIVES", "as_objective", "positive_column", "scores"]

# Objectives known by name, in the optimiser and in ``cmim optimize --objective``.
OBJECTIVES = {"qed": qed, "plogp": penalized_logp}


def as_objective(objective, positive_class=None):
    """A function from a list of SMILES to scores, from a name, an estimator or a callable."""
    from sklearn.base import is_classifier

    if hasattr(objective, "predict_proba") and is_classifier(objective):
        # predict's labels give no gradient of improvement: maximise one class's probability.
        column = positive_column(getattr(objective, "classes_", None), positive_class)
        return lambda smiles: objective.predict_proba(smiles)[:, column]
    if positive_class is not None:
        raise ValueError("positive_class applies to a classifier objective (with predict_proba) only")
    if isinstance(objective, str):
        if objective.lower() not in OBJECTIVES:
            names = ", ".join(map(repr, OBJECTIVES))
            raise ValueError(f"unknown objective {objective!r}: give one of {names}, a fitted estimator, "
                             "or a callable from a list of SMILES to scores")
        return OBJECTIVES[objective.lower()]
    if hasattr(objective, "predict"):
        return objective.predict
    if callable(objective):
        return objective
    raise TypeError(f"objective must be one of {', '.join(map(repr, OBJECTIVES))}, a fitted estimator "
                    f"(its predict is maximised) or a callable from a list of SMILES to scores, "
                    f"got {type(objective).__name__}")


def positive_column(classes, positive_class) -> int:
    """The column of ``predict_proba`` to maximise: ``positive_class``'s, else the second of two
    classes when they read as negative then positive (0/1, False/True, -1/1)."""
    if classes is None:
        if positive_class is not None:
            raise ValueError("the classifier has no classes_ to find positive_class in")
        return 1
    labels = list(classes)
    if positive_class is not None:
        matches = [i for i, label in enumerate(labels) if _same_label(label, positive_class)]
        if not matches:
            raise ValueError(f"positive_class {positive_class!r} is not one of the classifier's classes "
                             f"{[str(label) for label in labels]}")
        return matches[0]
    if all(isinstance(label, (bool, np.bool_, Real)) for label in labels) \
            and [float(label) for label in labels] in ([0, 1], [-1, 1]):
        return 1
    raise ValueError(f"say which of the classifier's classes {[str(label) for label in labels]} to "
                     "maximise the probability of: positive_class (cmim optimize --positive-class)")


def _same_label(label, given) -> bool:
    """Whether ``given`` names the class ``label``; the command line gives a string, so "1" finds
    the class 1 or 1.0, and "true" the class True."""
    if str(label).lower() == str(given).lower():
        return True
    try:
        return not isinstance(label, str) and float(label) == float(given)
    except (TypeError, ValueError):
        return False


def scores(objective, smiles: list[str], owners: list[str], finite: bool = True) -> np.ndarray:
    """``objective(smiles)`` as one float per molecule; ``owners[i]`` says whose molecule
    ``smiles[i]`` is, for the error messages. A score that is not finite is an error, or, without
    ``finite``, NaN: a decoded candidate the objective cannot score, which the search passes over."""
    try:
        values = objective(list(smiles))
    except Exception as error:  # the user's code: say where it failed, keep its traceback chained
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"the objective failed on a list of {len(smiles)} SMILES ({owners[0]} among "
                         f"them): {type(error).__name__}: {first_line} (an estimator must read SMILES "
                         "itself, as a pipeline that starts with a featuriser does)") from error
    try:
        out = np.array(values, dtype=float)  # a copy: NaN is written into it
    except (TypeError, ValueError):
        raise TypeError(f"the objective must return numbers, got {type(values).__name__}") from None
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.shape != (len(smiles),):
        raise ValueError(f"the objective returned scores of shape {out.shape} for {len(smiles)} "
                         f"molecules ({owners[0]} among them); it must return one number per molecule")
    bad = np.flatnonzero(~np.isfinite(out))
    if not finite:
        out[bad] = np.nan  # +inf too: a garbage molecule must not become the best
    elif len(bad):
        i = bad[0]
        raise ValueError(f"the objective gave {out[i]} for {smiles[i]!r} ({owners[i]}); it must "
                         "give every valid molecule a finite score")
    return out
