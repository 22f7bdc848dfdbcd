"""Parameter constraints shared by the estimators (scikit-learn's, with booleans refused)."""

from __future__ import annotations

from sklearn.utils._param_validation import Interval

__all__ = ["Range"]


class Range(Interval):
    """scikit-learn's ``Interval``, refusing ``True`` and ``False``: Python counts them as the
    integers 1 and 0, so ``d_model=True`` would otherwise build a model one unit wide."""

    def is_satisfied_by(self, val) -> bool:
        return not isinstance(val, bool) and super().is_satisfied_by(val)
