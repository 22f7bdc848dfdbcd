"""Declarative parameter checks (scikit-learn's ``_parameter_constraints``): every parameter
refuses a bad value, before any work, with an error naming the parameter and the value."""

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from sklearn_cmim import (
    CMIMTransformer,
    ECFPTransformer,
    RDKitDescriptorsTransformer,
    Standardizer,
    embedding,
    saving,
)
from tests.conftest import TINY

# One representative bad value per parameter: out of range, wrong type or unknown option.
BAD = [
    ("pretrained", 3),
    ("contrastive_weight", -0.5),
    ("contrastive_weight", True),
    ("temperature", 0.0),
    ("contrastive_positive", "other"),
    ("d_model", 0),
    ("d_model", True),  # Python's 1, but no one means a model one unit wide
    ("n_heads", 2.5),
    ("d_ff", -1),
    ("n_encoder_layers", 0),
    ("n_decoder_layers", 0),
    ("n_latents", 0),
    ("latent_dim", "8"),
    ("dropout", 1.0),
    ("max_length", 2),
    ("max_length", 10**9),  # its position table would not fit in memory
    ("max_epochs", -1),
    ("batch_size", 0),
    ("batch_size", True),
    ("learning_rate", 0.0),
    ("weight_decay", -1e-3),
    ("mim_warmup_steps", 1.5),
    ("inference_batch_size", 0),
    ("embedding", "mean"),
    ("informative_layers", "first"),
    ("informative_pooling", "sum"),
    ("informative_with_latent", "yes"),
    ("standardizer", "default"),
    ("device", ["cpu"]),
    ("precision", "fp16"),
    ("n_threads", 0),
    ("random_state", "seed"),
    ("verbose", -1),
    ("errors", "ignore"),
]
NAN = [("temperature", float("nan")), ("learning_rate", float("nan")), ("dropout", float("nan"))]

# Documented values other than the defaults, and NumPy scalars as a parameter grid gives them.
GOOD = [
    ("pretrained", "cmim-broad"),
    ("pretrained", Path("some/model/directory")),
    ("contrastive_weight", 0.0),
    ("contrastive_positive", "mean"),
    ("n_heads", np.int64(2)),
    ("dropout", 0.0),
    ("max_epochs", 0),
    ("learning_rate", np.float32(1e-3)),
    ("weight_decay", 0),
    ("mim_warmup_steps", 0),
    ("embedding", "latent"),
    ("informative_layers", "mean"),
    ("informative_pooling", "mean"),
    ("informative_with_latent", False),
    ("standardizer", Standardizer(isomeric=True)),
    ("device", "cpu"),
    ("device", "cuda:1"),
    ("device", torch.device("cpu")),
    ("precision", "bf16"),
    ("precision", "fp32"),
    ("n_threads", np.int64(2)),
    ("random_state", 0),
    ("random_state", np.random.RandomState(0)),
    ("verbose", True),
    ("verbose", 2),
    ("errors", "nan"),
]


def names_parameter_and_value(estimator: str, param: str, value) -> str:
    return rf"The '{param}' parameter of {estimator} must be .*\. Got {re.escape(repr(value))} instead"


@pytest.fixture
def no_work(monkeypatch):
    """Make reading X, choosing a device, loading a model or training fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the parameters were checked")

    # Where the work is done: fit in sklearn_cmim.embedding, from_pretrained in sklearn_cmim.saving.
    for module, names in ((embedding, ("as_items", "resolve_device", "load_pretrained", "fit_model",
                                       "CMIMModel")),
                          (saving, ("resolve_device", "load_pretrained"))):
        for name in names:
            monkeypatch.setattr(module, name, refuse)


def test_every_parameter_has_a_constraint_and_a_bad_value_here():
    parameters = set(CMIMTransformer().get_params())
    assert set(CMIMTransformer._parameter_constraints) == parameters
    assert {param for param, _ in BAD} == parameters


def test_the_no_work_fixture_catches_work(no_work):
    # Otherwise the tests below that use it would pass for the wrong reason.
    with pytest.raises(AssertionError, match="work started"):
        CMIMTransformer(**TINY).fit(["CCO"])
    with pytest.raises(AssertionError, match="work started"):
        CMIMTransformer.from_pretrained("cmim-broad")


@pytest.mark.parametrize(("param", "value"), BAD + NAN)
def test_fit_refuses_a_bad_value_before_any_work(no_work, param, value):
    with pytest.raises(ValueError, match=names_parameter_and_value("CMIMTransformer", param, value)):
        CMIMTransformer(**{**TINY, param: value}).fit(["CCO", "CCN"])


@pytest.mark.parametrize(("param", "value"), [("embedding", "mean"), ("max_epochs", -1),
                                              ("device", ["cpu"])])
def test_from_pretrained_and_fit_transform_refuse_a_bad_value_before_any_work(no_work, param, value):
    expected = names_parameter_and_value("CMIMTransformer", param, value)
    with pytest.raises(ValueError, match=expected):
        CMIMTransformer.from_pretrained("cmim-broad", **{param: value})
    with pytest.raises(ValueError, match=expected):
        CMIMTransformer(**{**TINY, param: value}).fit_transform(["CCO", "CCN"])


def test_the_parameter_is_checked_before_the_model_is_looked_for():
    with pytest.raises(ValueError, match="'embedding' parameter"):
        CMIMTransformer.from_pretrained("no-such-model", embedding="nope")


def test_a_wrong_type_is_also_a_type_error(no_work):
    with pytest.raises(TypeError, match="'n_heads' parameter"):
        CMIMTransformer(n_heads="4").fit(["CCO"])


def test_defaults_and_documented_values_pass():
    CMIMTransformer()._check_params()
    for param, value in GOOD:
        CMIMTransformer(**{param: value})._check_params()


def test_a_fit_with_non_default_values_and_numpy_scalars(smiles):
    est = CMIMTransformer(**{**TINY, "n_heads": np.int64(2), "max_epochs": np.int64(1),
                             "learning_rate": np.float64(1e-3), "contrastive_positive": "mean",
                             "informative_layers": "mean", "informative_pooling": "mean",
                             "precision": "fp32", "device": "cpu", "errors": "nan"})
    assert est.fit_transform(smiles).shape == (len(smiles), 8 + 32)


def test_d_model_must_be_a_multiple_of_n_heads_before_any_work(no_work):
    expected = "d_model must be a multiple of n_heads, got d_model=30 and n_heads=4"
    with pytest.raises(ValueError, match=expected):
        CMIMTransformer(**{**TINY, "d_model": 30, "n_heads": 4}).fit(["CCO"])


def test_with_pretrained_the_architecture_parameters_are_not_used(fitted, tmp_path):
    directory = fitted.save_pretrained(tmp_path / "tiny")
    est = CMIMTransformer(pretrained=directory, max_epochs=0, d_model=30, n_heads=4).fit(["CCO"])
    assert est.model_.config.d_model == 32


def test_device_must_name_a_torch_device_before_any_work(no_work):
    with pytest.raises(ValueError, match=r"device must name a torch device .*got 'gpu0'"):
        CMIMTransformer(**{**TINY, "device": "gpu0"}).fit(["CCO"])


@pytest.mark.parametrize(("param", "value"), [("embedding", "mean"), ("informative_pooling", "sum"),
                                              ("inference_batch_size", 0), ("errors", "skip")])
def test_fitted_methods_check_what_set_params_changed(fitted, param, value):
    est = copy.deepcopy(fitted).set_params(**{param: value})
    expected = names_parameter_and_value("CMIMTransformer", param, value)
    for method, args in [("transform", (["CCO"],)), ("score", (["CCO"],)),
                         ("get_feature_names_out", ()), ("inverse_transform", (np.zeros((1, 8)),)),
                         ("sample", (1,))]:
        with pytest.raises(ValueError, match=expected):
            getattr(est, method)(*args)


def test_fitted_methods_ignore_training_parameters(fitted):
    # Only what inference reads is checked again: a bad training value matters at the next fit.
    est = copy.deepcopy(fitted).set_params(learning_rate=-1.0)
    assert est.transform(["CCO"]).shape == (1, 8 + 2 * 32)
    with pytest.raises(ValueError, match="'learning_rate' parameter"):
        est.fit(["CCO"])


# --------------------------------------------------------------- the baseline transformers
@pytest.mark.parametrize(("param", "value"), [("radius", -1), ("radius", 2.5), ("radius", True),
                                              ("radius", 2**32), ("n_bits", 0), ("n_bits", False),
                                              ("errors", "ignore")])
def test_ecfp_refuses_bad_values_in_fit_and_unfitted_transform(param, value):
    est = ECFPTransformer(**{param: value})
    expected = names_parameter_and_value("ECFPTransformer", param, value)
    with pytest.raises(ValueError, match=expected):
        est.fit(["CCO"])
    with pytest.raises(ValueError, match=expected):
        est.transform(["CCO"])


def test_ecfp_radius_past_the_molecules_size_gives_the_same_bits_without_looping(monkeypatch):
    from rdkit.Chem import rdFingerprintGenerator

    smiles = ["CCO", "c1ccccc1CC(=O)O"]
    expected = ECFPTransformer(radius=8, n_bits=64).transform(smiles)
    generator = rdFingerprintGenerator.GetMorganGenerator

    def morgan(radius, **kwargs):
        # RDKit steps through every radius it is given: 2**32 - 1 of them took minutes for ethanol.
        assert radius == 10, radius  # the larger molecule's atoms
        return generator(radius=radius, **kwargs)

    monkeypatch.setattr(rdFingerprintGenerator, "GetMorganGenerator", morgan)
    np.testing.assert_array_equal(ECFPTransformer(radius=2**32 - 1, n_bits=64).transform(smiles), expected)


def test_ecfp_takes_radius_0_and_numpy_integers():
    assert ECFPTransformer(radius=0, n_bits=16).fit_transform(["CCO"]).shape == (1, 16)
    X = ECFPTransformer(radius=np.int64(1), n_bits=np.int64(32)).transform(["CCO", "c1ccccc1"])
    assert X.shape == (2, 32)


@pytest.mark.parametrize(("param", "value"), [("descriptors", "MolWt"), ("standardizer", "default"),
                                              ("errors", "ignore")])
def test_descriptors_refuse_bad_values_in_every_method(param, value):
    est = RDKitDescriptorsTransformer(**{param: value})
    expected = names_parameter_and_value("RDKitDescriptorsTransformer", param, value)
    for method, args in [("fit", (["CCO"],)), ("transform", (["CCO"],)), ("get_feature_names_out", ())]:
        with pytest.raises(ValueError, match=expected):
            getattr(est, method)(*args)


def test_descriptors_take_names_as_a_list_or_array_and_still_name_unknown_ones():
    est = RDKitDescriptorsTransformer(descriptors=np.array(["MolWt", "NumHDonors"]),
                                      standardizer=Standardizer(), errors="nan")
    assert est.fit_transform(["CCO"]).shape == (1, 2)
    with pytest.raises(ValueError, match=r"unknown RDKit descriptors \['NoSuchThing'\]"):
        RDKitDescriptorsTransformer(descriptors=["MolWt", "NoSuchThing"]).transform(["CCO"])


def test_descriptors_refuse_a_set_whose_order_would_shuffle_the_columns_between_processes():
    # String hashes are salted per process: a pipeline fitted in one would read swapped columns in another.
    est = RDKitDescriptorsTransformer(descriptors={"MolWt", "TPSA"})
    for method, args in [("fit", (["CCO"],)), ("transform", (["CCO"],)), ("get_feature_names_out", ())]:
        with pytest.raises(ValueError, match="not a set"):
            getattr(est, method)(*args)
