"""The batches pretraining trains on: one corpus's, or several corpora's mixed by weight.

:class:`BatchStream` is one rank's endless, resumable sequence of full, length-bucketed batches
of a :class:`~sklearn_cmim.chem.corpus.Corpus`; :class:`MixedStream` draws each batch from one of
several streams, by weight. Both resume exactly from their ``state_dict()``, and
:class:`StreamPosition` is what a corpus's stream, read from its file or ``--prepared``, keeps of
its position.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

import numpy as np

from ..chem.batching import length_bucketed_batches
from ..chem.corpus import Corpus, CorpusError, HoldOut, MoleculeEncoder
from ..chem.workers import encode_records, start_data_workers

__all__ = ["BatchStream", "MixedStream", "StreamPosition"]


class StreamPosition:
    """Where one corpus's endless stream of batches stands: ``start``, the state at the start of
    the pass it is in (a dict with that pass's ``epoch``), and ``taken``, the batches of the pass
    handed out since; a checkpoint keeps both. A stream of a ``--prepared`` corpus and one that
    reads the corpus's file pass over it differently, so each refuses the other's state."""

    prepared = False  # stored in the state, so that the other kind can tell it is not its own
    wrong_kind_error = ("the checkpoint was written by a run that trained from a --prepared corpus; "
                        "resume it with the same --prepared path")

    def __init__(self, start: dict, encoder: MoleculeEncoder):
        self.start, self.taken, self.encoder = start, 0, encoder

    def close(self) -> None:
        """Stop what runs ahead of the training, if anything does."""

    def state_dict(self) -> dict:
        return {"prepared": self.prepared, **self.start, "taken": self.taken}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mixed"):  # a run over several corpora, resumed with one input file
            raise CorpusError(f"the checkpoint was written by a run that read {len(state['streams'])} "
                              "corpus(es); resume it with the same input files (now 1)")
        if bool(state.get("prepared")) != self.prepared:
            raise CorpusError(self.wrong_kind_error)
        self.start = {key: state[key] for key in self.start}
        self.taken = state["taken"]

    @property
    def epoch(self) -> int:
        return self.start["epoch"]

    @property
    def skipped(self) -> Counter:
        return self.encoder.skipped


class BatchStream(StreamPosition):
    """One rank's training molecules as an endless sequence of full batches, resumable exactly.

    Molecules are read ``pool_batches * batch_size`` at a time (a *pool*, wrapping round the end
    of the corpus into the next epoch), grouped by length with
    :func:`~sklearn_cmim.chem.batching.length_bucketed_batches` and handed out batch by batch.
    Every batch holds exactly ``batch_size`` molecules, so all ranks of a DDP job contribute
    equal shares to the gathered contrastive negatives and always run the same number of steps.

    Its ``start`` is where the current pool started (epoch, record number, generator state, skip
    counts); a stream resumed from a :meth:`state_dict` rebuilds that pool and continues with the
    same next batch as an uninterrupted run.

    With ``data_workers`` > 0, that many processes standardise and tokenise the molecules of the
    next pool while the batches of this one train (RDKit holds the GIL, so threads would not run
    in parallel). The batches are the same as without; call :meth:`close` to stop them.
    """

    chunk_records = 2048  # records handed to the data workers at a time

    def __init__(self, corpus: Corpus, split: HoldOut, encoder: MoleculeEncoder, batch_size: int,
                 seed: int, rank: int = 0, world_size: int = 1, pool_batches: int = 50,
                 data_workers: int = 0):
        self.rng = np.random.default_rng([seed, rank])
        super().__init__({"epoch": 0, "record": 0, "rng": self.rng.bit_generator.state, "skipped": {}},
                         encoder)
        self.corpus, self.split = corpus, split
        self.batch_size, self.pool_batches = batch_size, pool_batches
        self.rank, self.world_size = rank, world_size
        self.data_workers, self._workers = data_workers, None

    def close(self) -> None:
        """Stop the data workers, if any."""
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)
            self._workers = None

    def __iter__(self) -> Iterator[list[list[int]]]:
        # One open reader runs on from pool to pool; only a resume skips records to get to its start.
        epoch = self.epoch
        records = self._encoded(self.corpus.records(self.start["record"]))
        while True:
            # Rewinding the generator and the counts makes a pool rebuilt after a resume
            # identical to the one the interrupted run was using.
            self.rng.bit_generator.state = self.start["rng"]
            self.encoder.skipped = Counter(self.start["skipped"])
            pool, epoch, records, next_record = self._read_pool(epoch, records)
            batches = length_bucketed_batches([len(ids) for ids in pool], self.batch_size, self.rng,
                                              pool=self.pool_batches)
            for number in range(self.taken, len(batches)):
                self.taken = number + 1
                yield [pool[i] for i in batches[number]]
            self.start = {"epoch": epoch, "record": next_record, "rng": self.rng.bit_generator.state,
                          "skipped": dict(self.encoder.skipped)}
            self.taken = 0

    def _encoded(self, records: Iterator[tuple[int, str]]) -> Iterator[tuple[int, tuple | str]]:
        """``(number, encoder.encode(text))`` of this rank's training records, in order."""
        split, rank, world_size = self.split, self.rank, self.world_size
        mine = ((number, text) for number, text in records
                if not split.is_validation(number) and split.owner(number, world_size) == rank)
        if self.data_workers and self._workers is None:
            self._workers = start_data_workers(self.encoder, self.data_workers)
        # Enough chunks in flight to fill the next pool while the batches of this one train.
        ahead = math.ceil(self.pool_batches * self.batch_size / self.chunk_records) + 1
        yield from encode_records(mine, self.encoder, self._workers, self.chunk_records, ahead)

    def _read_pool(self, epoch: int, records: Iterator[tuple[int, tuple | str]]):
        """Fill a pool from encoded ``records``, wrapping round into new epochs.

        Returns the pool, the epoch and reader it ends in, and the number of the next record.
        """
        pool, wanted = [], self.pool_batches * self.batch_size
        whole_pass = False  # whether this reader started at the corpus's first record
        while True:
            found = 0
            for number, result in records:
                encoded = self.encoder.count(result, tally=epoch == 0)  # each bad record counts once
                if encoded is None:
                    continue
                pool.append(encoded[0])
                found += 1
                if len(pool) == wanted:
                    return pool, epoch, records, number + 1
            if whole_pass and found < self.batch_size:  # a batch would repeat molecules (or never fill)
                skipped = dict(self.encoder.skipped) or "none"
                raise CorpusError(f"rank {self.rank} of {self.world_size} has {found} usable training "
                                  f"molecule(s) in {', '.join(map(str, self.corpus.paths))}, fewer than a "
                                  f"batch of {self.batch_size} (skipped: {skipped})")
            epoch, records, whole_pass = epoch + 1, self._encoded(self.corpus.records()), True


class MixedStream:
    """Batches from several corpora: each batch is the next of one corpus's stream, drawn by weight.

    Each corpus keeps its own stream (:class:`BatchStream` or
    :class:`~sklearn_cmim.training.prepared.PreparedStream`), with its own order, epochs and skip counts,
    so a small corpus given a large weight is simply seen more often. A batch holds molecules of
    one corpus, of similar lengths, as a single corpus's do. The draw is seeded, and the state is
    the generator's and every stream's, so a resumed run goes on with the same batches.

    Examples
    --------
    >>> class Letters:  # a stand-in stream with no state of its own
    ...     def __init__(self, letter): self.letter = letter
    ...     def __iter__(self):
    ...         while True: yield [self.letter]
    ...     def state_dict(self): return {}
    ...     def load_state_dict(self, state): pass
    >>> mixed = MixedStream([Letters("a"), Letters("b")], weights=[3, 1], seed=0)
    >>> batches = iter(mixed)
    >>> "".join(next(batches)[0] for _ in range(12))
    'aaabaaaaaaba'
    """

    def __init__(self, streams: list, weights, seed: int, rank: int = 0):
        weights = np.asarray(weights, dtype=float)
        if len(weights) != len(streams) or (weights < 0).any() or weights.sum() <= 0:
            raise CorpusError(f"expected one non-negative weight per corpus ({len(streams)}), not all zero; "
                              f"got {weights.tolist()}")
        self.streams, self.weights = streams, weights / weights.sum()
        self.rng = np.random.default_rng([seed, rank, len(streams)])

    def close(self) -> None:
        for stream in self.streams:
            stream.close()

    def state_dict(self) -> dict:
        return {"mixed": True, "rng": self.rng.bit_generator.state,
                "streams": [stream.state_dict() for stream in self.streams]}

    def load_state_dict(self, state: dict) -> None:
        if len(state.get("streams", ())) != len(self.streams):
            read = len(state.get("streams", [state]))
            raise CorpusError(f"the checkpoint was written by a run that read {read} corpus(es); resume "
                              f"it with the same input files (now {len(self.streams)})")
        self.rng.bit_generator.state = state["rng"]
        for stream, part in zip(self.streams, state["streams"], strict=True):
            stream.load_state_dict(part)

    @property
    def epoch(self) -> list[int]:
        """Each corpus's epoch."""
        return [stream.epoch for stream in self.streams]

    @property
    def skipped(self) -> Counter:
        return sum((Counter(stream.skipped) for stream in self.streams), Counter())

    def __iter__(self) -> Iterator[list]:
        batches = [iter(stream) for stream in self.streams]
        while True:
            yield next(batches[self.rng.choice(len(batches), p=self.weights)])
