"""A corpus standardised and tokenised once, kept as arrays, and batched with numpy.

``cmim pretrain --prepared PATH`` reads its SMILES files once, standardising and tokenising every
training molecule (with ``--data-workers`` processes), and stores the token ids in ``PATH``
(.npz). Training then reads no file and runs no RDKit: batches are cut from the arrays. Later
runs and resumes with the same data settings load ``PATH`` instead of reading the files again.

This is for corpora that fit in memory (MOSES: 1.6 million molecules, an 84 MB file, 97 s to
prepare with two workers). On a CPU it took the standardising off the training step (about 5%
more molecules a second, docs/findings.md); on a GPU, whose steps outrun one core's RDKit, it
leaves the training process's one thread to queue the device's work. Larger corpora stream from
their files (:class:`~sklearn_cmim.training.streams.BatchStream`).

Read top-down: :class:`PreparedCorpus` (build, save, load), :class:`PreparedStream` (one
rank's endless, resumable sequence of full, length-bucketed batches), then :func:`prepare`, which
writes a corpus's file once, and :func:`prepared_path`, which names one file per corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from ..chem.batching import length_bucketed_batches
from ..chem.corpus import (
    SKIP_REASONS,
    Corpus,
    CorpusError,
    HoldOut,
    MoleculeEncoder,
)
from ..chem.workers import encode_records, start_data_workers
from .streams import StreamPosition

__all__ = ["PreparedCorpus", "PreparedStream", "prepare", "prepared_path"]


@dataclass
class PreparedCorpus:
    """Token ids of every usable training record of a corpus, and why the others were skipped.

    ``tokens`` holds the molecules' ids end to end; molecule ``i`` is
    ``tokens[offsets[i]:offsets[i + 1]]`` and came from record ``records[i]``. Skipped training
    records are listed in ``skipped_records`` with an index into
    :data:`~sklearn_cmim.chem.corpus.SKIP_REASONS`. ``settings`` says what the ids were made from:
    files, column, hold-out, standardiser, vocabulary, length limit.
    """

    tokens: np.ndarray
    offsets: np.ndarray
    records: np.ndarray
    skipped_records: np.ndarray
    skipped_reasons: np.ndarray
    settings: dict

    chunk_molecules = 65536  # molecules whose ids become one array while building

    @staticmethod
    def settings_of(corpus: Corpus, split: HoldOut, encoder: MoleculeEncoder) -> dict:
        """What a prepared file must have been made from to stand in for ``corpus``."""
        settings = {"inputs": [str(p.resolve()) for p in corpus.paths],
                    "sizes": [p.stat().st_size for p in corpus.paths], "column": corpus.column,
                    "holdout_every": split.every, "standardizer": encoder.standardizer.to_dict(),
                    "vocabulary": encoder.vocabulary.to_list(), "max_length": encoder.max_length}
        if encoder.exclude:  # files prepared without an exclusion stay valid for runs without one
            digest = hashlib.sha256("\n".join(sorted(encoder.exclude)).encode()).hexdigest()
            settings["excluded"] = f"{len(encoder.exclude)} molecules, sha256 {digest}"
        return settings

    @classmethod
    def build(cls, corpus: Corpus, split: HoldOut, encoder: MoleculeEncoder,
              workers: int = 0) -> PreparedCorpus:
        """Encode every training record of ``corpus`` (in ``workers`` processes; 0: this one)."""
        training = ((number, text) for number, text in corpus.records() if not split.is_validation(number))
        dtype = np.uint8 if len(encoder.vocabulary) <= 256 else np.uint16
        tokens, lengths, records, skipped_records, skipped_reasons = [], [], [], [], []
        ids = []  # of the molecules not yet in ``tokens``

        def flush():  # a list per molecule would cost ~400 bytes each: keep one array per chunk
            lengths.extend(map(len, ids))
            tokens.append(np.fromiter(chain.from_iterable(ids), dtype))
            ids.clear()

        executor = start_data_workers(encoder, workers) if workers else None
        try:
            # Larger chunks than a stream's: nothing trains meanwhile, so only throughput counts.
            for number, result in encode_records(training, encoder, executor, chunk_records=16384, ahead=2):
                if isinstance(result, str):
                    skipped_records.append(number)
                    skipped_reasons.append(SKIP_REASONS.index(result))
                    continue
                ids.append(result[0])
                records.append(number)
                if len(ids) == cls.chunk_molecules:
                    flush()
            flush()
        finally:
            if executor is not None:
                executor.shutdown(cancel_futures=True)
        if not records:
            skipped = Counter(SKIP_REASONS[code] for code in skipped_reasons)
            raise CorpusError(f"no usable training molecule in {', '.join(map(str, corpus.paths))} "
                              f"(skipped: {dict(skipped) or 'none'})")
        return cls(tokens=np.concatenate(tokens), offsets=np.concatenate([[0], np.cumsum(lengths)]),
                   records=np.asarray(records, np.int64),
                   skipped_records=np.asarray(skipped_records, np.int64),
                   skipped_reasons=np.asarray(skipped_reasons, np.int8),
                   settings=cls.settings_of(corpus, split, encoder))

    def save(self, path: Path) -> None:
        """Write to ``path`` atomically (a temporary file, then a rename)."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            np.savez(handle, tokens=self.tokens, offsets=self.offsets, records=self.records,
                     skipped_records=self.skipped_records, skipped_reasons=self.skipped_reasons,
                     settings=np.array(json.dumps(self.settings)))
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path, expected_settings: dict) -> PreparedCorpus:
        """Read ``path``; a file made from other data or settings, or an unreadable one, is an error."""
        not_prepared = CorpusError(f"{path} is not a prepared corpus (the .npz file --prepared writes); "
                                   "give --prepared a path of its own")
        with open(path, "rb") as handle:
            if handle.read(4) != b"PK\x03\x04":  # an .npz is a zip; this may be the user's own data
                raise not_prepared
        names = ("tokens", "offsets", "records", "skipped_records", "skipped_reasons")
        try:
            with np.load(path, allow_pickle=False) as arrays:
                # Another zip (a model's weights.pt, a checkpoint, the user's own .npz) is no damaged
                # prepared file, to be deleted as one.
                if not {*names, "settings"} <= set(arrays.files):
                    raise not_prepared
                fields = {name: arrays[name] for name in names}
                settings = json.loads(str(arrays["settings"]))
        except CorpusError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise CorpusError(f"cannot read the prepared corpus {path}: {error}; delete it to prepare "
                              "it again") from None
        differ = sorted(key for key in expected_settings.keys() | settings.keys()
                        if settings.get(key) != expected_settings.get(key))
        if differ:
            raise CorpusError(f"{path} was prepared from other data or settings (they differ in: "
                              f"{', '.join(differ)}); delete it, or give another --prepared path")
        return cls(**fields, settings=settings)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, molecule: int) -> np.ndarray:
        """The token ids of one molecule."""
        return self.tokens[self.offsets[molecule]:self.offsets[molecule + 1]]

    def skipped(self, split: HoldOut, rank: int, world_size: int) -> Counter:
        """Skip counts of the training records that ``rank`` owns, by reason."""
        owned = split.owner(self.skipped_records, world_size) == rank
        return Counter({SKIP_REASONS[code]: int(n) for code, n in
                        zip(*np.unique(self.skipped_reasons[owned], return_counts=True), strict=True)})


class PreparedStream(StreamPosition):
    """One rank's molecules of a :class:`PreparedCorpus` as an endless sequence of full batches.

    Each epoch shuffles the rank's molecules, groups them by length
    (:func:`~sklearn_cmim.chem.batching.length_bucketed_batches`) and hands out every full batch; the
    few molecules of an epoch's last, partial batch wait for the next epoch's shuffle. Every batch
    holds exactly ``batch_size`` molecules, so the ranks of a DDP job always run in step.

    A batch is a list of id arrays, as :func:`~sklearn_cmim.chem.batching.pad` takes it. Its
    ``start`` is the epoch and the generator state at the epoch's start.
    """

    prepared = True
    wrong_kind_error = ("the checkpoint was written by a run that streamed its files; resume it "
                        "without --prepared")

    def __init__(self, prepared: PreparedCorpus, split: HoldOut, encoder: MoleculeEncoder, batch_size: int,
                 seed: int, rank: int = 0, world_size: int = 1, pool_batches: int = 50):
        self.corpus = prepared
        self.batch_size, self.pool_batches = batch_size, pool_batches
        self.mine = np.flatnonzero(split.owner(prepared.records, world_size) == rank)
        if len(self.mine) < batch_size:
            raise CorpusError(f"rank {rank} of {world_size} has {len(self.mine)} usable training molecules, "
                              f"fewer than a batch of {batch_size}")
        encoder.skipped = prepared.skipped(split, rank, world_size)
        self.rng = np.random.default_rng([seed, rank])
        super().__init__({"epoch": 0, "rng": self.rng.bit_generator.state}, encoder)

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        tokens, offsets = self.corpus.tokens, self.corpus.offsets
        lengths = np.diff(offsets)[self.mine]
        while True:
            self.rng.bit_generator.state = self.start["rng"]
            batches = length_bucketed_batches(lengths, self.batch_size, self.rng, self.pool_batches)
            batches = [batch for batch in batches if len(batch) == self.batch_size]
            for number in range(self.taken, len(batches)):
                self.taken = number + 1
                molecules = self.mine[batches[number]]
                yield [tokens[offsets[i]:offsets[i + 1]] for i in molecules.tolist()]
            self.start = {"epoch": self.epoch + 1, "rng": self.rng.bit_generator.state}
            self.taken = 0


def prepare(corpus: Corpus, split: HoldOut, encoder: MoleculeEncoder, workers: int, path: Path) -> None:
    """Write the corpus's ``--prepared`` arrays to ``path``, unless an earlier run did."""
    if path.exists():
        return
    start = time.perf_counter()
    prepared = PreparedCorpus.build(corpus, split, encoder, workers)
    prepared.save(path)
    print(f"prepared {len(prepared):,} training molecules in {time.perf_counter() - start:.0f} s: {path}",
          flush=True)


def prepared_path(path: Path, index: int, n_corpora: int) -> Path:
    """``--prepared`` itself for one corpus; for several, one file each: ``mix.npz`` -> ``mix.0.npz``, ...

    >>> prepared_path(Path("mix.npz"), 1, 2).name
    'mix.1.npz'
    """
    return path if n_corpora == 1 else path.with_name(f"{path.stem}.{index}{path.suffix}")
