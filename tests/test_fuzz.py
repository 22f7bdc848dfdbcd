"""Fuzzed input through ``fit``, ``transform``, ``inverse_transform`` and ``cmim embed``.

Whatever comes in, the only errors are the documented ones (``ValueError`` or ``TypeError`` naming
the first bad item as ``X[i]`` and showing its value), ``errors="nan"`` gives exactly the bad
items NaN rows, nothing hangs, and a good item gets the embedding it gets on its own whatever
surrounds it. In fp32 that holds up to rounding (~1e-7): a batch of another shape rounds the
last bits differently; in bf16 the difference is ~1e-3, which is why these tests use fp32.
"""

from __future__ import annotations

import contextlib
import copy
import faulthandler
import io
import os
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from rdkit import Chem

from sklearn_cmim import CMIMTransformer, cli
from sklearn_cmim.chem.smiles_files import read_smiles
from sklearn_cmim.chem.tokenizer import tokenize
from sklearn_cmim.datasets import load_esol
from sklearn_cmim.file_embedding import TOO_LONG, UNREADABLE, describe_bad
from tests.conftest import TINY

pytestmark = [pytest.mark.filterwarnings("ignore:.*read as <unk>:UserWarning"),
              pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")]

MOLECULENET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "moleculenet"
ESOL = load_esol()[0]
HANG_SECONDS = 120


def fuzz(max_examples: int):
    # In CI a fixed sequence of examples, so that a run fails for a change and not for a lucky
    # draw; locally every run explores new inputs (and replays the last failure first). The hang
    # guard below is per test, not per example, and a loaded machine must not fail a run for
    # generating examples slowly.
    return settings(max_examples=max_examples, deadline=None, derandomize="CI" in os.environ,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def no_hang(request):
    """A test stuck anywhere, even inside RDKit's or torch's C++, ends the run with every thread's
    traceback instead of blocking it.

    A timer thread prints the tracebacks past pytest's output capture (else they would vanish
    with the process) and exits; faulthandler's own watchdog, which needs no GIL, is the backstop
    for code that never releases it.
    """
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def give_up():
        with capture.global_and_fixture_disabled():
            print(f"\n{request.node.nodeid} ran over {HANG_SECONDS} s; every thread's traceback:",
                  file=sys.stderr, flush=True)
            faulthandler.dump_traceback(all_threads=True)
        os._exit(1)

    timer = threading.Timer(HANG_SECONDS, give_up)
    timer.daemon = True
    timer.start()
    faulthandler.dump_traceback_later(2 * HANG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
    timer.cancel()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model gains nothing from threads, and on a busy machine torch's OpenMP team waits
    at every operation for a descheduled thread (measured: 30 s for a decode that takes 0.1 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    """The tiny model in fp32, bad items as NaN rows."""
    return CMIMTransformer(**{**TINY, "precision": "fp32", "errors": "nan"}).fit(ESOL[:24])


@pytest.fixture(scope="module")
def strict(model):
    """The same fitted model under ``errors="raise"``."""
    return copy.copy(model).set_params(errors="raise")


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    return model.save_pretrained(tmp_path_factory.mktemp("fuzz") / "model")


# ------------------------------------------------------------------------------------ inputs
SMILES_CHARACTERS = "CNOSPFIBrlcnos()[]=#@+-.%/\\:*0123456789H"
valid_smiles = st.sampled_from(ESOL[:200])


@st.composite
def mutated_smiles(draw):
    """A valid SMILES with one to four characters inserted, deleted or replaced."""
    chars = list(draw(valid_smiles))
    character = st.sampled_from(SMILES_CHARACTERS) | st.characters()
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(["insert", "delete", "replace"]))
        position = draw(st.integers(0, len(chars)))
        if edit == "insert":
            chars.insert(position, draw(character))
        elif chars:
            position = min(position, len(chars) - 1)
            if edit == "delete":
                del chars[position]
            else:
                chars[position] = draw(character)
    return "".join(chars)


# Strings RDKit reads oddly or not at all: it ignores a NUL at either end, a lone surrogate cannot
# be encoded for it, full-width letters look like SMILES, 200 carbons are over max_length.
odd_strings = st.sampled_from(["", " ", "\x00", "CC\x00", "\ud800", "C\udfffC", "\uff23\uff23\uff2f",
                               "C C", "C" * 200, "[Xx]", "*", "c1cc1", "C%123", "CC.O.[Na+]"])
text = st.text(max_size=40) | odd_strings
not_molecules = (st.none() | st.binary(max_size=20) | st.integers() | st.floats()
                 | st.sampled_from([float("nan"), np.nan, np.float32(1.5), np.int64(3), ["CCO"],
                                    ("CCO",), {"smiles": "CCO"}, object()]))
# Mols that fail sanitisation: pentavalent carbon, unkekulisable rings, and mutants.
unsanitisable = ["C(C)(C)(C)(C)C", "c1cc1", "c1ccccc1C(=O)(=O)(=O)", "[NH5]", "n1cccc1C"]
bad_mols = (st.sampled_from(unsanitisable).map(lambda s: Chem.MolFromSmiles(s, sanitize=False))
            | mutated_smiles().map(lambda s: Chem.MolFromSmiles(s, sanitize=False))
            | st.sampled_from([Chem.Mol(), Chem.MolFromSmarts("[#6]~[#7,#8]")]))
good_mols = valid_smiles.map(Chem.MolFromSmiles)
any_item = st.one_of(valid_smiles, mutated_smiles(), text, not_molecules, good_mols, bad_mols)


@st.composite
def item_sequences(draw):
    """1 to 10 items, as a list, a tuple, an object array or a pandas Series."""
    items = draw(st.lists(any_item, min_size=1, max_size=10))
    kind = draw(st.sampled_from(["list", "tuple", "array", "series"]))
    # A list of nothing but lists is a table whose rows hold the molecules, as scikit-learn reads
    # it (test_sklearn_compatibility); here each item must stay an item.
    if kind in ("list", "tuple") and not all(isinstance(item, (list, tuple)) for item in items):
        return items, (list if kind == "list" else tuple)(items)
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):  # item by item: a list item must not become an axis
        array[i] = item
    # dtype=object: pandas would otherwise infer a string dtype and turn None into NaN.
    return items, array if kind == "array" else pd.Series(array, dtype=object)


def alone(model, items) -> np.ndarray:
    """Each item's embedding when it is the only one (a NaN row if it is bad). The item goes in
    a 1-D object array: ``[["CCO"]]`` would be a one-row table, whose row is a molecule."""
    return np.vstack([model.transform(one_item(item)) for item in items])


def one_item(item) -> np.ndarray:
    array = np.empty(1, dtype=object)
    array[0] = item
    return array


def assert_first_bad_item_named(call, items, bad):
    """``call`` under ``errors="raise"`` fails on the first bad item, naming its index and value."""
    if not bad.any():
        return call()
    first = int(np.flatnonzero(bad)[0])
    item = items[first]
    expected = ValueError if isinstance(item, (str, Chem.Mol)) else TypeError
    with pytest.raises(expected) as caught:
        call()
    shown = Chem.MolToSmiles(item) if isinstance(item, Chem.Mol) else repr(item)
    assert str(caught.value).startswith(f"X[{first}] = {shown[:40]}")
    return None


def assert_nan_rows_exactly(X, bad):
    rows_with_nan = np.isnan(X).any(axis=1)
    assert (rows_with_nan == bad).all() and np.isnan(X[bad]).all()


# ----------------------------------------------------------------------------- transform
@fuzz(200)
@given(drawn=item_sequences())
def test_transform_gives_bad_items_nan_rows_and_good_items_their_own_embedding(model, strict, drawn):
    items, X = drawn
    own = alone(model, items)
    bad = np.isnan(own).all(axis=1)
    assert_nan_rows_exactly(own, bad)
    together = model.transform(X)
    assert together.dtype == np.float32 and together.shape == own.shape
    assert_nan_rows_exactly(together, bad)
    np.testing.assert_allclose(together[~bad], own[~bad], rtol=1e-5, atol=1e-6)
    result = assert_first_bad_item_named(lambda: strict.transform(X), items, bad)
    if result is not None:
        np.testing.assert_array_equal(result, together)


@fuzz(30)
@given(drawn=item_sequences())
def test_fit_skips_bad_items_or_names_the_first(model, drawn):
    items, X = drawn
    bad = np.isnan(alone(model, items)).all(axis=1)  # badness does not depend on the vocabulary
    params = {**TINY, "max_epochs": 1, "precision": "fp32"}
    assert_first_bad_item_named(lambda: CMIMTransformer(**params).fit(X), items, bad)
    lenient = CMIMTransformer(**params, errors="nan")
    if bad.all():
        with pytest.raises(ValueError, match="none of the molecules in X is usable"):
            lenient.fit(X)
        return
    out = lenient.fit(X).transform(X)
    assert_nan_rows_exactly(out, bad)
    good = [item for item, b in zip(items, bad, strict=True) if not b]
    # Bad items leave no trace in the model: it is the one fitted on the good items alone.
    np.testing.assert_array_equal(out[~bad], CMIMTransformer(**params).fit(good).transform(good))


LONG = {
    "carbon chain": "C" * 10_000,
    "benzene rings": "c1ccccc1" * 1250,
    "repeated molecule": (ESOL[1] * 10_000)[:10_000],
    "prose": ("Hello, wörld! " * 800)[:10_000],
    "unicode": "€😀" * 5_000,
    "open branches": "C(" * 5_000,
    "open brackets": "[" * 10_000,
    "ring bonds": "C1" * 5_000,
}


def test_strings_of_10000_characters_are_bad_items_everywhere(model, strict, model_dir, tmp_path):
    good = ESOL[:2]
    items = [good[0], *LONG.values(), good[1]]
    bad = np.array([False] + [True] * len(LONG) + [False])
    out = model.transform(items)
    assert_nan_rows_exactly(out, bad)
    np.testing.assert_allclose(out[~bad], model.transform(good), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"^X\[1\] = 'CCCC.*\.\.\.: it is 10002 tokens long"):
        strict.transform(items)

    params = {**TINY, "max_epochs": 1, "precision": "fp32"}
    lenient = CMIMTransformer(**params, errors="nan").fit(items)
    clean = CMIMTransformer(**params).fit(good)
    np.testing.assert_array_equal(lenient.transform(good), clean.transform(good))

    source = tmp_path / "long.smi"
    source.write_text("".join(f"{item}\n" for item in items), encoding="utf-8")
    status, err = embed(source, "--output", tmp_path / "x.npy", "--model", model_dir, "--errors", "nan",
                        "--precision", "fp32")
    assert status == 0, err
    X = np.load(tmp_path / "x.npy")
    # The .smi reader keeps each line's first word, so the prose is cut; it stays a bad item.
    assert_nan_rows_exactly(X, bad)


# ----------------------------------------------------------------------- inverse_transform
finite_or_not = st.floats() | st.floats(width=32) | st.sampled_from([3.4e38, -1e38, 1e300, 0.0])


@fuzz(40)
@given(Z=hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.sampled_from([8, 72])),
                    elements=finite_or_not))
def test_inverse_transform_decodes_finite_rows_and_names_the_first_non_finite_one(model, strict, Z):
    # Only the latent columns (the first 8 of the 72 informative ones) are decoded; values beyond
    # float32's range become inf when they are read as float32.
    bad = ~np.isfinite(Z[:, :8].astype(np.float32)).all(axis=1)
    smiles = model.inverse_transform(Z)
    assert smiles.shape == (len(Z),)
    assert all(s is None for s in smiles[bad])
    # The finite rows are decoded, each as it would be alone (None where the tiny model's decoding
    # runs out of positions before it ends).
    assert list(smiles[~bad]) == [model.inverse_transform(row[None])[0] for row in Z[~bad]]
    assert all(s is None or isinstance(s, str) for s in smiles)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        overflowed = np.isfinite(Z[first, :8]).all()  # finite, beyond float32: named as such
        why = "values beyond float32's range" if overflowed else "non-finite values"
        with pytest.raises(ValueError, match=rf"^X\[{first}\] holds {why}"):
            strict.inverse_transform(Z)
    else:
        assert list(strict.inverse_transform(Z)) == list(smiles)


# ---------------------------------------------------------------------------- cmim embed
def embed(*argv) -> tuple[int, str]:
    """``cmim embed ARGV`` in-process, on the CPU: (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = cli.main(["embed", *map(str, argv), "--device", "cpu"])
        except SystemExit as exit_:  # argparse's own exits
            status = exit_.code
    return status, err.getvalue()


def encodable(line: str) -> bool:
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate cannot be written to a file
        return False
    return True


@fuzz(30)
@given(lines=st.lists(st.one_of(valid_smiles, mutated_smiles(), text).filter(encodable), max_size=8))
def test_cmim_embed_of_a_fuzzed_file_is_the_transform_of_its_records(model, model_dir, lines):
    with tempfile.TemporaryDirectory() as tmp:
        source, output = Path(tmp) / "in.smi", Path(tmp) / "out.npy"
        source.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        records = list(read_smiles(source))
        status, err = embed(source, "--output", output, "--model", model_dir, "--errors", "nan",
                            "--precision", "fp32")
        if not records:
            assert status == 2 and "holds no molecules" in err and not output.exists()
            return
        assert status == 0, err
        expected = model.transform([smiles for _, smiles in records])
        np.testing.assert_array_equal(np.load(output), expected)

        bad = np.flatnonzero(np.isnan(expected).all(axis=1))
        output.unlink()
        status, err = embed(source, "--output", output, "--model", model_dir, "--precision", "fp32")
        if bad.size:
            line = records[bad[0]][0]
            assert status == 2 and f"cmim embed: error: line {line} of {source}: " in err
            assert not output.exists()
        else:
            assert status == 0, err


# ------------------------------------------------------------------------------ MoleculeNet
def rejection(smiles: str, model: CMIMTransformer) -> str | None:
    """Why the model's own standardiser or the length limit turns ``smiles`` away, if it does."""
    try:
        tokens = tokenize(model.standardizer_(smiles))
    except ValueError:  # not a molecule (MoleculeError), or characters no token matches
        return UNREADABLE
    return TOO_LONG if len(tokens) + 2 > model.model_.config.max_length else None  # + <bos>, <eos>


@pytest.mark.shared_data
@pytest.mark.skipif(not MOLECULENET.is_dir(),
                    reason=f"{MOLECULENET} is absent (a fresh clone has no ../shared/data; CI has it)")
@pytest.mark.parametrize("name", ["bace.csv", "bbbp.csv", "clintox.csv", "delaney.csv", "freesolv.csv",
                                  pytest.param("hiv.csv.gz", marks=pytest.mark.slow),  # 41,127 molecules
                                  "lipo.csv", "sider.csv", "tox21.csv"])
def test_cmim_embed_of_a_whole_moleculenet_file(model, model_dir, name, tmp_path):
    source = MOLECULENET / name
    status, err = embed(source, "--output", tmp_path / "x.npy", "--model", model_dir,
                        "--errors", "nan", "--precision", "fp32")
    assert status == 0, err
    X = np.load(tmp_path / "x.npy")
    records = [smiles for _, smiles in read_smiles(source)]
    assert len(X) == len(records) == len(pd.read_csv(source))
    rejections = [rejection(smiles, model) for smiles in records]
    assert_nan_rows_exactly(X, np.array([r is not None for r in rejections]))
    kinds = Counter(r for r in rejections if r is not None)
    if kinds:  # too long and unreadable molecules counted apart
        message = describe_bad(kinds, len(records), model.model_.config.max_length)
        rows = "its row is" if sum(kinds.values()) == 1 else "their rows are"
        assert f"cmim embed: warning: {message}; {rows} NaN\n" in err
