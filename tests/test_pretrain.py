"""The pretraining entry point: streamed corpora, checkpoints, resume, DDP and the CLI."""

from __future__ import annotations

import copy
import errno
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sklearn_cmim import CMIMTransformer, cli
from sklearn_cmim.chem.corpus import Corpus, CorpusError, HoldOut, MoleculeEncoder
from sklearn_cmim.chem.standardize import Standardizer
from sklearn_cmim.chem.tokenizer import Vocabulary
from sklearn_cmim.cli import pretrain
from sklearn_cmim.datasets import DATA_DIR, load_esol
from sklearn_cmim.exceptions import Terminated
from sklearn_cmim.nn.device import HeapTrimmer
from sklearn_cmim.nn.losses import contrastive_loss
from sklearn_cmim.persistence import load_pretrained
from sklearn_cmim.training import checkpoint, pretraining
from sklearn_cmim.training import fit as training
from sklearn_cmim.training.checkpoint import CheckpointError, Checkpoints, CheckpointWarning, load_checkpoint
from sklearn_cmim.training.distributed import Context, LatentGather
from sklearn_cmim.training.schedule import TrainingClock
from sklearn_cmim.training.stopping import StopRequest, raise_for
from sklearn_cmim.training.streams import BatchStream
from tests.conftest import TINY as TINY_ESTIMATOR

DELANEY = str(DATA_DIR / "delaney.csv")
TINY = ["--d-model", "16", "--n-heads", "2", "--d-ff", "32", "--n-encoder-layers", "1",
        "--n-decoder-layers", "1", "--n-latents", "1", "--latent-dim", "8", "--max-length", "48",
        "--precision", "fp32",
        "--device", "cpu", "--mim-warmup-steps", "0", "--learning-rate", "3e-3", "--holdout-every", "10",
        "--validation-size", "8", "--log-every", "5", "--batch-size", "8"]
# One thread per process: the test machines have two cores, and a 2-process job must not oversubscribe.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ALCOHOLS = ["C" * n + "O" for n in range(1, 31)]  # 30 distinct molecules, one per record


def run_cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout, check=False, **kwargs)


def checkpoint_steps(directory) -> list[int]:
    return [int(p.name[5:13]) for p in Checkpoints(directory).paths()]


def metadata(directory) -> dict:
    return json.loads((directory / "config.json").read_text())["metadata"]


# ----------------------------------------------------------------------------- corpus (e)
def test_readers_stream_smi_csv_and_csv_gz_by_column(tmp_path):
    smi = tmp_path / "a.smi"
    smi.write_text("CCO ethanol\n\nc1ccccc1\tbenzene\n")
    csv_file = tmp_path / "b.csv"
    csv_file.write_text("id,SMILES,other\n1,CCN,CCCl\n2,\"CC(=O)O\",C\n")
    gz = tmp_path / "c.csv.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write("name,smi2\nx,CCOC\ny,C1CC1\n")

    assert list(Corpus([smi]).records()) == [(0, "CCO"), (1, ""), (2, "c1ccccc1")]
    assert [s for _, s in Corpus([csv_file]).records()] == ["CCN", "CC(=O)O"]  # found by name
    assert [s for _, s in Corpus([csv_file], column="other").records()] == ["CCCl", "C"]
    assert [s for _, s in Corpus([gz], column="smi2").records()] == ["CCOC", "C1CC1"]
    # Record numbers run on across files, and reading can start at any record.
    assert list(Corpus([smi, gz], column="smi2").records(start=2)) == [(2, "c1ccccc1"), (3, "CCOC"),
                                                                      (4, "C1CC1")]
    with pytest.raises(CorpusError, match="no column 'nope'"):
        Corpus([csv_file], column="nope")
    with pytest.raises(CorpusError, match="unknown format"):
        Corpus([tmp_path / "x.parquet"])
    with pytest.raises(CorpusError, match="cannot read"):
        Corpus([tmp_path / "missing.smi"])


def test_bad_and_long_molecules_are_skipped_and_counted():
    encoder = MoleculeEncoder(Standardizer(), Vocabulary.build(["CCO"]), max_length=6)
    assert encoder("OCC")[1] == "CCO"
    assert encoder("not a molecule") is None
    assert encoder("CCCCCO") is None  # 8 tokens with <bos>/<eos>
    assert encoder("CCN") is None  # N is not in the vocabulary
    assert encoder.skipped == {"invalid": 1, "too_long": 1, "unknown_token": 1}


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_sharding_covers_every_training_record_once_and_no_validation_record(tmp_path, world_size):
    path = tmp_path / "alcohols.smi"
    path.write_text("\n".join(ALCOHOLS) + "\n")
    corpus, split = Corpus([path]), HoldOut(every=5)
    vocabulary = Vocabulary.build(ALCOHOLS)
    validation = {ALCOHOLS[i] for i in range(0, 30, 5)}
    per_rank = 24 // world_size
    seen = []
    for rank in range(world_size):
        encoder = MoleculeEncoder(Standardizer(), vocabulary, max_length=40)
        # One pool of batches of one molecule is exactly this rank's share of one epoch.
        stream = BatchStream(corpus, split, encoder, batch_size=1, seed=0, rank=rank,
                             world_size=world_size, pool_batches=per_rank)
        batches = iter(stream)
        seen.extend(vocabulary.decode(next(batches)[0]) for _ in range(per_rank))
        assert stream.epoch == 0
    assert len(seen) == 24
    assert set(seen) == set(ALCOHOLS) - validation


def take(stream_batches, n):
    return [[list(ids) for ids in next(stream_batches)] for _ in range(n)]


def make_stream(path, data_workers=0):
    vocabulary = Vocabulary.build(ALCOHOLS)
    encoder = MoleculeEncoder(Standardizer(), vocabulary, max_length=40)
    stream = BatchStream(Corpus([path]), HoldOut(every=7), encoder, batch_size=4, seed=3, pool_batches=2,
                         data_workers=data_workers)
    stream.chunk_records = 5  # many chunks in flight across pools and epochs
    return stream


def test_data_workers_give_the_same_batches_counts_and_positions(tmp_path):
    path = tmp_path / "alcohols.smi"
    path.write_text("\n".join(ALCOHOLS) + "\nnot-a-smiles\nCCN\n")
    runs = []
    for workers in (0, 2):
        stream = make_stream(path, data_workers=workers)
        try:
            batches = iter(stream)
            first = take(batches, 9)
            state = copy.deepcopy(stream.state_dict())
            runs.append((first, state, take(batches, 12), dict(stream.encoder.skipped)))
            resumed = make_stream(path, data_workers=workers)
            resumed.load_state_dict(state)
            try:
                assert take(iter(resumed), 12) == runs[-1][2]
            finally:
                resumed.close()
        finally:
            stream.close()
    assert runs[0] == runs[1]
    # Each bad record counts once, however many epochs read it.
    assert stream.epoch >= 2 and runs[0][3] == {"invalid": 1, "unknown_token": 1}


def test_data_position_restores_the_same_batches(tmp_path):
    path = tmp_path / "alcohols.smi"
    path.write_text("\n".join(ALCOHOLS) + "\nnot-a-smiles\n")
    stream = make_stream(path)
    batches = iter(stream)
    take(batches, 9)  # mid-pool, in the second epoch, after the bad record was met once
    state = copy.deepcopy(stream.state_dict())
    assert (state["epoch"], state["taken"], state["skipped"]) == (1, 1, {"invalid": 1})
    expected = take(batches, 12)  # crosses pool and epoch boundaries
    assert stream.epoch >= 2
    # The position travels inside checkpoints, which are read with weights_only=True.
    torch.save(state, tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)

    resumed = make_stream(path)
    resumed.load_state_dict(state)
    assert take(iter(resumed), 12) == expected
    assert resumed.encoder.skipped == stream.encoder.skipped  # skip counts are not counted twice
    assert take(iter(make_stream(path)), 12) != expected  # the position, not the seed, did it


def test_stream_reads_the_corpus_once_per_epoch_and_fails_clearly_without_molecules(tmp_path, monkeypatch):
    path = tmp_path / "alcohols.smi"
    path.write_text("\n".join(ALCOHOLS) + "\n")
    stream = make_stream(path)
    opened = []
    records = Corpus.records
    monkeypatch.setattr(Corpus, "records", lambda self, start=0: opened.append(start) or records(self, start))
    batches = iter(stream)
    take(batches, 12)  # 6 pools over 2 epochs of 25 training molecules
    assert opened == [0, 0]  # never re-read from the start to find a pool's first record

    path.write_text("not-a-smiles\nnor-this\n" * 3)
    with pytest.raises(CorpusError, match=r"rank 0 of 1 has 0 usable training molecule.*'invalid': 5}"):
        next(iter(make_stream(path)))
    # Fewer molecules than a batch: every batch would repeat them, so it is refused as --prepared does.
    path.write_text("\n".join(ALCOHOLS[:4]) + "\n")  # record 0 is held out: 3 left, batches of 4
    with pytest.raises(CorpusError, match=r"has 3 usable training molecule\(s\) in .*fewer than a batch of 4"
                       ):
        next(iter(make_stream(path)))


# ------------------------------------------------------------------------ checkpoints (c, d)
def test_corrupt_newest_checkpoint_warns_and_previous_is_used(tmp_path):
    checkpoints = Checkpoints(tmp_path, keep=3)
    for step in (1, 2, 3):
        checkpoints.save({key: step for key in ("step", "model", "optimizer", "scheduler", "ranks",
                                                "config", "vocabulary", "standardizer")}, step)
    newest = tmp_path / "step-00000003.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as by a crash mid-copy
    with pytest.warns(CheckpointWarning, match=r"step-00000003\.pt.*falling back to step-00000002\.pt"):
        path, state = checkpoints.load_latest()
    assert path.name == "step-00000002.pt" and state["step"] == 2
    assert (tmp_path / "step-00000003.pt.corrupt").exists()
    for path in checkpoints.paths():
        path.write_bytes(b"not a checkpoint")
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointError, match="none of the checkpoints"):
        checkpoints.load_latest()


def test_a_checkpoint_cut_short_is_damaged_not_a_disk_error(tmp_path):
    # torch reads a zip cut short this far (a partial copy) as OSError "Invalid argument".
    checkpoints = Checkpoints(tmp_path, keep=3)
    for step in (1, 2):
        checkpoints.save({**{key: step for key in ("step", "model", "optimizer", "scheduler", "ranks",
                                                   "config", "vocabulary", "standardizer")},
                          "weights": torch.zeros(100_000)}, step)
    newest = tmp_path / "step-00000002.pt"
    newest.write_bytes(newest.read_bytes()[:5000])
    with pytest.warns(CheckpointWarning, match=r"step-00000002\.pt is unreadable: it is truncated"):
        path, state = checkpoints.load_latest()
    assert path.name == "step-00000001.pt" and state["step"] == 1
    assert [p.name for p in checkpoints.damaged()] == ["step-00000002.pt.corrupt"]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoints = Checkpoints(tmp_path, keep=3)
    checkpoints.save({"step": 1}, 1)

    def disk_full(obj, handle):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match=r"No space left.*earlier checkpoints are untouched"):
        checkpoints.save({"step": 2}, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000001.pt"]  # no partial file either
    assert torch.load(tmp_path / "step-00000001.pt", weights_only=True) == {"step": 1}


def test_resume_after_corrupt_checkpoint_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    common = [DELANEY, "--output", str(out), *TINY, "--checkpoint-every-steps", "3"]
    assert pretrain.main([*common, "--max-steps", "6"]) == 0
    assert checkpoint_steps(out / "checkpoints") == [3, 6]
    newest = out / "checkpoints" / "step-00000006.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    capsys.readouterr()
    with pytest.warns(CheckpointWarning, match="step-00000006.pt is unreadable"):
        assert pretrain.main([*common, "--max-steps", "8", "--resume"]) == 0
    assert re.search(r"resumed from \S*step-00000003\.pt at step 3 \(max steps 6, now 8\)\n",
                     capsys.readouterr().out)
    assert metadata(out)["pretraining"]["steps"] == 8
    # Under torchrun, as under cmim, the fallback is one warning line.
    newest = out / "checkpoints" / "step-00000008.pt"
    newest.write_bytes(b"")
    resumed = run_cli("-m", "sklearn_cmim.cli.pretrain", *common, "--max-steps", "9", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.startswith("cmim pretrain: warning: checkpoint ")
    assert resumed.stderr.count("\n") == 1
    # Without --resume an existing run is never overwritten: a finished one holds its model...
    with pytest.raises(SystemExit) as exit_:
        pretrain.main([*common, "--max-steps", "9"])
    assert exit_.value.code == 2 and "already holds a model" in capsys.readouterr().err
    # --overwrite replaces that model, but never the checkpoints that could extend its run.
    assert pretrain.main([*common, "--max-steps", "9", "--overwrite"]) == 2
    assert "never its run's checkpoints" in capsys.readouterr().err and (out / "config.json").exists()
    # ... and an unfinished one its checkpoints.
    (out / "config.json").unlink()
    assert pretrain.main([*common, "--max-steps", "9"]) == 2
    assert "pass --resume" in capsys.readouterr().err


def test_a_disk_error_on_the_newest_checkpoint_stops_the_search_and_renames_nothing(tmp_path, monkeypatch):
    checkpoints = Checkpoints(tmp_path, keep=3)
    for step in (1, 2):
        checkpoints.save({key: step for key in ("step", "model", "optimizer", "scheduler", "ranks",
                                                "config", "vocabulary", "standardizer")}, step)
    real_open = open

    def failing_open(path, *args, **kwargs):
        if Path(path).name == "step-00000002.pt":
            raise OSError(errno.EIO, "Input/output error")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "open", failing_open, raising=False)
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*step-00000002\.pt: Input/output"):
        checkpoints.load_latest()
    assert checkpoint_steps(tmp_path) == [1, 2] and not checkpoints.damaged()  # a good file is kept


def test_resume_with_nothing_to_resume_replaces_no_model(tmp_path, capsys):
    out = tmp_path / "run"
    common = [DELANEY, "--output", str(out), *TINY, "--max-steps", "2", "--resume"]
    assert pretrain.main(common) == 0  # nothing to resume yet: a new run
    weights = (out / "weights.pt").read_bytes()
    shutil.rmtree(out / "checkpoints")
    capsys.readouterr()
    assert pretrain.main(common) == 2
    assert "holds a model and no checkpoint to resume: pass --overwrite" in capsys.readouterr().err
    assert (out / "weights.pt").read_bytes() == weights
    # Checkpoints found damaged are not buried under a new run either, at the first try or later.
    assert pretrain.main([*common, "--checkpoint-every-steps", "1", "--overwrite"]) == 0
    for path in Checkpoints(out / "checkpoints").paths():
        path.write_bytes(b"PK\x03\x04 truncated")
    (out / "config.json").unlink()
    with pytest.warns(CheckpointWarning):
        assert pretrain.main(common) == 2
    assert "none of the checkpoints" in capsys.readouterr().err
    assert pretrain.main(common) == 2
    assert "holds only damaged checkpoints (step-00000002.pt.corrupt and older)" in capsys.readouterr().err
    assert not (out / "config.json").exists()


def test_a_resumed_run_trains_at_the_learning_rate_it_is_given(tmp_path, capsys):
    common = [DELANEY, *TINY, "--max-steps", "10", "--checkpoint-every-steps", "5", "--warmup-steps", "2"]
    assert pretrain.main([*common, "--output", str(tmp_path / "a")]) == 0
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "a" / "checkpoints" / "step-00000005.pt", tmp_path / "b" / "checkpoints")
    capsys.readouterr()
    assert pretrain.main([*common, "--output", str(tmp_path / "b"), "--resume", "--learning-rate", "1e-3",
                          "--weight-decay", "0.5"]) == 0
    resumed = "at step 5 (learning rate 0.003, now 0.001; weight decay 0.001, now 0.5)"
    assert resumed in capsys.readouterr().out
    rates = {name: {r["step"]: r["lr"] for r in metadata(tmp_path / name)["training_log"]} for name in "ab"}
    assert rates["b"][5] == rates["a"][5] and rates["b"][10] == pytest.approx(rates["a"][10] / 3)
    groups = load_checkpoint(tmp_path / "b" / "checkpoints" / "step-00000010.pt")["optimizer"]["param_groups"]
    assert [group["weight_decay"] for group in groups] == [0.5, 0.0]  # biases and norms never decay
    assert metadata(tmp_path / "b")["pretraining"]["arguments"]["learning_rate"] == 1e-3


@pytest.mark.parametrize(("checked_on", "message", "checkpoints"), [
    # A CPU checks every step on the host and stops at the bad step itself.
    ("host", "step 7: non-finite loss", [4]),
    # CUDA leaves the check to the device, and asks at the next log line (every 5 steps here).
    ("device", "a step from 6 to 10 had a non-finite loss or gradient", [4, 8]),
])
def test_a_diverging_step_changes_no_weight_and_stops_the_run(tmp_path, capsys, monkeypatch,
                                                              checked_on, message, checkpoints):
    real_loss = training.total_loss

    def nan_at_step_seven(*args, **kwargs):
        losses = real_loss(*args, **kwargs)
        if kwargs["step"] == 6:  # zero-based: the 7th step
            losses["total"] = losses["total"] * float("nan")
        return losses

    monkeypatch.setattr(training, "total_loss", nan_at_step_seven)
    if checked_on == "device":
        monkeypatch.setattr(training.StepSkipper, "for_device", classmethod(lambda cls, device: cls(device)))
    out = tmp_path / "run"
    status = pretrain.main([DELANEY, "--output", str(out), *TINY, "--max-steps", "20",
                            "--checkpoint-every-steps", "4"])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and message in err
    assert checkpoint_steps(out / "checkpoints") == checkpoints
    for step in checkpoints:  # step 7 changed no weight, so even a checkpoint after it is finite
        state = load_checkpoint(out / "checkpoints" / f"step-{step:08d}.pt")
        assert all(torch.isfinite(value).all() for value in state["model"].values())
    assert not (out / "config.json").exists()  # a diverged run does not pass for a finished model


class StandardizerThatKillsItsProcess(Standardizer):
    def __call__(self, molecule):
        if molecule == "CCCCCO":  # stands for a molecule that crashes RDKit
            os._exit(1)
        return super().__call__(molecule)


class CountingCorpus(Corpus):
    """A corpus that counts the records handed out, to see how far ahead of training it is read."""

    read = 0

    def records(self, start=0):
        for record in super().records(start):
            self.read += 1
            yield record


def test_data_workers_encode_the_next_pool_while_this_one_trains(tmp_path):
    path = tmp_path / "many.smi"
    path.write_text("\n".join(ALCOHOLS * 20) + "\n")  # 600 records, one epoch
    encoder = MoleculeEncoder(Standardizer(), Vocabulary.build(ALCOHOLS), max_length=40)
    for workers, least, most in ((0, 10 * 4, 50), (1, 2 * 10 * 4, 600)):
        corpus = CountingCorpus([path])
        stream = BatchStream(corpus, HoldOut(every=7), encoder, batch_size=4, seed=3, pool_batches=10,
                             data_workers=workers)
        stream.chunk_records = 8
        try:
            next(iter(stream))  # the first pool of 10 batches is read and its first batch handed out
            assert least <= corpus.read <= most, (workers, corpus.read)
        finally:
            stream.close()


def test_a_dead_data_worker_is_a_clear_error_not_a_hang(tmp_path):
    path = tmp_path / "alcohols.smi"
    path.write_text("\n".join(ALCOHOLS) + "\n")
    encoder = MoleculeEncoder(StandardizerThatKillsItsProcess(), Vocabulary.build(ALCOHOLS), max_length=40)
    stream = BatchStream(Corpus([path]), HoldOut(every=7), encoder, batch_size=4, seed=3, data_workers=1)
    try:
        with pytest.raises(CorpusError, match=r"a data worker died while reading records 1 to 29; "
                                              r"--data-workers 0"):
            next(iter(stream))
    finally:
        stream.close()


def test_pretraining_with_data_workers_trains_the_same_model(tmp_path):
    weights = []
    for workers in ("0", "2"):
        out = tmp_path / f"workers-{workers}"
        assert pretrain.main([DELANEY, "--output", str(out), *TINY, "--max-steps", "4",
                              "--data-workers", workers]) == 0
        weights.append(load_pretrained(out).model.state_dict())
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=0)


def test_the_written_model_carries_a_latent_prior_fitted_to_the_validation_molecules(tmp_path):
    out = tmp_path / "model"
    assert pretrain.main([DELANEY, "--output", str(out), *TINY, "--max-steps", "2"]) == 0
    model = CMIMTransformer.from_pretrained(out, embedding="latent", errors="nan")
    assert model.latent_prior_.n_molecules == 8  # --validation-size
    # The first 8 held-out records (--holdout-every 10) that fit in --max-length.
    latent = model.transform([s for i, s in enumerate(load_esol()[0]) if i % 10 == 0])
    held_out = latent[np.isfinite(latent).all(axis=1)][:8]
    np.testing.assert_allclose(model.latent_prior_.mean, held_out.mean(axis=0), rtol=1e-4, atol=1e-5)


def test_time_based_checkpoints_are_taken_at_logging_steps(tmp_path):
    out = tmp_path / "run"
    assert pretrain.main([DELANEY, "--output", str(out), *TINY, "--max-steps", "5", "--log-every", "2",
                          "--checkpoint-every-steps", "1000", "--checkpoint-every-minutes", "1e-9"]) == 0
    assert checkpoint_steps(out / "checkpoints") == [2, 4, 5]  # 5: the last step always is


def test_max_minutes_stops_the_run_by_the_clock_with_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert pretrain.main([DELANEY, "--output", str(out), *TINY, "--max-steps", "1000000",
                          "--checkpoint-every-steps", "1000000", "--max-minutes", "0.02"]) == 0
    [step] = checkpoint_steps(out / "checkpoints")  # the last step's: none came due before
    state = load_checkpoint(out / "checkpoints" / f"step-{step:08d}.pt")
    assert 0 < step < 1_000_000 and state["training_seconds"] >= 0.02 * 60
    meta = metadata(out)
    assert meta["pretraining"]["steps"] == step and meta["pretraining"]["arguments"]["max_minutes"] == 0.02
    assert meta["training_log"][-1]["step"] == step and meta["training_log"][-1]["minutes"] >= 0.02


def test_cpu_training_hands_freed_memory_back_after_its_steps(tmp_path, monkeypatch):
    trimmed = []

    class Recording(HeapTrimmer):
        def __call__(self):
            trimmed.append(self.trim is not None)

    monkeypatch.setattr(pretraining, "HeapTrimmer", Recording)
    monkeypatch.setattr(training, "HeapTrimmer", Recording)
    assert pretrain.main([DELANEY, "--output", str(tmp_path / "run"), *TINY, "--max-steps", "3"]) == 0
    assert trimmed == [True] * 3
    CMIMTransformer(**{**TINY_ESTIMATOR, "max_epochs": 1, "batch_size": 16}).fit(ALCOHOLS)
    assert trimmed == [True] * 5  # and after fit's two batches of the 30 alcohols


def test_a_resumed_run_counts_the_minutes_before_its_checkpoint(tmp_path, monkeypatch):
    # A clock on which every step takes one second, so that the budget is known in steps.
    seconds = [0.0]
    real_step = pretraining.train_step

    def one_second_step(*args, **kwargs):
        seconds[0] += 1.0
        return real_step(*args, **kwargs)

    monkeypatch.setattr(pretraining, "train_step", one_second_step)
    monkeypatch.setattr(pretraining, "TrainingClock",
                        lambda budget: TrainingClock(budget, now=lambda: seconds[0]))
    out = tmp_path / "run"
    common = [DELANEY, "--output", str(out), *TINY, "--max-steps", "1000", "--checkpoint-every-steps", "1000"]
    assert pretrain.main([*common, "--max-minutes", "0.1"]) == 0  # 6 seconds
    assert checkpoint_steps(out / "checkpoints") == [6]
    assert pretrain.main([*common, "--max-minutes", "0.2", "--resume"]) == 0  # 6 more, not 12
    assert checkpoint_steps(out / "checkpoints") == [6, 12]
    assert load_checkpoint(out / "checkpoints" / "step-00000012.pt")["training_seconds"] == 12
    assert [record["minutes"] for record in metadata(out)["training_log"]] == [5 / 60, 0.1, 10 / 60, 0.2]


def test_vocabulary_can_come_from_an_existing_model(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert pretrain.main([DELANEY, "--output", str(first), *TINY, "--max-steps", "1"]) == 0
    alcohols = tmp_path / "alcohols.smi"
    alcohols.write_text("\n".join(ALCOHOLS) + "\n")
    assert pretrain.main([str(alcohols), "--output", str(second), *TINY, "--max-steps", "1",
                          "--vocab-from", str(first)]) == 0
    vocabulary = json.loads((second / "vocab.json").read_text())
    assert vocabulary == json.loads((first / "vocab.json").read_text())
    assert len(vocabulary) > len(Vocabulary.build(ALCOHOLS))  # not learned from the alcohols


def test_unwritable_output_is_a_clear_error_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    status = pretrain.main([DELANEY, "--output", str(blocker / "run"), *TINY, "--max-steps", "2"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.match(rf"cmim pretrain: error: cannot write to {re.escape(str(blocker))}", err)


@pytest.mark.parametrize(("argv", "message"), [
    (["missing.smi"], "cannot read missing.smi"),
    ([DELANEY, "--batch-size", "0"], "--batch-size: must be a positive integer"),
    ([DELANEY, "--column", "nope"], "has no column 'nope'"),
    ([DELANEY, "--d-model", "10", "--n-heads", "4"], "multiple of --n-heads"),
    ([DELANEY, "--warmup-steps", "100", "--max-steps", "10"], "--warmup-steps (100) must be below"),
    ([DELANEY, "--vocab-from", "no-such-model"], "--vocab-from: 'no-such-model' is neither"),
])
def test_user_errors_are_one_line_without_traceback(tmp_path, capsys, argv, message):
    try:
        status = cli.main(["pretrain", *argv, "--output", str(tmp_path / "run")])
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and message in err and err.startswith("cmim pretrain: error:")


@pytest.mark.parametrize(("lines", "message"), [
    # One molecule is record 0, which validation holds out: nothing is left to train on.
    (["CCO"], "the corpora hold no training record: record 0 and every 10th after it are held out"),
    (["CCO", "C1CC", "not-a-molecule"], "no valid molecule among the 2 training records read"),
])
def test_a_corpus_with_nothing_to_train_on_says_why(tmp_path, capsys, lines, message):
    corpus = tmp_path / "tiny.smi"
    corpus.write_text("\n".join(lines) + "\n")
    assert cli.main(["pretrain", str(corpus), *TINY, "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_cli_dispatches_and_documents_pretrain(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["pretrain", "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--contrastive-weight", "--n-latents", "--resume", "--checkpoint-every-minutes", "--column"):
        assert flag in help_text
    # validation_sets takes --validation-size molecules from every corpus, not in all.
    assert "held-out molecules of each corpus scored at each validation" in " ".join(help_text.split())
    with pytest.raises(SystemExit) as exit_:
        cli.main(["no-such-command"])
    assert exit_.value.code == 2


# ------------------------------------------------------------------------------ resume (f, b)
@pytest.mark.slow
def test_resumed_run_matches_the_uninterrupted_run_exactly(tmp_path):
    common = [DELANEY, *TINY, "--max-steps", "8", "--checkpoint-every-steps", "4"]
    assert pretrain.main([*common, "--output", str(tmp_path / "a")]) == 0
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "a" / "checkpoints" / "step-00000004.pt", tmp_path / "b" / "checkpoints")
    assert pretrain.main([*common, "--output", str(tmp_path / "b"), "--resume"]) == 0
    # Same batches, dropout masks and latent noise after the resume: bit-identical weights.
    a, b = (load_pretrained(tmp_path / name).model.state_dict() for name in "ab")
    assert all(torch.equal(a[key], b[key]) for key in a)
    ranks_a = load_checkpoint(tmp_path / "a" / "checkpoints" / "step-00000008.pt")["ranks"]
    ranks_b = load_checkpoint(tmp_path / "b" / "checkpoints" / "step-00000008.pt")["ranks"]
    assert ranks_a[0]["data"] == ranks_b[0]["data"]


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    argv = ["-m", "sklearn_cmim.cli.pretrain", DELANEY, "--output", str(out), *TINY, "--max-steps", "400",
            "--checkpoint-every-steps", "10", "--validation-every", "1000", "--log-every", "50"]
    process = subprocess.Popen([sys.executable, *argv], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if checkpoint_steps(out / "checkpoints"):
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read()
    assert not (out / "config.json").exists()  # killed mid-training
    last = checkpoint_steps(out / "checkpoints")[-1]
    assert 10 <= last < 400

    resumed = run_cli(*argv, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {out / 'checkpoints' / f'step-{last:08d}.pt'} at step {last}\n" in resumed.stdout
    assert metadata(out)["pretraining"]["steps"] == 400
    assert checkpoint_steps(out / "checkpoints")[-1] == 400


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "status", "said", "workers"), [(signal.SIGTERM, 143, "terminated", 0),
                                                                   (signal.SIGINT, 130, "interrupted", 1)])
def test_a_stop_signal_writes_a_checkpoint_first_and_the_run_resumes_from_it(tmp_path, signum, status, said,
                                                                             workers):
    # A batch scheduler's SIGTERM, or Ctrl-C (to the whole process group, data workers included):
    # the work since the last checkpoint (up to 30 minutes by default) was lost.
    out = tmp_path / "run"
    argv = ["-m", "sklearn_cmim.cli.pretrain", DELANEY, "--output", str(out), *TINY, "--max-steps", "100000",
            "--checkpoint-every-steps", "100000", "--log-every", "5", "--data-workers", str(workers)]
    process = subprocess.Popen([sys.executable, *argv], env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in process.stdout:  # training has begun: no checkpoint is due for 100,000 steps
            if line.startswith("step 5/"):
                break
        os.killpg(process.pid, signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == status, stderr
    assert stderr.endswith(f"cmim pretrain: {said}\n") and "Traceback" not in stderr
    step = int(stdout.split(f"stopped by {signal.Signals(signum).name} after step ")[1].split(";")[0])
    assert checkpoint_steps(out / "checkpoints") == [step] and step >= 5
    assert not (out / "config.json").exists()  # stopped, not finished

    resumed = run_cli(*argv, "--max-steps", str(step + 2), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {step} (max steps 100000, now {step + 2})" in resumed.stdout
    assert metadata(out)["pretraining"]["steps"] == step + 2


def test_a_second_stop_signal_stops_at_once_and_the_handlers_come_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stop = StopRequest()
    with stop.watching():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # the handler runs between bytecodes: it has by now
        assert stop.signum == signal.SIGTERM  # noted, not raised
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert {s: signal.getsignal(s) for s in before} == before
    with pytest.raises(KeyboardInterrupt):
        raise_for(signal.SIGINT)


# ---------------------------------------------------------------------------------- DDP (a)
@pytest.mark.slow
def test_two_process_gloo_job_gathers_global_negatives_and_learns(tmp_path):
    out = tmp_path / "ddp"
    job = run_cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                  "-m", "sklearn_cmim.cli.pretrain", DELANEY, "--output", str(out), *TINY,
                  "--max-steps", "30",
                  "--validation-every", "15", "--checkpoint-every-steps", "15", timeout=240)
    assert job.returncode == 0, job.stderr
    meta = metadata(out)
    log = meta["training_log"]
    # Each molecule is contrasted with every other molecule of both ranks' batches of 8.
    assert [record["negatives"] for record in log] == [2 * 8 - 1] * len(log)
    assert "15 negatives/molecule" in job.stdout
    assert job.stdout.count("saved the model") == 1  # rank 0 alone logs and writes
    assert log[-1]["total"] < log[0]["total"]
    curve = meta["learning_curve"]
    assert [point["molecules_seen"] for point in curve] == [15 * 16, 30 * 16]
    assert curve[-1]["rec"] < curve[0]["rec"]
    state = load_checkpoint(out / "checkpoints" / "step-00000030.pt")
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert state["ranks"][0]["data"] != state["ranks"][1]["data"]  # each rank kept its own position

    smiles, _ = load_esol()
    cmim = CMIMTransformer(pretrained=str(out), max_epochs=0, errors="nan").fit(smiles[:50])
    assert cmim.transform(smiles[:10]).shape == (10, 8 + 2 * 16)  # mu, then mean and max pooling
    # A user error found by rank 0 alone stops the job with its one line, no other rank's traceback.
    (out / "config.json").unlink()
    job = run_cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                  "-m", "sklearn_cmim.cli.pretrain", DELANEY, "--output", str(out), *TINY, timeout=240)
    assert job.returncode != 0
    assert "[rank 0] cmim pretrain: error: " in job.stderr and "already holds checkpoints" in job.stderr
    assert "[rank1]" not in job.stderr and "Connection closed" not in job.stderr



def _workers(marker: str) -> dict[int, int]:
    """The torchrun workers whose command line holds ``marker``: pid by rank."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        ranks = [int(v[5:]) for v in environ if v.startswith(b"RANK=")]
        if marker.encode() in cmdline and ranks:
            found[ranks[0]] = int(entry.name)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process in /proc")
def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step_between_log_steps(tmp_path):
    # Log steps are out of reach: the ranks must agree without them, and soon.
    out = tmp_path / "ddp-stop"
    argv = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "sklearn_cmim.cli.pretrain", DELANEY, "--output", str(out), *TINY, "--max-steps", "100000",
            "--log-every", "100000", "--validation-every", "100000", "--checkpoint-every-steps", "100000"]
    job = subprocess.Popen([sys.executable, *argv], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)
    try:
        for line in job.stdout:  # rank 0 has built the model: training is about to start
            if "parameters | vocabulary" in line:
                break
        time.sleep(3)
        os.kill(_workers(str(out))[1], signal.SIGTERM)
        stdout, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            for pid in _workers(str(out)).values():  # torchrun's workers have a session of their own
                os.kill(pid, signal.SIGKILL)
    step = int(stdout.split("stopped by SIGTERM after step ")[1].split(";")[0])
    assert checkpoint_steps(out / "checkpoints") == [step] and 0 < step < 100000
    state = load_checkpoint(out / "checkpoints" / f"step-{step:08d}.pt")
    assert state["step"] == step and len(state["ranks"]) == 2  # both ranks wrote their part of it
    assert "[rank 0] cmim pretrain: terminated" in stderr and "[rank 1] cmim pretrain: terminated" in stderr


def _vote(rank, world_size, directory):
    from sklearn_cmim.training.stopping import _Vote

    dist.init_process_group("gloo", init_method=f"file://{directory}/rendezvous", rank=rank,
                            world_size=world_size)
    vote = _Vote()
    # Rank 1 alone is signalled before its fourth step (call 3), and the signal stays noted.
    answers = [vote(signal.SIGTERM if rank == 1 and call >= 3 else None) for call in range(6)]
    answers.append(vote.close())
    torch.save(answers, f"{directory}/answers{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_the_ranks_learn_of_a_signal_one_step_late_and_all_at_the_same_step(tmp_path):
    mp.spawn(_vote, args=(2, str(tmp_path)), nprocs=2)
    expected = [None] * 4 + [signal.SIGTERM] * 3
    assert [torch.load(tmp_path / f"answers{rank}.pt") for rank in (0, 1)] == [expected, expected]


def _contrast_across_ranks(rank, world_size, directory):
    dist.init_process_group("gloo", init_method=f"file://{directory}/rendezvous", rank=rank,
                            world_size=world_size)
    codes = torch.randn(6, 1, 4, generator=torch.Generator().manual_seed(0))  # the global batch
    local = codes[3 * rank:3 * rank + 3].clone().requires_grad_()
    contrastive_loss(local, 0.1, *LatentGather(Context(rank, world_size))(local)).backward()
    torch.save(local.grad, f"{directory}/grad{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_negatives_give_the_global_batch_loss_and_gradient(tmp_path):
    mp.spawn(_contrast_across_ranks, args=(2, str(tmp_path)), nprocs=2)
    codes = torch.randn(6, 1, 4, generator=torch.Generator().manual_seed(0)).requires_grad_()
    contrastive_loss(codes, 0.1).backward()
    # DDP averages the ranks' gradients, so each rank's share is world_size x the global gradient.
    ranks = torch.cat([torch.load(tmp_path / f"grad{rank}.pt") for rank in (0, 1)])
    torch.testing.assert_close(ranks / 2, codes.grad)
