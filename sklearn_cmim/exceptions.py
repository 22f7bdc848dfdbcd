"""Warnings the package emits, for callers to filter by class, and how a stop signal unwinds a
command; kept free of torch and RDKit."""

from __future__ import annotations

import signal
import sys
from collections import Counter

__all__ = ["STOP_SIGNALS", "Terminated", "UnknownTokenWarning", "user_stacklevel"]

# SIGTERM is how batch schedulers stop a job; SIGHUP comes when the terminal closes (an ssh
# session that drops). Windows has no SIGHUP.
STOP_SIGNALS = [signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])]


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, so that it unwinds like Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the user's own line, past this package and the
    scikit-learn and joblib frames (a set_output wrapper, a grid search, an unpickling) between
    them. Call it in the ``warnings.warn`` call itself."""
    frame, level = sys._getframe(2), 2  # stacklevel 2: the caller of the function that warns
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in (
            "sklearn_cmim", "sklearn", "joblib"):
        frame, level = frame.f_back, level + 1
    return level


class UnknownTokenWarning(UserWarning):
    """Tokens missing from the model's vocabulary were read as ``<unk>``.

    Emitted once per call (``fit``, ``transform``, ``fit_transform``, ``score``, ``sample``)
    that meets such tokens; the ``cmim`` commands report them once per run.

    Parameters
    ----------
    counts : mapping of str to int
        How often each unknown token occurred; kept as the ``counts`` attribute (a ``Counter``).

    Examples
    --------
    The bundled models' vocabulary has no tellurium:

    >>> import warnings
    >>> from sklearn_cmim import CMIMTransformer, UnknownTokenWarning
    >>> cmim = CMIMTransformer.from_pretrained("cmim-broad")
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     X = cmim.transform(["C[Te]C", "CC[Te]CC"])
    >>> [(w.category.__name__, w.message.counts) for w in caught]
    [('UnknownTokenWarning', Counter({'[Te]': 2}))]
    >>> str(caught[0].message)
    "2 tokens are not in the model's vocabulary and were read as <unk>: '[Te]' x2"

    To silence it: ``warnings.filterwarnings("ignore", category=UnknownTokenWarning)``.
    """

    def __init__(self, counts):
        self.counts = Counter(counts)
        listed = ", ".join(f"{token!r} x{n}" for token, n in self.counts.most_common(10))
        super().__init__(f"{sum(self.counts.values())} tokens are not in the model's vocabulary "
                         f"and were read as <unk>: {listed}")

    def __reduce__(self):  # pickled (e.g. raised as an error in a joblib worker) with its counts
        return type(self), (self.counts,)
