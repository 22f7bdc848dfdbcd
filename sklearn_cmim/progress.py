"""A minimal progress bar on stderr (no dependency), drawn only on a terminal or when forced."""

from __future__ import annotations

import sys
from time import perf_counter

__all__ = ["SHOW_AFTER", "end_bar", "progress"]

# Seconds of work before the commands that stream files draw a bar: a quicker run prints none.
SHOW_AFTER = 2.0
# Whether the line stderr is on holds a bar not yet finished, which a message must not follow.
_bar_open = False


def end_bar() -> None:
    """End the line of a bar left unfinished (a run that failed or was stopped), so that the
    message printed next starts a line of its own."""
    global _bar_open
    if _bar_open:
        _bar_open = False
        sys.stderr.write("\n")
        sys.stderr.flush()


def progress(items, total: int | None = None, label: str = "", enabled: bool | None = None,
             after: float = 0.0, size=None):
    """Yield ``items`` while drawing ``label [#####.....] done/total elapsed`` on stderr.

    The bar moves once an item has been dealt with, that is when the next one is asked for.

    Parameters
    ----------
    items : iterable
    total : int, optional
        The work in all; by default ``len(items)``.
    label : str, default=""
    enabled : bool, optional
        Whether to draw; ``None`` draws only when stderr is a terminal.
    after : float, default=0.0
        Seconds of work before the bar is first drawn, so that a quick run prints nothing.
    size : callable, optional
        The work an item stands for, e.g. ``len`` to count the molecules of chunks; 1 by default.

    Examples
    --------
    >>> import contextlib, io
    >>> stderr = io.StringIO()
    >>> with contextlib.redirect_stderr(stderr):
    ...     chunks = list(progress([["CCO", "CCN"], ["CCC"]], total=3, label="molecules",
    ...                            enabled=True, size=len))
    >>> for drawn in stderr.getvalue().split("\\r")[1:]:
    ...     print(repr(drawn))
    'molecules [####################..........] 2/3 0s'
    'molecules [##############################] 3/3 0s\\n'
    """
    global _bar_open
    total = len(items) if total is None else total
    enabled = sys.stderr.isatty() if enabled is None else enabled
    start = perf_counter()
    done = 0
    for item in items:
        yield item
        done += 1 if size is None else size(item)
        elapsed = perf_counter() - start
        if enabled and elapsed >= after:
            filled = int(30 * done / max(total, 1))
            sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} "
                             f"{elapsed:.0f}s")
            _bar_open = done < total
            if not _bar_open:
                sys.stderr.write("\n")
            sys.stderr.flush()
