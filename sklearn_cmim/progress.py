"""A minimal progress bar on stderr (no dependency), drawn only on a terminal or when forced."""

from __future__ import annotations

import sys
import time

__all__ = ["progress"]


def progress(items, total: int | None = None, label: str = "", enabled: bool | None = None):
    """Yield ``items`` while drawing ``label [#####.....] i/n  elapsed`` on stderr."""
    total = len(items) if total is None else total
    enabled = sys.stderr.isatty() if enabled is None else enabled
    start = time.perf_counter()
    for done, item in enumerate(items, 1):
        yield item
        if enabled:
            filled = int(30 * done / max(total, 1))
            sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} "
                             f"{time.perf_counter() - start:.0f}s")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()
