"""Every kind of bad input gets a clear error naming the item, or a NaN row when asked."""

import copy
import warnings

import numpy as np
import pytest
from rdkit import Chem

from sklearn_cmim import CMIMTransformer, UnknownTokenWarning
from tests.conftest import TINY


def test_invalid_smiles_raises_naming_index_and_value(fitted):
    with pytest.raises(ValueError, match=r"X\[2\] = 'C1CC' is not a valid molecule"):
        fitted.transform(["CCO", "CCN", "C1CC"])


def test_errors_nan_gives_a_nan_row_and_leaves_others_unchanged(fitted, smiles):
    est = CMIMTransformer(**{**TINY, "errors": "nan"}).fit(smiles)
    good = est.transform(smiles[:3])
    out = est.transform([smiles[0], "C1CC", smiles[1], None, smiles[2], float("nan")])
    assert np.isnan(out[[1, 3, 5]]).all()
    np.testing.assert_allclose(out[[0, 2, 4]], good, rtol=1e-5, atol=1e-5)


def test_fit_with_errors_nan_skips_bad_molecules(smiles):
    est = CMIMTransformer(**{**TINY, "errors": "nan"})
    clean = CMIMTransformer(**TINY).fit(smiles).transform(smiles)
    np.testing.assert_array_equal(est.fit(["C1CC", *smiles, "xyz"]).transform(smiles), clean)


def test_empty_input_raises(tiny, fitted):
    with pytest.raises(ValueError, match="empty"):
        tiny.fit([])
    with pytest.raises(ValueError, match="empty"):
        fitted.transform(np.array([], dtype=object))


@pytest.mark.parametrize("bad", [5, None, 3.5, b"CCO", ["CCO"]])
def test_item_that_is_not_a_molecule_raises_type_error_naming_index(fitted, bad):
    with pytest.raises(TypeError, match=r"X\[1\] = .* is neither a SMILES string nor an RDKit Mol"):
        fitted.transform(["CCO", bad])


def test_whitespace_inside_a_smiles_string_makes_it_a_bad_item(fitted):
    # RDKit reads "CCO c1ccccc1" as ethanol named "c1ccccc1": the benzene would vanish unseen.
    expected = r"X\[1\] = 'CCO c1ccccc1' is not a valid molecule: it contains whitespace"
    with pytest.raises(ValueError, match=expected):
        fitted.transform(["CCN", "CCO c1ccccc1"])
    lenient = copy.copy(fitted).set_params(errors="nan")
    out = lenient.transform(["CCO c1ccccc1", "C\tC", " CCO\n", "CCO"])
    assert np.isnan(out[:2]).all() and np.isfinite(out[2:]).all()
    np.testing.assert_array_equal(out[2], out[3])  # whitespace at the ends is no problem


def test_an_empty_mol_is_described_not_shown_as_blank(fitted):
    with pytest.raises(ValueError, match=r"^X\[0\] = an empty RDKit Mol \(no atoms\) is not a valid"):
        fitted.transform([Chem.Mol(), "CCO"])


def test_single_string_instead_of_a_sequence_is_refused(fitted):
    with pytest.raises(TypeError, match="not a single one"):
        fitted.transform("CCO")


def test_molecules_over_max_length_are_rejected_not_truncated():
    long_chain = "C" * 30
    est = CMIMTransformer(**{**TINY, "max_length": 16}).fit(["CCO", "CCN"])
    with pytest.raises(ValueError, match=r"X\[1\] = 'CCCC.*32 tokens.*max_length=16.*errors='nan'"):
        est.transform(["CC", long_chain])
    est.set_params(errors="nan")
    out = est.transform(["CC", long_chain])
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()


def test_unseen_tokens_become_unk_with_one_warning(smiles):
    est = CMIMTransformer(**TINY).fit(["CCO", "CCCN", "OCCO"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = est.transform(["CCBr", "CBr", "CCl"])
    unk = [w for w in caught if "<unk>" in str(w.message)]
    assert len(unk) == 1
    assert "3 tokens" in str(unk[0].message) and "'Br' x2" in str(unk[0].message)
    assert np.isfinite(out).all()


def test_fit_transform_reads_x_once_and_warns_once(tmp_path):
    pretrained = CMIMTransformer(**TINY).fit(["CCO", "CCCN", "OCCO"]).save_pretrained(tmp_path / "m")
    X = ["CCBr", "CBr", "CCl"]
    with pytest.warns(UnknownTokenWarning) as caught:
        Z = CMIMTransformer(pretrained=pretrained, max_epochs=0).fit_transform(X)
    assert len(caught) == 1 and caught[0].message.counts == {"Br": 2, "Cl": 1}
    assert caught[0].filename == __file__  # the user's line, not one inside the package
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownTokenWarning)
        separately = CMIMTransformer(pretrained=pretrained, max_epochs=0).fit(X).transform(X)
    np.testing.assert_array_equal(Z, separately)
    fitted = CMIMTransformer(pretrained=pretrained, max_epochs=0).fit(["CCO"]).set_output(transform="pandas")
    with pytest.warns(UnknownTokenWarning) as caught:
        fitted.transform(X)  # through scikit-learn's set_output wrapper
    assert caught[0].filename == __file__


@pytest.mark.parametrize("param, value", [("errors", "ignore"), ("embedding", "mean"),
                                          ("informative_pooling", "sum"), ("precision", "fp8"),
                                          ("contrastive_positive", "other")])
def test_invalid_parameters_raise_clear_errors(smiles, param, value):
    with pytest.raises(ValueError, match=rf"'{param}' parameter of CMIMTransformer.*Got '{value}'"):
        CMIMTransformer(**{**TINY, param: value}).fit(smiles)


def test_inverse_transform_of_non_finite_rows(fitted):
    Z = np.zeros((3, 8), dtype=np.float32)
    Z[1] = np.nan
    with pytest.raises(ValueError, match=r"X\[1\] holds non-finite values.*errors='nan'"):
        fitted.inverse_transform(Z)
    est = CMIMTransformer(**{**TINY, "errors": "nan"}).fit(["CCO", "CCN"])
    out = est.inverse_transform(Z)
    # Row 1 is skipped; rows 0 and 2 are decoded (the same latent, so the same decoding).
    assert out[1] is None and out[0] == out[2] == est.inverse_transform(Z[:1])[0]
    # A finite value that overflows float32 is named as such, with no RuntimeWarning on the way.
    big = np.zeros((2, 8))
    big[1, 3] = 1e39
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"X\[1\] holds values beyond float32's range"):
            fitted.inverse_transform(big)


def test_inverse_transform_rejects_wrong_width(fitted):
    with pytest.raises(ValueError, match="shape"):
        fitted.inverse_transform(np.zeros((2, 5)))


def test_descriptors_refuse_molecules_too_large_to_finish_naming_them():
    from sklearn_cmim.descriptors import MAX_ATOMS, RDKitDescriptorsTransformer

    # Ipc's cost grows as the fourth power of the size: a 5,000-atom chain would run for days.
    large = "C" * (MAX_ATOMS + 1)
    with pytest.raises(ValueError, match=rf"X\[1\] = 'CCC.*it has {MAX_ATOMS + 1} heavy atoms"):
        RDKitDescriptorsTransformer().transform(["CCO", large, "C1CC", "C" * 5000])
    X = RDKitDescriptorsTransformer(descriptors=["MolWt"], errors="nan").transform(
        ["CCO", large, "C" * MAX_ATOMS])
    assert np.isnan(X[1]).all() and np.isfinite(X[[0, 2]]).all()
