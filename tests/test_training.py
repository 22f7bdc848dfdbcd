"""Training behaviour: failure modes, interruption, and that learning actually happens."""

import copy

import numpy as np
import pytest
import torch

import sklearn_cmim.decoding as decoding
import sklearn_cmim.nn.inference as inference
import sklearn_cmim.training.fit as training
from sklearn_cmim import CMIMTransformer
from sklearn_cmim.chem.batching import length_bucketed_batches, pad
from sklearn_cmim.nn.model import CMIMModel, ModelConfig
from sklearn_cmim.nn.sampling import PRIOR_TEMPERATURE
from tests.conftest import TINY


def test_loss_goes_down(smiles):
    est = CMIMTransformer(**{**TINY, "max_epochs": 8, "learning_rate": 3e-3}).fit(smiles)
    assert est.history_[-1]["rec"] < 0.8 * est.history_[0]["rec"]


def test_non_finite_loss_names_epoch_and_step_and_keeps_previous_fit(fitted, smiles, monkeypatch):
    before = fitted.transform(smiles)
    real = training.total_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        if calls["n"] == 5:  # epoch 2, step 2 with 24 molecules in batches of 8
            out["total"] = out["total"] * float("nan")
        return out

    monkeypatch.setattr(training, "total_loss", poisoned)
    est = CMIMTransformer(**TINY)
    with pytest.raises(FloatingPointError, match="epoch 2, step 2"):
        est.fit(smiles)
    assert not hasattr(est, "model_")
    calls["n"] = 0
    with pytest.raises(FloatingPointError):
        fitted.fit(smiles)  # a refit that fails leaves the earlier fit in place
    np.testing.assert_array_equal(fitted.transform(smiles), before)


def test_a_failed_step_changes_no_weight():
    config = ModelConfig(vocab_size=10, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1,
                         n_decoder_layers=1, latent_dim=4, dropout=0.0)
    model = CMIMModel(config)
    settings = training.TrainSettings()
    optimizer = training.make_optimizer(model, settings)
    scheduler = training.make_scheduler(optimizer, 10, settings)
    ids = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])
    training.train_step(model, ids, optimizer, scheduler, 0, settings, torch.autocast("cpu", enabled=False))
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.to_posterior.bias.fill_(float("inf"))
        snapshot["to_posterior.bias"].fill_(float("inf"))
    with pytest.raises(training.NonFiniteLossError):
        training.train_step(model, ids, optimizer, scheduler, 1, settings,
                            torch.autocast("cpu", enabled=False))
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshot[name], equal_nan=True)


def _tiny_training_setup():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=10, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1,
                         n_decoder_layers=1, latent_dim=4, dropout=0.0)
    model = CMIMModel(config)
    settings = training.TrainSettings()
    optimizer = training.make_optimizer(model, settings)
    return model, settings, optimizer, training.make_scheduler(optimizer, 10, settings)


def test_skipper_steps_exactly_as_the_host_checked_step_does():
    ids = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])
    no_amp = torch.autocast("cpu", enabled=False)
    weights = []
    for skipper in (None, training.StepSkipper(torch.device("cpu"))):
        model, settings, optimizer, scheduler = _tiny_training_setup()
        for step in range(3):
            torch.manual_seed(step)  # the same latent noise for both runs
            training.train_step(model, ids, optimizer, scheduler, step, settings, no_amp, skipper=skipper)
        weights.append(model.state_dict())
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=0)


def test_skipper_skips_a_non_finite_step_on_the_device_and_reports_it_once():
    model, settings, optimizer, scheduler = _tiny_training_setup()
    skipper = training.StepSkipper(torch.device("cpu"))
    ids = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])
    no_amp = torch.autocast("cpu", enabled=False)
    training.train_step(model, ids, optimizer, scheduler, 0, settings, no_amp, skipper=skipper)
    assert not skipper.skipped()
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    moments = [state["exp_avg"].clone() for state in optimizer.state.values()]
    with torch.no_grad():
        model.to_posterior.bias.fill_(float("inf"))
        snapshot["to_posterior.bias"].fill_(float("inf"))
    training.train_step(model, ids, optimizer, scheduler, 1, settings, no_amp, skipper=skipper)  # no raise
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshot[name], equal_nan=True, rtol=0, atol=0)
    for state, before in zip(optimizer.state.values(), moments, strict=True):
        torch.testing.assert_close(state["exp_avg"], before, rtol=0, atol=0)
    assert skipper.skipped() and not skipper.skipped()  # reported, then reset


def test_keyboard_interrupt_during_fit_leaves_estimator_as_it_was(fitted, smiles, monkeypatch):
    before = fitted.transform(smiles)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fitted.fit(smiles)
    np.testing.assert_array_equal(fitted.transform(smiles), before)


def test_length_bucketed_batches_cover_every_index_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, size=1000)
    batches = length_bucketed_batches(lengths, 32, rng, pool=10)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.25 * np.ptp(lengths)  # far tighter than random batches


def test_pad_right_pads_each_row_with_its_own_ids():
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, 50, size=n).tolist() for n in rng.integers(1, 30, size=200)]
    padded = pad(sequences, pad_id=-1)
    assert padded.dtype == torch.long and padded.shape == (200, max(map(len, sequences)))
    for row, sequence in zip(padded.tolist(), sequences, strict=True):
        assert row == sequence + [-1] * (padded.shape[1] - len(sequence))


def test_verbose_prints_one_line_per_epoch(smiles, capsys):
    CMIMTransformer(**{**TINY, "verbose": 1}).fit(smiles)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and "rec" in lines[0] and "mol/s" in lines[0]


@pytest.mark.slow
def test_tiny_model_overfits_32_molecules_to_exact_reconstruction(esol):
    smiles = esol[0][:32]
    # fp32 and one thread: the same arithmetic on every machine ("auto" trains in bf16 only where
    # the CPU has it, and bf16 left 3 of the 32 short after 200 epochs on one such CPU).
    est = CMIMTransformer(d_model=128, d_ff=256, n_heads=8, n_encoder_layers=1, n_decoder_layers=2,
                          latent_dim=32, batch_size=8, learning_rate=3e-3, dropout=0.0,
                          mim_warmup_steps=0, max_epochs=200, random_state=0, embedding="latent",
                          precision="fp32", n_threads=1)
    est.fit(smiles)
    decoded = est.inverse_transform(est.transform(smiles))
    assert est.score(smiles) == 1.0
    assert list(decoded) == [est.standardizer_(s) for s in smiles]


def test_sample_is_reproducible(fitted):
    a, b = fitted.sample(4, random_state=0), fitted.sample(4, random_state=0)
    assert a.shape == (4,) and list(a) == list(b)


def test_sample_draws_and_decodes_a_block_at_a_time_with_the_same_draws(fitted, smiles, monkeypatch):
    whole = {kind: fitted.sample(7, random_state=0, **kwargs)
             for kind, kwargs in [("fitted", {}), ("standard", {"prior": "standard"}),
                                  ("around", {"around": smiles[:3], "sigma": 0.5})]}
    monkeypatch.setattr(decoding, "SAMPLE_BLOCK", 2)
    small = copy.deepcopy(fitted).set_params(inference_batch_size=2)
    sizes, decode = [], type(small)._decode
    monkeypatch.setattr(type(small), "_decode",
                        lambda self, z, bad: sizes.append(len(z)) or decode(self, z, bad))
    assert list(small.sample(7, random_state=0)) == list(whole["fitted"])
    assert sizes == [2, 2, 2, 1]  # memory does not grow with n_samples
    assert list(small.sample(7, random_state=0, prior="standard")) == list(whole["standard"])
    assert list(small.sample(7, random_state=0, around=smiles[:3], sigma=0.5)) == list(whole["around"])


def test_fit_fits_the_latent_prior_that_sample_draws_from(fitted, smiles):
    latent = copy.deepcopy(fitted).set_params(embedding="latent")
    means = latent.transform(smiles).astype(np.float64)
    prior = fitted.latent_prior_
    assert prior.n_molecules == len(smiles) and prior.temperature == PRIOR_TEMPERATURE
    np.testing.assert_allclose(prior.mean, means.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(prior.std, means.std(axis=0, ddof=1), rtol=1e-4, atol=1e-6)
    # By default draws come from the fitted prior; "standard" draws N(0, I), as training assumed.
    fitted_draws = prior.draw(5, np.random.RandomState(0))
    assert list(fitted.sample(5, random_state=0)) == list(latent.inverse_transform(fitted_draws))
    standard = np.random.RandomState(0).standard_normal((5, 8)).astype(np.float32)
    from_standard = fitted.sample(5, random_state=0, prior="standard")
    assert list(from_standard) == list(latent.inverse_transform(standard))
    with pytest.raises(ValueError, match="prior must be 'fitted' or 'standard', got 'normal'"):
        fitted.sample(2, prior="normal")


def test_the_latent_prior_is_fitted_to_a_bounded_sample_of_large_training_sets(monkeypatch, smiles):
    monkeypatch.setattr(inference, "PRIOR_MOLECULES", 10)
    prior = CMIMTransformer(**{**TINY, "max_epochs": 1}).fit(smiles).latent_prior_
    assert prior.n_molecules == 10
    again = CMIMTransformer(**{**TINY, "max_epochs": 1}).fit(smiles).latent_prior_
    assert again == prior  # the sample is drawn with random_state


def test_sample_around_molecules_is_centred_on_their_latent_means(fitted, smiles):
    seeds = smiles[:2]
    # With no noise every draw is the seed's latent mean: its decoding, repeated per sample.
    latent = copy.deepcopy(fitted).set_params(embedding="latent")
    own = latent.inverse_transform(latent.transform(seeds))
    assert list(fitted.sample(3, around=seeds, sigma=0.0)) == [own[0]] * 3 + [own[1]] * 3
    a = fitted.sample(3, random_state=0, around=seeds, sigma=0.5)
    assert a.shape == (6,) and list(a) == list(fitted.sample(3, random_state=0, around=seeds, sigma=0.5))
    with pytest.raises(ValueError, match=r"X\[1\].*'C1CC'"):
        fitted.sample(2, around=["CCO", "C1CC"])
    for sigma in (-1.0, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match="sigma must be a finite non-negative number"):
            fitted.sample(2, around=["CCO"], sigma=sigma)
    # A finite sigma whose draws overflow float32 would decode to None silently.
    with pytest.raises(ValueError, match="too large: the latents it draws overflow float32"):
        copy.deepcopy(fitted).set_params(errors="nan").sample(2, around=["CCO"], sigma=1e39)


def test_sample_around_a_bad_seed_gives_none_with_errors_nan(fitted, monkeypatch):
    # Every latent the tiny model is asked for decodes to "C", so None marks the bad seed alone.
    finished = [fitted.vocabulary_.index["C"], fitted.vocabulary_.eos_id]
    monkeypatch.setattr(type(fitted.model_), "generate",
                        lambda self, z, bos_id, eos_id, max_length=None: torch.tensor([finished] * len(z)))
    lenient = copy.deepcopy(fitted).set_params(errors="nan")
    samples = lenient.sample(2, random_state=0, around=["CCO", "C1CC", "CCN"], sigma=0.1)
    assert list(samples) == ["C", "C", None, None, "C", "C"]


def test_the_informative_recipe_is_read_at_transform_time(fitted, smiles):
    # A fitted estimator embeds with whatever recipe set_params gives it, so GridSearchCV can search it.
    estimator = copy.deepcopy(fitted)
    latent = estimator.set_params(embedding="latent").transform(smiles[:5])
    features = {}
    for layers in ("last", "mean"):
        for with_latent in (True, False):
            estimator.set_params(embedding="informative", informative_layers=layers,
                                 informative_pooling="mean_max", informative_with_latent=with_latent)
            X = estimator.transform(smiles[:5])
            assert X.shape[1] == len(estimator.get_feature_names_out())
            features[layers, with_latent] = X
        with_mu, without = features[layers, True], features[layers, False]
        np.testing.assert_allclose(with_mu[:, :latent.shape[1]], latent, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(with_mu[:, latent.shape[1]:], without, rtol=1e-5, atol=1e-6)
    # TINY has one decoder layer, whose mean is itself; over the tokens, the max is never below the mean.
    np.testing.assert_allclose(features["last", False], features["mean", False], rtol=1e-5, atol=1e-6)
    mean, maximum = np.split(features["last", False], 2, axis=1)
    assert (maximum >= mean - 1e-6).all() and (maximum > mean + 1e-3).any()


def test_latent_vectors_decode_whatever_the_embedding_setting(fitted, smiles):
    latent = copy.deepcopy(fitted).set_params(embedding="latent")
    Z = latent.transform(smiles[:2])
    bare = copy.deepcopy(fitted).set_params(embedding="informative", informative_with_latent=False)
    assert list(bare.inverse_transform(Z)) == list(latent.inverse_transform(Z))
    informative = bare.transform(smiles[:2])
    assert informative.shape[1] != Z.shape[1]
    with pytest.raises(ValueError, match="hold no latent part to decode"):
        bare.inverse_transform(informative)
    # Mean-pooled decoder states as wide as the latent (32 = 4 x 8) could pass for latent vectors.
    same = CMIMTransformer(**{**TINY, "n_latents": 4, "informative_pooling": "mean",
                              "informative_with_latent": False}).fit(smiles[:8])
    assert same.transform(smiles[:2]).shape[1] == 4 * TINY["latent_dim"]
    with pytest.raises(ValueError, match="so Z is ambiguous: set embedding='latent'"):
        same.inverse_transform(same.transform(smiles[:2]))


@pytest.mark.parametrize("n_samples", [0, -1, 1.5, "2", True, None])
def test_sample_refuses_a_count_that_is_not_a_positive_integer(fitted, n_samples):
    with pytest.raises(ValueError, match=rf"n_samples must be a positive integer, got {n_samples!r}"):
        fitted.sample(n_samples)
