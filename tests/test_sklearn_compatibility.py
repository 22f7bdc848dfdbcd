"""scikit-learn's estimator contract, checked on SMILES input (the checks in
``sklearn.utils.estimator_checks`` assume numeric arrays, so each is restated here)."""

import copy
import pickle

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV

from sklearn_cmim import CMIMTransformer, ECFPTransformer
from tests.conftest import TINY


def test_no_work_and_no_extra_attributes_in_init():
    est = CMIMTransformer(**TINY)
    assert set(vars(est)) == set(est.get_params())


def test_clone_and_get_set_params_invariance():
    est = CMIMTransformer(**TINY, contrastive_weight=0.3)
    cloned = clone(est)
    assert cloned.get_params() == est.get_params()
    assert est.set_params(temperature=0.2) is est and est.temperature == 0.2
    assert clone(est).get_params() == est.get_params()


def test_fit_returns_self_and_sets_learned_attributes(tiny, smiles):
    assert tiny.fit(smiles) is tiny
    for attribute in ("model_", "vocabulary_", "standardizer_", "device_", "precision_", "history_"):
        assert hasattr(tiny, attribute)
    assert [h["epoch"] for h in tiny.history_] == [1, 2]
    assert {"total", "rec", "mim", "con", "tokens_per_s", "molecules_per_s"} <= set(tiny.history_[0])


def test_fit_is_idempotent_with_a_fixed_random_state(smiles):
    a = CMIMTransformer(**TINY).fit(smiles).transform(smiles)
    est = CMIMTransformer(**TINY)
    est.fit(smiles[:5])
    b = est.fit(smiles).transform(smiles)
    np.testing.assert_array_equal(a, b)


def test_different_random_states_give_different_models(smiles):
    a = CMIMTransformer(**{**TINY, "random_state": 0}).fit(smiles).transform(smiles)
    b = CMIMTransformer(**{**TINY, "random_state": 1}).fit(smiles).transform(smiles)
    assert not np.allclose(a, b)


def test_fit_transform_equals_fit_then_transform(smiles):
    a = CMIMTransformer(**TINY).fit_transform(smiles)
    b = CMIMTransformer(**TINY).fit(smiles).transform(smiles)
    np.testing.assert_array_equal(a, b)


def test_transform_output_type_and_feature_names(fitted, smiles):
    out = fitted.transform(smiles)
    assert out.dtype == np.float32 and out.shape == (len(smiles), 8 + 2 * 32)  # mu, mean, max
    assert np.isfinite(out).all()
    names = fitted.get_feature_names_out()
    assert len(names) == out.shape[1] and names[0] == "latent0" and names[8] == "decoder_mean0"
    assert names[8 + 32] == "decoder_max0"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_embedding_does_not_depend_on_the_rest_of_the_batch(smiles, precision):
    est = CMIMTransformer(**TINY, precision=precision).fit(smiles)
    together = est.transform(smiles)
    alone = np.vstack([est.transform([s]) for s in smiles])
    tolerance = 1e-5 if precision == "fp32" else 2e-2
    np.testing.assert_allclose(together, alone, atol=tolerance, rtol=tolerance)


def test_pickle_round_trip_gives_equal_output(fitted, smiles):
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.transform(smiles), fitted.transform(smiles))
    assert restored.get_params() == fitted.get_params()


def test_accepts_lists_arrays_series_frames_and_mols(fitted, smiles):
    expected = fitted.transform(smiles)
    for X in (np.array(smiles), np.array(smiles).reshape(-1, 1), pd.Series(smiles),
              pd.DataFrame({"smiles": smiles}), tuple(smiles),
              [Chem.MolFromSmiles(s) for s in smiles],
              [[s] for s in smiles], pd.DataFrame({"smiles": smiles})[["smiles"]].values.tolist()):
        np.testing.assert_allclose(fitted.transform(X), expected, rtol=1e-6, atol=1e-6)
    # Rows of another width are a shape error, not a NaN row each.
    lenient = copy.deepcopy(fitted).set_params(errors="nan")
    for rows in ([["CCO", 1.0], ["CCN", 2.0]], [["CCO"], ["CCN", "CCC"]]):
        with pytest.raises(ValueError, match=r"one column of molecules, got rows of \[\d(, 2)?\] items"):
            lenient.transform(rows)


def test_set_output_pandas(smiles):
    est = CMIMTransformer(**TINY).set_output(transform="pandas").fit(smiles)
    frame = est.transform(pd.Series(smiles, index=range(100, 100 + len(smiles))))
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(est.get_feature_names_out())
    assert list(frame.index) == list(range(100, 100 + len(smiles)))


def test_tags_declare_string_input():
    tags = CMIMTransformer().__sklearn_tags__()
    assert tags.input_tags.string and not tags.input_tags.two_d_array and tags.requires_fit


@pytest.mark.parametrize("method", ["transform", "score", "get_feature_names_out", "sample"])
def test_methods_before_fit_raise_not_fitted(method):
    est = CMIMTransformer(**TINY)
    args = {"transform": (["CCO"],), "score": (["CCO"],), "get_feature_names_out": (),
            "sample": (2,)}[method]
    with pytest.raises(NotFittedError):
        getattr(est, method)(*args)
    with pytest.raises(NotFittedError):
        est.inverse_transform(np.zeros((1, 8)))


def test_unsupervised_grid_search_uses_reconstruction_score(smiles):
    search = GridSearchCV(CMIMTransformer(**TINY), {"contrastive_weight": [0.0, 1.0]}, cv=2)
    search.fit(smiles)
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)


def test_fingerprints_and_descriptors_name_their_columns_in_a_union_with_pandas_output():
    from sklearn.pipeline import make_union

    from sklearn_cmim import ECFPTransformer
    from sklearn_cmim.descriptors import RDKitDescriptorsTransformer

    union = make_union(ECFPTransformer(radius=1, n_bits=4),
                       RDKitDescriptorsTransformer(descriptors=["MolWt"])).set_output(transform="pandas")
    frame = union.fit_transform(pd.Series(["CCO", "c1ccccc1"], index=["ethanol", "benzene"]))
    assert list(frame.columns) == [*(f"ecfptransformer__ecfp2_{bit}" for bit in range(4)),
                                   "rdkitdescriptorstransformer__MolWt"]
    assert list(frame.index) == ["ethanol", "benzene"]


def test_tags_say_the_output_is_float32_whatever_the_input():
    from sklearn_cmim.descriptors import RDKitDescriptorsTransformer

    for estimator in (CMIMTransformer(), ECFPTransformer(), RDKitDescriptorsTransformer()):
        assert estimator.__sklearn_tags__().transformer_tags.preserves_dtype == []


def test_from_pretrained_refuses_a_second_model_and_descriptors_a_list_that_names_no_column_twice():
    from sklearn_cmim.descriptors import RDKitDescriptorsTransformer

    with pytest.raises(TypeError, match="not as pretrained="):
        CMIMTransformer.from_pretrained("cmim-broad", pretrained="mim-broad")
    with pytest.raises(ValueError, match="descriptors is empty"):
        RDKitDescriptorsTransformer(descriptors=[]).fit(["CCO"])
    for names in (["MolWt", "TPSA", "MolWt"], np.array(["MolWt", "TPSA", "MolWt"])):
        with pytest.raises(ValueError, match=r"descriptors names \['MolWt'\] more than once"):
            RDKitDescriptorsTransformer(descriptors=names).fit(["CCO"])
    with pytest.raises(ValueError, match="descriptors is empty"):
        RDKitDescriptorsTransformer(descriptors=np.array([], dtype=str)).fit(["CCO"])
