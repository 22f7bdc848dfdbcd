"""Shipping a model mid-run: a checkpoint exported with ``cmim export`` is the model it holds."""

import re
import shutil

import numpy as np
import pytest
import torch

from sklearn_cmim import CMIMTransformer, cli
from sklearn_cmim.persistence import load_pretrained
from sklearn_cmim.training.checkpoint import input_files, run_corpora
from tests.conftest import RunsACommand
from tests.test_pretrain import DELANEY, TINY


def test_exported_checkpoint_equals_the_finished_run(tmp_path, esol):
    run = tmp_path / "run"
    assert cli.main(["pretrain", DELANEY, "--output", str(run), *TINY, "--max-steps", "6",
                     "--checkpoint-every-steps", "6"]) == 0
    checkpoint = next((run / "checkpoints").glob("step-*.pt"))
    assert cli.main(["export", str(checkpoint), str(tmp_path / "exported")]) == 0
    smiles = esol[0][:16]
    finished = CMIMTransformer(pretrained=run, max_epochs=0, errors="nan").fit(smiles)
    exported = CMIMTransformer(pretrained=tmp_path / "exported", max_epochs=0, errors="nan").fit(smiles)
    np.testing.assert_array_equal(exported.transform(smiles), finished.transform(smiles))
    meta = load_pretrained(tmp_path / "exported").metadata
    assert meta["pretraining"]["steps"] == 6 and meta["pretraining"]["molecules_seen"] == 48
    assert meta["learning_curve"] == load_pretrained(run).metadata["learning_curve"]
    # The prior is fitted to the same validation molecules as the finished run's.
    assert exported.latent_prior_ == finished.latent_prior_ and exported.latent_prior_.n_molecules == 8
    # What a new user may give instead of the model's directory is answered with what to give.
    with pytest.raises(FileNotFoundError, match=f"first: cmim export {re.escape(str(checkpoint))} DIR"):
        CMIMTransformer.from_pretrained(checkpoint)
    with pytest.raises(FileNotFoundError, match=rf"give the model's directory, {re.escape(str(run))}$"):
        CMIMTransformer.from_pretrained(run / "weights.pt")
    (run / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="is a cmim pretrain run not finished yet: resume it"):
        CMIMTransformer.from_pretrained(run)


def test_an_exported_checkpoint_whose_corpora_moved_has_no_latent_prior_and_says_why(tmp_path, capsys):
    corpus = tmp_path / "delaney.csv"
    shutil.copy(DELANEY, corpus)
    run = tmp_path / "run"
    assert cli.main(["pretrain", str(corpus), "--output", str(run), *TINY, "--max-steps", "2"]) == 0
    corpus.unlink()
    checkpoint = next((run / "checkpoints").glob("step-*.pt"))
    capsys.readouterr()
    assert cli.main(["export", str(checkpoint), str(tmp_path / "out")]) == 0
    assert load_pretrained(tmp_path / "out").latent_prior is None
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("cmim export: warning: ") and len(warning.splitlines()) == 1
    assert f"corpus {corpus} is not there any more" in warning and "prior='standard'" in warning


def test_export_refits_the_prior_on_the_runs_own_corpus_from_any_directory(tmp_path, monkeypatch, capsys):
    # The run read "delaney.csv" relative to its directory; the export runs where another file of
    # that name lies, and must not fit the prior to it.
    (tmp_path / "train").mkdir()
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(DELANEY, tmp_path / "train" / "delaney.csv")
    (tmp_path / "elsewhere" / "delaney.csv").write_text("smiles\n" + "CCO\n" * 400)
    monkeypatch.chdir(tmp_path / "train")
    assert cli.main(["pretrain", "delaney.csv", "--output", "run", *TINY, "--max-steps", "2"]) == 0
    finished = load_pretrained(tmp_path / "train" / "run").latent_prior
    monkeypatch.chdir(tmp_path / "elsewhere")
    checkpoint = next((tmp_path / "train" / "run" / "checkpoints").glob("step-*.pt"))
    assert cli.main(["export", str(checkpoint), "out"]) == 0
    assert load_pretrained(tmp_path / "elsewhere" / "out").latent_prior == finished
    # A corpus changed since the run is not the one it read: no prior, and the reason.
    with open(tmp_path / "train" / "delaney.csv", "a") as handle:
        handle.write("CCCCO,1.0\n")
    capsys.readouterr()
    assert cli.main(["export", str(checkpoint), "changed"]) == 0
    assert load_pretrained(tmp_path / "elsewhere" / "changed").latent_prior is None
    assert "has changed since" in capsys.readouterr().err


def test_export_does_not_replace_a_model_unless_told(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["pretrain", DELANEY, "--output", str(run), *TINY, "--max-steps", "2"]) == 0
    finished = (run / "weights.pt").read_bytes()
    checkpoint = next((run / "checkpoints").glob("step-*.pt"))
    capsys.readouterr()
    # Exporting into the run's own directory would replace its finished model.
    assert cli.main(["export", str(checkpoint), str(run), "--half"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"cmim export: error: {run} already holds a model; choose another directory, or pass "
        "--overwrite to replace it")
    assert (run / "weights.pt").read_bytes() == finished
    assert cli.main(["export", str(checkpoint), str(run), "--half", "--overwrite"]) == 0
    assert (run / "weights.pt").read_bytes() != finished


def test_exporting_a_damaged_checkpoint_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "step-00000001.pt"
    bad.write_bytes(b"garbage")
    assert cli.main(["export", str(bad), str(tmp_path / "out")]) == 2
    assert "unreadable" in capsys.readouterr().err


def test_a_checkpoint_that_would_run_a_command_is_refused_and_never_runs(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["pretrain", DELANEY, "--output", str(run), *TINY, "--max-steps", "2",
                     "--checkpoint-every-steps", "2"]) == 0
    checkpoint = next((run / "checkpoints").glob("step-*.pt"))
    marker = tmp_path / "pwned"
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "optimizer": RunsACommand(marker)}, checkpoint)  # a valid file, a hostile object
    capsys.readouterr()
    assert cli.main(["export", str(checkpoint), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "could run code" in error and "weights_only=False" not in error
    # Resuming from it refuses it too (and there is no earlier checkpoint to fall back to).
    assert cli.main(["pretrain", DELANEY, "--output", str(run), *TINY, "--max-steps", "4", "--resume"]) == 2
    assert "none of the checkpoints" in capsys.readouterr().err
    assert not marker.exists()


def test_a_run_may_name_corpora_that_are_not_here(tmp_path):
    # The GPU recipe trains from tokenised corpora packed elsewhere: its checkpoints name files that
    # are not on its machine, and must still be written; export then says the corpora are gone.
    here = tmp_path / "here.smi"
    here.write_text("CCO\n")
    files = input_files([here, tmp_path / "elsewhere.csv.gz"])
    assert files == [{"path": str(here.resolve()), "bytes": 4}, {"path": str(tmp_path / "elsewhere.csv.gz")}]
    assert run_corpora({"input_files": files}) == ([], f"the run's corpus {tmp_path / 'elsewhere.csv.gz'} "
                                                       "is not there any more")
