"""SMILES files that cannot be read as they are: a clear error naming the file and line, never a
traceback, or, for a field that is merely not a molecule, a bad item like any other."""

import csv
import gzip
import io
import re

import numpy as np
import pandas as pd
import pytest

from sklearn_cmim.chem import corpus
from sklearn_cmim.chem.corpus import CorpusError
from sklearn_cmim.chem.smiles_files import read_smiles
from tests.conftest import run_cmim as run

ROWS = "smiles\n" + "CCO\nCCN\n" * 3000  # long enough to be read in several chunks


def records(path, column=None):
    return list(read_smiles(path, column))


def named(path) -> str:
    return re.escape(str(path))


def corrupt(data: bytes) -> bytes:
    """``data`` with a byte of its compressed stream flipped."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


@pytest.mark.parametrize("damage, message", [(lambda d: d[: len(d) // 2], r" after line \d+: Compressed"),
                                             (corrupt, r" after line \d+: "),
                                             (lambda d: d[10:], ": Not a gzipped file")],
                         ids=["truncated", "corrupt", "not gzip"])
def test_a_damaged_gzip_file_is_a_corpus_error_naming_it(tmp_path, damage, message):
    path = tmp_path / "in.csv.gz"
    path.write_bytes(damage(gzip.compress(ROWS.encode(), mtime=0)))
    with pytest.raises(CorpusError, match=rf"^cannot read {named(path)}{message}"):
        records(path)


def test_a_csv_field_over_the_csv_modules_default_limit_is_read_whole(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(f'smiles,n\nCCO,1\n"{"C" * 200_000}",2\nCCN,3\n')
    assert [(line, len(smiles)) for line, smiles in records(path)] == [(2, 3), (3, 200_000), (4, 3)]


def test_other_csv_errors_name_the_file_and_line(tmp_path, monkeypatch):
    path = tmp_path / "in.csv"
    path.write_text(f"smiles\nCCO\n{'C' * 50}\n")
    monkeypatch.setattr(corpus, "CSV_FIELD_LIMIT", 20)
    limit = csv.field_size_limit(20)  # process-wide: restored below
    try:
        with pytest.raises(CorpusError, match=rf"^line 3 of {named(path)}: field larger than"):
            records(path)
    finally:
        csv.field_size_limit(limit)


@pytest.mark.parametrize("name", ["in.csv", "in.smi", "in.csv.gz"])
@pytest.mark.parametrize("good_lines", [1, 3000])  # in the chunk the header comes in, or far after it
def test_a_line_that_is_not_utf8_is_named(tmp_path, name, good_lines):
    path = tmp_path / name
    data = b"smiles\n" + b"CCO\n" * good_lines + b"CC\xe9\nCCN\n"
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    expected = rf"^line {good_lines + 2} of {named(path)} is not UTF-8 text \(byte 0xe9"
    with pytest.raises(CorpusError, match=expected):
        records(path)


@pytest.mark.parametrize("name", ["in.csv", "in.smi", "in.csv.gz"])
def test_a_utf8_byte_order_mark_is_not_part_of_the_text(tmp_path, name):
    path = tmp_path / name
    data = "smiles,y\nCCO,1\n".encode("utf-8-sig")
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    if name.endswith(".smi"):
        assert records(path)[0] == (1, "smiles,y")
    else:
        assert records(path, "smiles") == [(2, "CCO")]


def test_an_unclosed_quote_is_an_error_not_a_merged_record(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text('smiles,n\nCCO,1\n"CCN,2\nCCC,3\nCCCC,4\n')
    with pytest.raises(CorpusError, match=rf"^line 3 of {named(path)}: the row runs on to line 5 "
                                          r"\(a quoted line break, or an unclosed quote\?\)"):
        records(path)
    # In another column, the quote swallowed the next line: one record for two molecules.
    path.write_text('smiles,name\nCCO,"eth\nc1ccccc1,benz\n')
    with pytest.raises(CorpusError, match=rf"^line 2 of {named(path)}: the row runs on to line 3 "):
        records(path)


@pytest.mark.parametrize("end", ["\n", ""])
def test_a_quote_left_open_on_the_last_line_is_an_error(tmp_path, end):
    path = tmp_path / "in.csv"
    path.write_text(f'smiles,name\nCCO,ok\nCCN,"eth{end}')
    with pytest.raises(CorpusError, match=rf"^line 3 of {named(path)}: a quote opened here is never closed"):
        records(path)


def test_a_line_break_inside_any_csv_field_is_an_error_as_it_would_shift_line_numbers(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text('smiles,notes\nCCO,"line one\nline two"\nCCN,ok\nC1CC,bad\n')
    with pytest.raises(CorpusError, match=rf"^line 2 of {named(path)}: the row runs on to line 3 .*"
                                          "a .csv row must be one line$"):
        records(path)


@pytest.mark.parametrize("blank", ["", "   ", " \t"])
def test_blank_csv_lines_are_left_out_as_pandas_does_and_line_numbers_stay_true(tmp_path, blank):
    path = tmp_path / "in.csv"
    text = f"{blank}\nsmiles,y\nCCO,1\n{blank}\nCCN,2\n,3\n\n{blank}\n"
    path.write_text(text)
    assert records(path) == [(3, "CCO"), (5, "CCN"), (6, "")]  # an empty SMILES with a label stays
    assert pd.read_csv(io.StringIO(text))["smiles"].fillna("").tolist() == ["CCO", "CCN", ""]
    smi = tmp_path / "in.smi"  # a .smi file's records stay aligned with its lines
    smi.write_text("CCO\n\nCCN\n")
    assert records(smi) == [(1, "CCO"), (2, ""), (3, "CCN")]


def test_an_explicit_column_matches_in_any_case_when_that_picks_one(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("id,SMILES\n1,CCO\n")
    assert records(path, column="smiles") == [(2, "CCO")]
    path.write_text("Smiles,SMILES\nCCO,CCN\n")
    assert records(path, column="SMILES") == [(2, "CCN")]  # the exact name first
    with pytest.raises(CorpusError, match=r"has several columns 'smiles' in any case; its columns are"):
        records(path, column="smiles")


# ----------------------------------------------------------------------------- the commands
@pytest.fixture(scope="module")
def model(fitted, tmp_path_factory):
    return fitted.save_pretrained(tmp_path_factory.mktemp("tiny") / "model")


@pytest.mark.parametrize("command", ["embed {input} --output {tmp}/x.npy",
                                     "reconstruct {input} --output {tmp}/x.tsv",
                                     "sample --n 2 --around-file {input} --output {tmp}/x.smi",
                                     "optimize {input} --objective qed --output {tmp}/x.csv"])
def test_commands_report_a_truncated_gzip_file_in_one_line(capsys, model, tmp_path, command):
    source = tmp_path / "inputs" / "in.csv.gz"
    source.parent.mkdir()
    data = gzip.compress(ROWS.encode())
    source.write_bytes(data[: len(data) // 2])
    argv = command.format(input=source, tmp=tmp_path).split()
    status, out, err = run(capsys, *argv, "--model", model, "--device", "cpu")
    assert status == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"cmim {argv[0]}: error: cannot read {source} after line ")
    assert [p.name for p in tmp_path.iterdir()] == ["inputs"]  # nothing written


def test_embed_reads_a_field_over_128k_characters_as_one_bad_molecule(capsys, model, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text(f'smiles,n\nCCO,1\n"CC{"x" * 140_000}",2\nCCN,3\n')
    status, _, err = run(capsys, "embed", source, "--output", tmp_path / "x.npy", "--model", model,
                         "--device", "cpu", "--errors", "nan")
    assert status == 0, err
    assert np.isnan(np.load(tmp_path / "x.npy")).all(axis=1).tolist() == [False, True, False]
    status, _, err = run(capsys, "embed", source, "--output", tmp_path / "y.npy", "--model", model,
                         "--device", "cpu")
    assert status == 2 and err.startswith(f"cmim embed: error: line 3 of {source}: 'CCxxx")
    assert not (tmp_path / "y.npy").exists()


def test_a_csv_without_header_is_refused_rather_than_losing_its_first_molecule(tmp_path):
    headerless = tmp_path / "molecules.csv"
    headerless.write_text("CCO\nc1ccccc1\nCCN\n")
    with pytest.raises(CorpusError, match=rf"^{named(headerless)}: line 1 starts with 'CCO', a molecule"):
        records(headerless)
    # A header whose first column name reads as a molecule (carbon monoxide): --column reads it.
    headerless.write_text("CO,name\nCCO,ethanol\n")
    with pytest.raises(CorpusError, match=r"if it is the header, name the SMILES column \(--column CO\)$"):
        records(headerless)
    assert records(headerless, column="CO") == [(2, "CCO")]
    # A header that names no smiles column still works: its first column is read.
    headerless.write_text("structure,id\nCCO,1\nCCN,2\n")
    assert records(headerless) == [(2, "CCO"), (3, "CCN")]


def test_column_names_match_without_their_spaces_and_gz_in_any_case(tmp_path):
    spaced = tmp_path / "spaced.CSV.GZ"
    with gzip.open(spaced, "wt") as handle:
        handle.write("id, smiles\n1, CCO\n")
    assert records(spaced, column="smiles") == records(spaced) == [(2, "CCO")]


def test_embed_refuses_a_csv_row_that_swallows_the_next_and_skips_blank_lines(capsys, model, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text('smiles,name\nCCO,"eth\nc1ccccc1,benz\n')  # it wrote 1 row for 2 molecules
    status, out, err = run(capsys, "embed", source, "--output", tmp_path / "x.npy", "--model", model,
                           "--device", "cpu", "--embedding", "latent")
    assert status == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"cmim embed: error: line 2 of {source}: the row runs on to line 3 ")
    assert not (tmp_path / "x.npy").exists()
    source.write_text("smiles,y\nCCO,1\n\nCCN,2\n\n")  # blank lines failed the run, or got NaN rows
    for errors in ("raise", "nan"):
        status, _, err = run(capsys, "embed", source, "--output", tmp_path / "x.npy", "--model", model,
                             "--device", "cpu", "--errors", errors)
        assert status == 0 and err == "", err
        assert np.isfinite(np.load(tmp_path / "x.npy")).all(axis=1).tolist() == [True, True]
