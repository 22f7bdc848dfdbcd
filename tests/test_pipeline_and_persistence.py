"""End to end in scikit-learn pipelines, and every way a fitted model is stored and read back."""

import copy
import dataclasses
import io
import json
import os
import pickle
import re
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from sklearn_cmim import CMIMTransformer
from sklearn_cmim.persistence import load_pretrained
from tests.conftest import TINY, RunsACommand


@pytest.mark.slow
def test_grid_search_over_contrastive_weight_then_joblib_round_trip(esol, tmp_path):
    smiles, y = esol[0][:64], esol[1][:64]
    pipe = Pipeline([("cmim", CMIMTransformer(**TINY)), ("ridge", Ridge())])
    search = GridSearchCV(pipe, {"cmim__contrastive_weight": [0.0, 1.0]}, cv=2,
                          scoring="neg_root_mean_squared_error")
    search.fit(smiles, y)
    assert search.best_params_["cmim__contrastive_weight"] in (0.0, 1.0)
    predictions = search.predict(esol[0][64:96])
    assert predictions.shape == (32,) and np.isfinite(predictions).all()
    joblib.dump(search, tmp_path / "search.joblib")
    restored = joblib.load(tmp_path / "search.joblib")
    np.testing.assert_array_equal(restored.predict(esol[0][64:96]), predictions)


def test_save_pretrained_then_load_without_training(fitted, smiles, tmp_path):
    path = fitted.save_pretrained(tmp_path / "model")
    assert sorted(os.listdir(path)) == ["config.json", "vocab.json", "weights.pt"]
    # On the same thread count as ``fitted``: the count changes the last bits.
    loaded = CMIMTransformer(pretrained=path, max_epochs=0, n_threads=fitted.n_threads).fit(smiles[:2])
    assert loaded.history_ == []
    np.testing.assert_array_equal(loaded.transform(smiles), fitted.transform(smiles))
    # The prior travels with the model, rather than being fitted again to the two molecules.
    assert loaded.latent_prior_ == fitted.latent_prior_ and loaded.latent_prior_.n_molecules == len(smiles)


def test_a_directory_without_a_latent_prior_gets_one_from_the_molecules_it_is_fitted_on(fitted, smiles,
                                                                                      tmp_path):
    path = fitted.save_pretrained(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    del config["latent_prior"]  # as written before models kept a prior
    (path / "config.json").write_text(json.dumps(config))
    assert CMIMTransformer.from_pretrained(path).latent_prior_ is None
    loaded = CMIMTransformer(pretrained=path, max_epochs=0, n_threads=fitted.n_threads).fit(smiles[:5])
    latent = loaded.set_params(embedding="latent").transform(smiles[:5])
    np.testing.assert_allclose(loaded.latent_prior_.mean, latent.mean(axis=0), rtol=1e-5, atol=1e-6)
    alone = CMIMTransformer(pretrained=path, max_epochs=0).fit(smiles[:1])
    assert alone.latent_prior_ is None
    with pytest.raises(ValueError, match=r"no fitted latent prior.*prior='standard'"):
        alone.sample(2)
    assert alone.sample(2, random_state=0, prior="standard").shape == (2,)


def test_a_latent_prior_of_the_wrong_width_is_refused_on_load(fitted, tmp_path):
    path = fitted.save_pretrained(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    config["latent_prior"]["mean"] = config["latent_prior"]["mean"][:-1]
    config["latent_prior"]["std"] = config["latent_prior"]["std"][:-1]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json has 7 dimensions, its model's latent 8"):
        CMIMTransformer.from_pretrained(path)


@pytest.mark.parametrize(("tamper", "message"), [
    (lambda c: c["model"].pop("vocab_size"), "missing model setting: vocab_size"),
    (lambda c: c["model"].update(foo=1), "unknown model settings: foo"),
    (lambda c: c["model"].update(vocab_size="26"), "vocab_size must be a positive integer, got '26'"),
    (lambda c: c["model"].update(n_heads=3), "d_model 32 is not a multiple of n_heads 3"),
    (lambda c: c.update(model=None), "the model settings must be a mapping, got NoneType"),
    (lambda c: c.update(format_version="1"), "format_version '1' is not an integer"),
])
def test_a_tampered_config_is_named_not_a_traceback(fitted, tmp_path, tamper, message):
    path = fitted.save_pretrained(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    tamper(config)
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{path}.*{re.escape(message)}"):
        CMIMTransformer.from_pretrained(path)


def test_weights_that_do_not_fit_the_config_are_named_in_one_line(fitted, tmp_path):
    path = fitted.save_pretrained(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    config["model"]["max_length"] = 16  # the position table no longer fits its weights
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"not match its config: size mismatch for position_emb") as error:
        CMIMTransformer.from_pretrained(path)
    assert "\n" not in str(error.value)  # the commands print a user error as one line


@pytest.mark.parametrize("state", [[1, 2], torch.zeros(3), {"a": 1}])
def test_weights_that_are_not_a_tensor_state_dict_are_named(fitted, tmp_path, state):
    path = fitted.save_pretrained(tmp_path / "model")
    torch.save(state, path / "weights.pt")
    with pytest.raises(ValueError, match=r"weights\.pt: it holds a \w+, not a plain tensor state dict"):
        CMIMTransformer.from_pretrained(path)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("temperature", float("nan"), "temperature must be finite and non-negative"),
    ("temperature", -0.5, "temperature must be finite and non-negative"),
    ("std", float("inf"), "finite, non-negative std"),
])
def test_a_latent_prior_that_would_draw_no_molecule_is_refused_on_load(fitted, tmp_path, field, value,
                                                                        message):
    path = fitted.save_pretrained(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    prior = config["latent_prior"]
    prior[field] = value if field == "temperature" else [value] * len(prior["std"])
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        CMIMTransformer.from_pretrained(path)
    # A finite prior whose draws overflow float32 is an error too, not a row of None.
    wide = copy.deepcopy(fitted)
    wide.latent_prior_ = dataclasses.replace(fitted.latent_prior_, std=fitted.latent_prior_.std * 1e45)
    with pytest.raises(ValueError, match="overflow float32"):
        wide.sample(2, random_state=0)


def test_a_latent_the_model_decodes_to_no_finished_smiles_decodes_to_none(fitted, monkeypatch):
    carbon = fitted.vocabulary_.index["C"]
    z = fitted.latent_prior_.draw(2, np.random.default_rng(0))
    # A runaway chain: the positions run out before the model writes <eos>.
    monkeypatch.setattr(type(fitted.model_), "generate",
                        lambda self, z, bos_id, eos_id, max_length=None: torch.full((len(z), 7), carbon))
    assert list(fitted.sample(2, random_state=0)) == [None, None]
    latent = copy.deepcopy(fitted).set_params(embedding="latent")
    assert list(latent.inverse_transform(z)) == [None, None]


def test_inference_precision_follows_the_parameter_and_survives_a_pickle(smiles):
    est = CMIMTransformer(**{**TINY, "precision": "fp32"}).fit(smiles)
    fp32 = est.transform(smiles)
    est.set_params(precision="bf16")  # an inference setting: it applies to a fitted model too
    bf16 = est.transform(smiles)
    assert not np.array_equal(bf16, fp32) and est.precision_ == "fp32"  # trained in fp32
    for copy_ in (pickle.loads(pickle.dumps(est)), copy.deepcopy(est)):
        assert copy_.precision_ == "fp32"
        np.testing.assert_array_equal(copy_.transform(smiles), bf16)


def test_half_precision_storage_is_close(fitted, smiles, tmp_path):
    fitted.save_pretrained(tmp_path / "half", half=True)
    loaded = CMIMTransformer(pretrained=tmp_path / "half", max_epochs=0).fit(smiles[:2])
    np.testing.assert_allclose(loaded.transform(smiles), fitted.transform(smiles), atol=2e-2)


def test_fine_tuning_from_pretrained_uses_its_vocabulary_and_changes_weights(fitted, smiles, tmp_path):
    fitted.save_pretrained(tmp_path / "model")
    tuned = CMIMTransformer(pretrained=tmp_path / "model", max_epochs=1, random_state=0,
                            contrastive_weight=0.0).fit(smiles[:8])
    assert tuned.vocabulary_.tokens == fitted.vocabulary_.tokens
    assert len(tuned.history_) == 1
    assert not np.allclose(tuned.transform(smiles), fitted.transform(smiles))


def test_missing_pretrained_directory_gives_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a bundled model"):
        CMIMTransformer(pretrained=tmp_path / "nothing").fit(["CCO"])


def test_a_save_over_a_model_that_stops_midway_leaves_no_loadable_mix(fitted, tmp_path, monkeypatch):
    path = fitted.save_pretrained(tmp_path / "model")
    other = CMIMTransformer(**{**TINY, "max_epochs": 1, "random_state": 1}).fit(["CCO", "CCN", "c1ccccc1"])
    replace = os.replace

    def crash_after_the_weights(source, target):
        replace(source, target)
        if Path(target).name == "weights.pt":
            raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash_after_the_weights)
    with pytest.raises(OSError, match="disk full"):
        other.save_pretrained(path)
    monkeypatch.undo()
    # The new weights are in, the old vocabulary and metadata too: it must not load as a model.
    with pytest.raises(FileNotFoundError, match=r"nor a directory holding config\.json"):
        CMIMTransformer(pretrained=path, max_epochs=0).fit(["CCO"])
    other.save_pretrained(path)  # a save that completes gives the new model whole
    saved, trained = load_pretrained(path).model.state_dict(), other.model_.state_dict()
    assert all(torch.equal(saved[name], trained[name].cpu()) for name in trained)


def test_a_loaded_model_saved_again_keeps_its_own_record(tmp_path):
    bundled = load_pretrained("mim-broad").metadata
    # The estimator's default contrastive weight is 1.0; the model was trained at 0.0.
    loaded = CMIMTransformer.from_pretrained("mim-broad")
    assert load_pretrained(loaded.save_pretrained(tmp_path / "same")).metadata == bundled
    copy = pickle.loads(pickle.dumps(loaded))
    assert load_pretrained(copy.save_pretrained(tmp_path / "copy")).metadata == bundled
    tuned = CMIMTransformer(pretrained="mim-broad", max_epochs=1, batch_size=4, mim_warmup_steps=0,
                            random_state=0, n_threads=1).fit(["CCO", "CCN", "CCCO", "c1ccccc1"])
    meta = load_pretrained(tuned.save_pretrained(tmp_path / "tuned")).metadata
    assert {k: v for k, v in meta.items() if k != "fine_tuning"} == bundled
    assert meta["fine_tuning"]["contrastive_weight"] == 1.0 and len(meta["fine_tuning"]["history"]) == 1


def test_corrupt_weights_give_clear_error(fitted, tmp_path):
    path = fitted.save_pretrained(tmp_path / "model")
    (path / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load weights"):
        CMIMTransformer(pretrained=path, max_epochs=0).fit(["CCO"])
    (path / "weights.pt").unlink()
    with pytest.raises(ValueError, match=r"cannot load weights from .*weights\.pt: the file is missing"):
        CMIMTransformer(pretrained=path, max_epochs=0).fit(["CCO"])


def test_a_vocabulary_that_does_not_fit_the_weights_gives_clear_error(fitted, tmp_path):
    path = fitted.save_pretrained(tmp_path / "model")
    tokens = json.loads((path / "vocab.json").read_text())
    (path / "vocab.json").write_text(json.dumps(tokens[:-2]))  # ids would decode to other tokens
    message = rf"holds {len(tokens) - 2} tokens, its model's embedding {len(tokens)}"
    with pytest.raises(ValueError, match=message):
        CMIMTransformer(pretrained=path, max_epochs=0).fit(["CCO"])


def test_weights_that_would_run_code_are_refused_and_never_run(fitted, tmp_path):
    marker = tmp_path / "pwned"
    payload = RunsACommand(marker)
    path = fitted.save_pretrained(tmp_path / "model")
    with open(path / "weights.pt", "wb") as handle:
        torch.save({"weight": payload}, handle)
    with pytest.raises(ValueError, match=r"cannot load weights.*could run code"):
        CMIMTransformer(pretrained=path, max_epochs=0).fit(["CCO"])
    assert not marker.exists()


def test_pickled_estimator_loads_its_weights_safely(fitted, tmp_path):
    state = fitted.__getstate__()
    marker = tmp_path / "pwned"
    payload = RunsACommand(marker)
    buffer = io.BytesIO()
    torch.save({"weight": payload}, buffer)
    state["_model_weights"] = buffer.getvalue()
    est = CMIMTransformer.__new__(CMIMTransformer)
    with pytest.raises(ValueError, match="cannot load weights"):
        est.__setstate__(state)
    assert not marker.exists()


def test_estimator_fitted_on_a_missing_gpu_loads_on_the_cpu(smiles):
    est = CMIMTransformer(**TINY).fit(smiles)
    expected = est.transform(smiles)
    est.device_ = torch.device("cuda")  # as if fitted on a GPU machine
    blob = pickle.dumps(est)
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the fallback only happens without one")
    with pytest.warns(UserWarning, match="not available here; using the CPU") as caught:
        restored = pickle.loads(blob)
    assert restored.device_.type == "cpu" and caught[0].filename == __file__  # the user's line
    np.testing.assert_array_equal(restored.transform(smiles), expected)


def test_a_gpu_index_beyond_the_machines_gpus_falls_back_to_the_first(monkeypatch):
    from sklearn_cmim.nn.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a machine with one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.warns(UserWarning, match=r"'cuda:1' is not available here \(1 GPU\(s\)\); using cuda:0"):
        assert resolve_device("cuda:1") == torch.device("cuda", 0)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
