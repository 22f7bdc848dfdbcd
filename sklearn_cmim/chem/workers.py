"""Data worker processes: corpus records standardised and tokenised beside the training process.

``cmim pretrain --data-workers N`` (and ``--prepared``, which encodes a corpus once) hand records
to :func:`start_data_workers`' processes through :func:`encode_records`, which gives them back
in order. The workers leave Ctrl-C, SIGTERM and SIGHUP to the training process, which stops
them when it ends: a signal to the whole process group (a terminal's Ctrl-C, a batch scheduler)
must not kill a worker while the training process finishes its step and writes a checkpoint.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice

from ..exceptions import STOP_SIGNALS
from .corpus import CorpusError, MoleculeEncoder

__all__ = ["encode_records", "start_data_workers"]

_worker_encoder: MoleculeEncoder | None = None  # each data worker's own copy


def _start_worker(encoder: MoleculeEncoder) -> None:
    global _worker_encoder
    _worker_encoder = encoder
    for signum in (signal.SIGINT, *STOP_SIGNALS):
        signal.signal(signum, signal.SIG_IGN)


def _encode_in_worker(smiles: str):
    return _worker_encoder.encode(smiles)


def start_data_workers(encoder: MoleculeEncoder, workers: int) -> ProcessPoolExecutor:
    """``workers`` processes, each with its own copy of ``encoder``, for :func:`encode_records`."""
    # spawn: a forked copy of a process running torch's thread pools can deadlock.
    return ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), _start_worker, (encoder,))


def encode_records(records: Iterator[tuple[int, str]], encoder: MoleculeEncoder,
                   workers: ProcessPoolExecutor | None = None, chunk_records: int = 2048,
                   ahead: int = 1) -> Iterator[tuple[int, tuple | str]]:
    """``(number, encoder.encode(text))`` for each ``(number, text)`` of ``records``, in order.

    With ``workers`` (from :func:`start_data_workers`) the records are encoded there,
    ``chunk_records`` at a time, with up to ``ahead`` chunks in flight beyond the one being
    handed out. A worker that dies (RDKit crashing on a molecule, say) is a :class:`CorpusError`
    naming the records it was reading, not a hang.
    """
    if workers is None:
        yield from ((number, encoder.encode(text)) for number, text in records)
        return
    in_flight = deque()
    while chunk := list(islice(records, chunk_records)):
        # 32 tasks a chunk: enough to share among the workers, few enough to cost little to hand out.
        job = workers.map(_encode_in_worker, [text for _, text in chunk], chunksize=max(1, len(chunk) // 32))
        in_flight.append(([number for number, _ in chunk], job))
        if len(in_flight) > ahead:
            yield from _collect(*in_flight.popleft())
    while in_flight:
        yield from _collect(*in_flight.popleft())


def _collect(numbers: list[int], results: Iterator) -> Iterator[tuple[int, tuple | str]]:
    try:
        yield from zip(numbers, list(results), strict=True)
    except BrokenProcessPool:
        raise CorpusError(f"a data worker died while reading records {numbers[0]} to {numbers[-1]}; "
                          "--data-workers 0 reads them in the training process, where the failing "
                          "molecule shows") from None
