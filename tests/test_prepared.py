"""``cmim pretrain --prepared``: a corpus encoded once, then batched from arrays."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest

from sklearn_cmim.chem.corpus import Corpus, CorpusError, HoldOut, MoleculeEncoder
from sklearn_cmim.chem.standardize import Standardizer
from sklearn_cmim.chem.tokenizer import Vocabulary
from sklearn_cmim.cli import pretrain
from sklearn_cmim.persistence import load_pretrained
from sklearn_cmim.training.prepared import PreparedCorpus, PreparedStream
from tests.test_pretrain import ALCOHOLS, DELANEY, TINY, StandardizerThatKillsItsProcess

BAD = ["not-a-smiles", "CCN", "C" * 45 + "O"]  # invalid, unknown token, too long


def alcohols_corpus(tmp_path):
    path = tmp_path / "alcohols.smi"
    path.write_text("\n".join(ALCOHOLS + BAD) + "\n")
    encoder = MoleculeEncoder(Standardizer(), Vocabulary.build(ALCOHOLS), max_length=40)
    return Corpus([path]), HoldOut(every=7), encoder


@pytest.mark.parametrize("workers", [0, 2])
def test_prepared_corpus_holds_each_training_molecule_as_the_encoder_reads_it(tmp_path, workers):
    corpus, split, encoder = alcohols_corpus(tmp_path)
    prepared = PreparedCorpus.build(corpus, split, encoder, workers)
    expected = {}
    for number, text in corpus.records():
        if not split.is_validation(number) and (encoded := encoder(text)) is not None:
            expected[number] = encoded[0]
    assert prepared.records.tolist() == list(expected)
    for i, ids in enumerate(expected.values()):
        assert prepared[i].tolist() == ids
    # The bad records are 30, 31 and 32; 35 would be held out, so all three are training records.
    assert prepared.skipped(split, rank=0, world_size=1) == encoder.skipped == {
        "invalid": 1, "unknown_token": 1, "too_long": 1}


def stream(prepared, split, encoder, rank=0, world_size=1):
    return PreparedStream(prepared, split, copy.deepcopy(encoder), batch_size=3, seed=0, rank=rank,
                          world_size=world_size, pool_batches=2)


def test_each_rank_sees_its_molecules_once_an_epoch_in_full_batches_and_resumes_exactly(tmp_path):
    corpus, split, encoder = alcohols_corpus(tmp_path)
    prepared = PreparedCorpus.build(corpus, split, encoder)
    shares = []
    for rank in (0, 1):
        ranked = stream(prepared, split, encoder, rank, world_size=2)
        batches = iter(ranked)
        epoch = []
        while ranked.epoch == 0:
            batch = next(batches)
            assert len(batch) == 3
            epoch.extend(encoder.vocabulary.decode(ids.tolist()) for ids in batch)
        mine = np.flatnonzero(split.owner(prepared.records, 2) == rank)
        owned = [encoder.vocabulary.decode(prepared[i].tolist()) for i in mine]
        # The last batch of an epoch, epoch[-3:], was taken from epoch 1.
        assert len(set(epoch[:-3])) == len(epoch[:-3]) and set(epoch[:-3]) <= set(owned)
        assert len(owned) - len(epoch[:-3]) < 3  # only a partial batch's worth waits for the next epoch
        shares.append(set(owned))
    assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == len(prepared)

    first = stream(prepared, split, encoder)
    batches = iter(first)
    for _ in range(11):  # into the second epoch
        next(batches)
    state = copy.deepcopy(first.state_dict())
    resumed = stream(prepared, split, encoder)
    resumed.load_state_dict(state)
    again = iter(resumed)
    for _ in range(12):
        assert [ids.tolist() for ids in next(again)] == [ids.tolist() for ids in next(batches)]


def test_pretraining_prepares_once_reuses_the_file_and_refuses_one_made_otherwise(tmp_path, capsys):
    prepared = tmp_path / "delaney.npz"
    common = [DELANEY, *TINY, "--max-steps", "4", "--checkpoint-every-steps", "2",
              "--prepared", str(prepared)]
    assert pretrain.main([*common, "--output", str(tmp_path / "a")]) == 0
    # ESOL has 1,128 records: 113 held out (every 10th), 43 of the others over 48 tokens.
    assert "prepared 972 training molecules" in capsys.readouterr().out
    made = prepared.stat().st_mtime_ns
    assert pretrain.main([*common, "--output", str(tmp_path / "b")]) == 0
    assert prepared.stat().st_mtime_ns == made and "prepared" not in capsys.readouterr().out
    a, b = (load_pretrained(tmp_path / name).model.state_dict() for name in "ab")
    assert all((a[key] == b[key]).all() for key in a)

    assert pretrain.main([*common, "--output", str(tmp_path / "c"), "--max-length", "40"]) == 2
    assert "they differ in: max_length" in capsys.readouterr().err
    assert pretrain.main([*TINY, DELANEY, "--output", str(tmp_path / "a"), "--max-steps", "6",
                          "--resume"]) == 2  # a run that trained from arrays cannot stream on
    assert "(a prepared corpus (--prepared), now streamed files); resume it with the same" in \
        capsys.readouterr().err
    os.truncate(prepared, 100)
    assert pretrain.main([*common, "--output", str(tmp_path / "d")]) == 2
    assert "cannot read the prepared corpus" in capsys.readouterr().err
    # --prepared naming the corpus itself: it is not an .npz, and is not to be deleted.
    assert pretrain.main([*common[:-1], DELANEY, "--output", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert f"{DELANEY} is not a prepared corpus" in err and "delete" not in err
    # Nor is another zip, such as a model's weights: it is not a damaged prepared file.
    weights = tmp_path / "a" / "weights.pt"
    assert pretrain.main([*common[:-1], str(weights), "--output", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert f"{weights} is not a prepared corpus" in err and "delete" not in err


def test_a_worker_dying_while_preparing_is_a_clear_error(tmp_path):
    corpus, split, _ = alcohols_corpus(tmp_path)
    encoder = MoleculeEncoder(StandardizerThatKillsItsProcess(), Vocabulary.build(ALCOHOLS), max_length=40)
    with pytest.raises(CorpusError, match=r"a data worker died while reading records 1 to \d+"):
        PreparedCorpus.build(corpus, split, encoder, workers=1)


def test_too_few_molecules_for_a_batch_is_a_clear_error(tmp_path):
    corpus, split, encoder = alcohols_corpus(tmp_path)
    prepared = PreparedCorpus.build(corpus, split, encoder)
    with pytest.raises(CorpusError, match="fewer than a batch of 64"):
        PreparedStream(prepared, split, encoder, batch_size=64, seed=0)


def test_a_corpus_with_no_usable_molecule_says_why(tmp_path):
    path = tmp_path / "bad.smi"
    # Records 0 and 7 are held out; Br is not in the alcohols' vocabulary.
    path.write_text("not-a-smiles\n" * 4 + "CCBr\n" * 4)
    encoder = MoleculeEncoder(Standardizer(), Vocabulary.build(ALCOHOLS), max_length=40)
    with pytest.raises(CorpusError, match=r"no usable training molecule in .*bad\.smi \(skipped: "
                                          r"\{'invalid': 3, 'unknown_token': 3\}\)"):
        PreparedCorpus.build(Corpus([path]), HoldOut(every=7), encoder)
