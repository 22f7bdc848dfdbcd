"""Pretraining on several corpora: weighted mixing, resume, vocabulary from the corpora, and
continuing a pretrained model with a larger vocabulary and position table."""

from __future__ import annotations

import copy
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from rdkit import Chem

from sklearn_cmim import CMIMTransformer
from sklearn_cmim.chem import fragments
from sklearn_cmim.chem.corpus import (
    Corpus,
    CorpusError,
    HoldOut,
    MoleculeEncoder,
    build_vocabulary,
    standardised_set,
)
from sklearn_cmim.chem.fragments import brics_fragments
from sklearn_cmim.chem.standardize import Standardizer
from sklearn_cmim.chem.tokenizer import Vocabulary
from sklearn_cmim.cli import pretrain
from sklearn_cmim.cli.export import export_checkpoint
from sklearn_cmim.nn.model import CMIMModel, ModelConfig
from sklearn_cmim.persistence import load_pretrained
from sklearn_cmim.training import model_spec
from sklearn_cmim.training.checkpoint import load_checkpoint
from sklearn_cmim.training.streams import BatchStream, MixedStream

ALCOHOLS = ["C" * n + "O" for n in range(1, 31)]
AMINES = ["C" * n + "N" for n in range(1, 31)]
TINY_ARCHITECTURE = ["--d-model", "16", "--n-heads", "2", "--d-ff", "32", "--n-encoder-layers", "1",
                     "--n-decoder-layers", "1", "--n-latents", "1", "--latent-dim", "8"]
TINY = [*TINY_ARCHITECTURE, "--max-length", "40",
        "--precision", "fp32", "--device", "cpu", "--mim-warmup-steps", "0", "--learning-rate", "3e-3",
        "--holdout-every", "10", "--validation-size", "4", "--log-every", "2", "--batch-size", "4"]


@pytest.fixture
def corpora(tmp_path):
    alcohols, amines = tmp_path / "alcohols.smi", tmp_path / "amines.smi"
    alcohols.write_text("\n".join(ALCOHOLS) + "\n")
    amines.write_text("\n".join(AMINES) + "\n")
    return str(alcohols), str(amines)


def mixed_stream(paths, weights, seed=0):
    encoder = MoleculeEncoder(Standardizer(), Vocabulary.build(ALCOHOLS + AMINES), max_length=40)
    streams = [BatchStream(Corpus([p]), HoldOut(every=10), copy.deepcopy(encoder), batch_size=2,
                           seed=seed + i,
                           pool_batches=2) for i, p in enumerate(paths)]
    return MixedStream(streams, weights, seed)


def test_batches_come_from_each_corpus_by_weight_and_hold_one_corpus_each(corpora):
    batches = iter(mixed_stream(corpora, [3, 1]))
    kinds = Counter()
    for _ in range(400):
        batch = next(batches)
        ends = {ids[-2] for ids in batch}  # the token before <eos>: O or N
        assert len(ends) == 1  # a batch never mixes corpora
        kinds[ends.pop()] += 1
    assert 0.70 < max(kinds.values()) / 400 < 0.80  # 3:1


def test_a_mixed_stream_resumes_with_the_same_batches(corpora):
    stream = mixed_stream(corpora, [1, 1])
    batches = iter(stream)
    for _ in range(7):
        next(batches)
    state = copy.deepcopy(stream.state_dict())
    expected = [next(batches) for _ in range(30)]
    resumed = mixed_stream(corpora, [1, 1])
    resumed.load_state_dict(state)
    again = iter(resumed)
    assert [next(again) for _ in range(30)] == expected
    with pytest.raises(CorpusError, match="read 2 corpus"):
        mixed_stream(corpora[:1] * 3, [1, 1, 1]).load_state_dict(state)


def test_weights_must_match_the_corpora_and_not_all_be_zero(corpora):
    with pytest.raises(CorpusError, match="one non-negative weight per corpus"):
        mixed_stream(corpora, [1])
    with pytest.raises(CorpusError, match="not all zero"):
        mixed_stream(corpora, [0, 0])


def test_vocabulary_samples_every_corpus_and_drops_rare_tokens(tmp_path):
    # The rare token sits at the end of the file: a prefix would never see the bromides.
    path = tmp_path / "c.smi"
    path.write_text("\n".join(ALCOHOLS * 3 + ["CCBr", "CCCBr", "CCCCBr", "C[Se]C"]) + "\n")
    split = HoldOut(every=1000)
    vocabulary = build_vocabulary([Corpus([path])], split, Standardizer(), max_records=100, min_count=3)
    assert "Br" in vocabulary.index and "[Se]" not in vocabulary.index
    assert "[Se]" in build_vocabulary([Corpus([path])], split, Standardizer(), 100, min_count=1).index


def test_pretraining_on_two_corpora_reports_each_and_resumes_exactly(tmp_path, corpora, capsys):
    common = [*corpora, *TINY, "--weights", "2", "1", "--max-steps", "8", "--checkpoint-every-steps", "4",
              "--validation-every", "4"]
    assert pretrain.main([*common, "--output", str(tmp_path / "a")]) == 0
    log = capsys.readouterr().out
    assert "epochs 0/0" in log and "| alcohols " in log and "| amines " in log
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "a" / "checkpoints" / "step-00000004.pt", tmp_path / "b" / "checkpoints")
    assert pretrain.main([*common, "--output", str(tmp_path / "b"), "--resume"]) == 0
    a, b = (load_pretrained(tmp_path / name).model.state_dict() for name in "ab")
    assert all(torch.equal(a[key], b[key]) for key in a)
    validation = load_pretrained(tmp_path / "a").metadata["learning_curve"][-1]
    assert set(validation["corpora"]) == {"alcohols", "amines"}
    assert validation["n"] == sum(c["n"] for c in validation["corpora"].values())
    state = load_checkpoint(tmp_path / "a" / "checkpoints" / "step-00000008.pt")["ranks"][0]["data"]
    assert state["mixed"] and len(state["streams"]) == 2
    # Resumed with one of its two files, the run says so (it used to fail on a missing key), and so
    # does the stream, for a checkpoint that stores no input files.
    alone = [corpora[0], *TINY, "--max-steps", "12", "--output", str(tmp_path / "a"), "--resume"]
    assert pretrain.main(alone) == 2
    assert "(input files alcohols.smi, amines.smi, now alcohols.smi)" in capsys.readouterr().err
    with pytest.raises(CorpusError, match=r"read 2 corpus\(es\); resume it with the same input files"):
        mixed_stream(corpora[:1], [1]).streams[0].load_state_dict(state)


def test_corpora_whose_files_share_a_name_are_refused(tmp_path, corpora, capsys):
    twin = tmp_path / "other" / "alcohols.csv"
    twin.parent.mkdir()
    twin.write_text("smiles\n" + "\n".join(AMINES) + "\n")
    assert pretrain.main([corpora[0], str(twin), *TINY, "--max-steps", "1",
                          "--output", str(tmp_path / "run")]) == 2
    assert "share the name 'alcohols': rename one" in capsys.readouterr().err


def test_prepared_corpora_get_a_file_each(tmp_path, corpora):
    prepared = tmp_path / "mix.npz"
    argv = [*corpora, *TINY, "--max-steps", "2", "--prepared", str(prepared)]
    assert pretrain.main([*argv, "--output", str(tmp_path / "run")]) == 0
    assert sorted(p.name for p in tmp_path.glob("mix.*.npz")) == ["mix.0.npz", "mix.1.npz"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--weights", "1"], "one weight per FILE: 2 file(s), 1 weight(s)"),
    (["--weights", "0", "0"], "at least one weight must be above 0"),
    (["--init-from", "cmim-broad", "--vocab-from", "cmim-broad"], "drop --vocab-from"),
    (["--init-from", "cmim-broad", "--d-model", "512", "--no-neutralize", "--max-length", "300"],
     "--init-from keeps that model's architecture and standardiser: drop --d-model, --neutralize"),
])
def test_bad_mixing_options_are_one_line_errors(tmp_path, corpora, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_:
        pretrain.main([*corpora, "--output", str(tmp_path / "run"), *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_load_extended_copies_every_old_row_and_keeps_the_new_ones():
    small = CMIMModel(ModelConfig(vocab_size=6, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1,
                                  n_decoder_layers=1, n_latents=1, latent_dim=8, max_length=20))
    large = CMIMModel(ModelConfig(**{**small.config.to_dict(), "vocab_size": 9, "max_length": 30}))
    fresh = {k: v.clone() for k, v in large.state_dict().items()}
    model_spec.load_extended(large, small)
    for name, value in small.state_dict().items():
        got = large.state_dict()[name]
        assert torch.equal(got[:value.shape[0]], value), name
        if got.shape != value.shape:  # the new token and position rows are left as initialised
            assert torch.equal(got[value.shape[0]:], fresh[name][value.shape[0]:]), name


def test_init_from_continues_a_model_with_its_ids_and_longer_positions(tmp_path, corpora, capsys):
    base = tmp_path / "base"
    assert pretrain.main([corpora[0], *TINY, "--max-steps", "2", "--output", str(base)]) == 0
    grown = tmp_path / "grown"
    continued = TINY[len(TINY_ARCHITECTURE):]  # the architecture comes from the model continued
    assert pretrain.main([*corpora, *continued, "--max-length", "60", "--max-steps", "1",
                          "--init-from", str(base), "--output", str(grown)]) == 0
    old, new = load_pretrained(base), load_pretrained(grown)
    assert new.vocabulary.tokens[:len(old.vocabulary)] == old.vocabulary.tokens  # every old id kept
    assert "N" in new.vocabulary.index and "N" not in old.vocabulary.index
    assert new.model.config.max_length == 60 and new.model.config.vocab_size == len(new.vocabulary)
    assert new.metadata["pretraining"]["initialised_from"]["model"] == str(base)
    # What the run records (and model cards print) is the architecture it trained, not the defaults.
    recorded = new.metadata["pretraining"]["arguments"]
    assert {name: recorded[name] for name in ("d_model", "n_latents", "max_length")} == \
        {"d_model": 16, "n_latents": 1, "max_length": 60}
    # One step at a small learning rate moves the copied weights a little, not back to random.
    a, b = old.model.state_dict(), new.model.state_dict()
    drift = (b["decoder.norm.weight"] - a["decoder.norm.weight"]).abs().max()
    assert drift < 0.05
    cmim = CMIMTransformer.from_pretrained(grown)
    assert cmim.transform(["CCCN"]).shape[0] == 1
    # A checkpoint exported mid-run says where the run started too.
    exported = export_checkpoint(next((grown / "checkpoints").glob("*.pt")), tmp_path / "exported")
    summary = load_pretrained(exported).metadata["pretraining"]["initialised_from"]
    assert summary == {"model": str(base), "steps": 2, "molecules_seen": 8}
    # The run summed up its start when it began: once that model has moved, the run still finishes.
    base.rename(tmp_path / "moved")
    (grown / "config.json").unlink()
    assert pretrain.main([*corpora, *continued, "--max-length", "60", "--max-steps", "2",
                          "--init-from", str(base), "--output", str(grown), "--resume"]) == 0
    assert load_pretrained(grown).metadata["pretraining"]["initialised_from"] == summary
    # Without --max-length a continued model keeps its own; a shorter one is refused, not ignored.
    again = [*corpora, *continued[2:], "--max-steps", "1", "--init-from", str(grown)]  # no --max-length
    assert pretrain.main([*again, "--output", str(tmp_path / "again")]) == 0
    assert load_pretrained(tmp_path / "again").model.config.max_length == 60
    capsys.readouterr()
    assert pretrain.main([*again, "--max-length", "40", "--output", str(tmp_path / "short")]) == 2
    assert f"--max-length 40 is below {grown}'s 60" in capsys.readouterr().err
    # A directory holding a model (here an exported one) is replaced only when asked.
    with pytest.raises(SystemExit) as exit_:
        pretrain.main([*again, "--output", str(exported)])
    assert exit_.value.code == 2 and "already holds a model" in capsys.readouterr().err
    assert pretrain.main([*again, "--output", str(exported), "--overwrite"]) == 0
    assert load_pretrained(exported).metadata["pretraining"]["initialised_from"]["model"] == str(grown)


def test_fragments_leave_out_excluded_molecules():
    found = brics_fragments(["CCOC(=O)c1ccccc1N"], Standardizer(), max_heavy_atoms=8)
    assert "Nc1ccccc1" in found
    assert "Nc1ccccc1" not in brics_fragments(["CCOC(=O)c1ccccc1N"], Standardizer(), 8,
                                              exclude=frozenset({"Nc1ccccc1"}))
    assert all(Chem.MolFromSmiles(s).GetNumHeavyAtoms() <= 8 for s in found)
    assert "CCOC(=O)c1ccccc1N" not in found  # the whole molecule (11 heavy atoms) is too large
    assert all(s == Standardizer()(s) for s in found)  # written standardised


def test_fragments_command_writes_the_file_or_fails_before_cutting(tmp_path, capsys):
    source, excluded = tmp_path / "in.smi", tmp_path / "eval.smi"
    source.write_text("CCOC(=O)c1ccccc1N\nCCN(CC)C(=O)c1ccccc1\n")
    excluded.write_text("Nc1ccccc1\n")
    output = tmp_path / "fragments.smi"
    assert fragments.main([str(source), "--exclude", str(excluded), "--output", str(output)]) == 0
    written = output.read_text().splitlines()
    assert written == brics_fragments(["CCOC(=O)c1ccccc1N", "CCN(CC)C(=O)c1ccccc1"], Standardizer(), 12,
                                      exclude=frozenset({"Nc1ccccc1"}))
    assert written and "Nc1ccccc1" not in written
    capsys.readouterr()
    assert fragments.main([str(source), "--output", str(tmp_path / "no" / "f.smi")]) == 2
    assert "cannot write" in capsys.readouterr().err and not (tmp_path / "no").exists()


def test_an_empty_corpus_is_named_as_such(tmp_path, corpora, capsys):
    empty = tmp_path / "empty.smi"
    empty.write_text("")
    assert pretrain.main([corpora[0], str(empty), *TINY, "--max-steps", "1",
                          "--output", str(tmp_path / "run")]) == 2
    assert f"{empty} holds no molecules" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resume_refuses_other_held_out_records_or_other_files(tmp_path, corpora, capsys):
    out = str(tmp_path / "run")
    assert pretrain.main([corpora[0], *TINY, "--max-steps", "2", "--checkpoint-every-steps", "1",
                          "--output", out]) == 0
    resume = [*TINY, "--max-steps", "4", "--output", out, "--resume"]
    capsys.readouterr()
    assert pretrain.main([corpora[0], *resume, "--holdout-every", "5"]) == 2
    assert "other data options (--holdout-every 10, now 5)" in capsys.readouterr().err
    assert pretrain.main([corpora[1], *resume]) == 2
    assert "(input files alcohols.smi, now amines.smi)" in capsys.readouterr().err
    # Another batch size would cut the pool it resumes in differently, and miscount molecules seen.
    assert pretrain.main([corpora[0], *resume, "--batch-size", "8"]) == 2
    assert "(--batch-size 4, now 8)" in capsys.readouterr().err
    # A line taken out of the file numbers every record after it anew: held-out records would train.
    original = Path(corpora[0]).read_text()
    Path(corpora[0]).write_text(original.split("\n", 1)[1])
    assert pretrain.main([corpora[0], *resume]) == 2
    err = capsys.readouterr().err
    assert f"(corpus alcohols.smi of {len(original)} bytes, now {len(original) - 3})" in err
    Path(corpora[0]).write_text(original)
    assert pretrain.main([corpora[0], *resume]) == 0  # the same options resume


def test_a_resume_says_it_draws_the_corpora_by_other_weights_over_other_steps(tmp_path, corpora, capsys):
    out = str(tmp_path / "run")
    assert pretrain.main([*corpora, *TINY, "--max-steps", "2", "--checkpoint-every-steps", "1",
                          "--output", out, "--weights", "1", "3"]) == 0
    (tmp_path / "run" / "config.json").unlink()
    capsys.readouterr()
    # The command run again without its --weights: the mix changes, and the log line says so.
    assert pretrain.main([*corpora, *TINY, "--max-steps", "4", "--output", out, "--resume"]) == 0
    assert "at step 2 (max steps 2, now 4; weights 1 3, now equal)\n" in capsys.readouterr().out


def test_exclude_keeps_evaluation_molecules_out_however_they_are_written(tmp_path, corpora, capsys):
    # The evaluation set writes two training molecules otherwise: as a salt and in another order.
    evaluation = tmp_path / "evaluation.csv"
    evaluation.write_text(f"smiles,y\n[Na+].[O-]{ALCOHOLS[4][:-1]},1\n{ALCOHOLS[7][::-1]},2\n")
    encoder = MoleculeEncoder(Standardizer(), Vocabulary.build(ALCOHOLS), 40,
                              standardised_set([evaluation], Standardizer()))
    assert encoder.encode(ALCOHOLS[4]) == encoder.encode(ALCOHOLS[7]) == "excluded"
    assert encoder.encode(ALCOHOLS[5]) != "excluded"
    out = tmp_path / "run"
    common = [corpora[0], *TINY, "--max-steps", "2", "--output", str(out), "--exclude", str(evaluation)]
    for extra in ([], ["--prepared", str(tmp_path / "alcohols.npz"), "--overwrite"]):
        assert pretrain.main([*common, *extra]) == 0
        pretraining = json.loads((out / "config.json").read_text())["metadata"]["pretraining"]
        assert pretraining["skipped_molecules"] == {"excluded": 2}  # records 4 and 7 (record 0 is held out)
        shutil.rmtree(out / "checkpoints")
    capsys.readouterr()
    # A prepared file made with an exclusion does not stand in for one without, and a resumed run
    # keeps its exclusion.
    assert pretrain.main([corpora[0], *TINY, "--max-steps", "2", "--output", str(tmp_path / "other"),
                          "--prepared", str(tmp_path / "alcohols.npz")]) == 2
    assert "differ in: excluded" in capsys.readouterr().err
    assert pretrain.main([*common, "--checkpoint-every-steps", "1", "--overwrite"]) == 0
    (out / "config.json").unlink()
    assert pretrain.main([*common[:-2], "--max-steps", "3", "--resume"]) == 2
    assert "(--exclude evaluation.csv, now nothing)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrain.main([*common, "--exclude", str(tmp_path / "missing.csv")])
    assert "--exclude: no such file" in capsys.readouterr().err
