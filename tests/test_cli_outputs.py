"""What the ``cmim`` commands do with their output files: checked before any work, never an input,
left out altogether by a failed run, and with the permissions of any new file."""

import os
import signal
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from sklearn_cmim.chem.smiles_files import read_smiles, written_atomically
from sklearn_cmim.cli.common import run_interruptible
from sklearn_cmim.training.checkpoint import Checkpoints
from tests.conftest import run_cmim as run


def one_error(status, out, err, command):
    assert status == 2 and out == "" and "Traceback" not in err
    assert err.startswith(f"cmim {command}: error: ") and err.count("\n") == 1
    return err


# Each command that reads a file and writes one; {input} holds one molecule.
COMMANDS = {
    "embed": ["{input}", "--output", "{output}"],
    "reconstruct": ["{input}", "--output", "{output}"],
    "sample": ["--n", "2", "--around-file", "{input}", "--output", "{output}"],
    "optimize": ["{input}", "--objective", "qed", "--output", "{output}"],
}
# (output, what the error says): a missing folder, a folder, the input itself and through a link.
BAD_OUTPUTS = [("{tmp}/no/out.csv", "directory {tmp}/no does not exist"),
               ("{tmp}/folder.csv", "cannot write {tmp}/folder.csv: it is a directory"),
               ("{input}", "cannot write {input}: it is the input file {input}"),
               ("{tmp}/link.csv", "cannot write {tmp}/link.csv: it is the input file {input}")]


@pytest.mark.parametrize(("output", "message"), BAD_OUTPUTS)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_output_fails_before_any_work_and_leaves_the_input_alone(capsys, tmp_path, command,
                                                                      output, message):
    paths = {"tmp": tmp_path, "input": tmp_path / "in.csv"}
    paths["input"].write_text("smiles\nCCO\n")
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "link.csv").symlink_to(paths["input"])
    before = sorted(os.listdir(tmp_path))
    argv = [a.format(**paths, output=output.format(**paths)) for a in COMMANDS[command]]
    # A model that does not exist: a command that loaded it before the check would fail on it.
    err = one_error(*run(capsys, command, *argv, "--model", "no-such-model"), command)
    assert message.format(**paths) in err
    assert paths["input"].read_text() == "smiles\nCCO\n" and sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize(("change", "found"), [("CCN\n" * 20, "more"), ("", "1")], ids=["grown", "shrunk"])
@pytest.mark.parametrize("output", ["x.npy", "x.csv"])
def test_an_input_that_changes_while_embed_reads_it_is_one_line_and_no_output(capsys, fitted, tmp_path,
                                                                             monkeypatch, change, found,
                                                                             output):
    from sklearn_cmim import file_embedding

    model = fitted.save_pretrained(tmp_path / "model")
    source = tmp_path / "in.smi"
    source.write_text("CCO\nCCN\nCCC\n")

    def read_while_written(path, column=None):  # the file changes after it was counted
        source.write_text("CCO\n" + change)
        return read_smiles(path, column)

    monkeypatch.setattr(file_embedding, "read_smiles", read_while_written)
    err = one_error(*run(capsys, "embed", source, "--output", tmp_path / output, "--model", model,
                         "--chunk-size", 2), "embed")
    assert err == (f"cmim embed: error: {source} changed while it was being read (3 records counted, "
                   f"{found} found); embed a copy that nothing writes to\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.smi", "model"]


def test_an_output_name_as_long_as_a_file_name_may_be_is_written_and_a_longer_one_refused_at_once(
        capsys, fitted, tmp_path):
    model = fitted.save_pretrained(tmp_path / "model")
    source = tmp_path / "in.smi"
    source.write_text("CCO\nCCN\n")
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")  # 255 bytes on the usual file systems
    longest = tmp_path / ("x" * (name_max - 4) + ".npy")  # its temporary name was too long
    status, _, err = run(capsys, "embed", source, "--output", longest, "--model", model)
    assert status == 0, err
    assert np.load(longest).shape[0] == 2
    too_long = tmp_path / ("y" * (name_max - 3) + ".npy")  # failed late, naming the temporary file
    err = one_error(*run(capsys, "embed", source, "--output", too_long, "--model", "no-such-model"), "embed")
    assert err == (f"cmim embed: error: cannot write {too_long}: its name is longer than the {name_max} "
                   "bytes a file name may have there\n")


@pytest.mark.parametrize("output", [".npy", "out/.CSV"])
def test_an_output_that_is_only_a_suffix_is_said_to_lack_a_name(capsys, tmp_path, output):
    (tmp_path / "in.smi").write_text("CCO\n")
    err = one_error(*run(capsys, "embed", tmp_path / "in.smi", "--output", output), "embed")
    assert err == (f"cmim embed: error: --output {output} is a suffix without a file name; give one, e.g. "
                   f"{output[:-len(Path(output).name)]}embeddings{Path(output).name}\n")


def test_optimize_refuses_to_write_over_its_objective_file(capsys, tmp_path):
    (tmp_path / "seeds.smi").write_text("CCO\n")
    objective = tmp_path / "model.joblib"
    objective.write_bytes(b"\x80 stands in for a pickle")
    err = one_error(*run(capsys, "optimize", tmp_path / "seeds.smi", "--objective", objective,
                         "--output", objective), "optimize")
    assert f"it is the input file {objective}" in err
    assert objective.read_bytes() == b"\x80 stands in for a pickle"


def test_a_reconstruction_that_decodes_nothing_writes_no_file(capsys, tmp_path):
    source = tmp_path / "allbad.smi"
    source.write_text("xyz\n\n")
    err = one_error(*run(capsys, "reconstruct", source, "--errors", "nan", "--output",
                         tmp_path / "r.tsv"), "reconstruct")
    assert f"no molecule of {source} can be decoded: 2 of 2 molecules cannot be read" in err
    assert os.listdir(tmp_path) == ["allbad.smi"]


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_outputs_get_the_permissions_the_umask_gives_a_new_file(capsys, tmp_path, umask_027):
    (tmp_path / "in.smi").write_text("CCO\nc1ccccc1\n")
    assert run(capsys, "embed", tmp_path / "in.smi", "--output", tmp_path / "x.npy")[0] == 0
    assert run(capsys, "sample", "--n", 1, "--around", "CCO", "--random-state", 0,
               "--output", tmp_path / "s.smi")[0] == 0
    assert np.load(tmp_path / "x.npy").shape[0] == 2  # written in full, not merely renamed
    for name in ("x.npy", "s.smi"):  # neither the temporary file's 0600 nor a fixed 0644
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640


@pytest.mark.parametrize(("content", "message"), [
    (None, "checkpoint {path} does not exist"),
    (b"smiles\nCCO\n", "checkpoint {path} is unreadable: it is not a PyTorch checkpoint"),
    (b"", "checkpoint {path} is unreadable: the file is empty"),
])
def test_export_says_what_is_wrong_with_a_file_that_is_no_checkpoint(capsys, tmp_path, content, message):
    path = tmp_path / "step-00000001.pt"
    if content is not None:
        path.write_bytes(content)
    err = one_error(*run(capsys, "export", path, tmp_path / "out"), "export")
    assert message.format(path=path) in err and "run code" not in err
    assert not (tmp_path / "out").exists()


def test_export_refuses_an_output_that_is_a_file_before_reading_the_checkpoint(capsys, tmp_path):
    (tmp_path / "out").write_text("keep me")
    err = one_error(*run(capsys, "export", tmp_path / "missing.pt", tmp_path / "out"), "export")
    assert f"cannot write {tmp_path / 'out'}: it is a file, not a model directory" in err
    assert (tmp_path / "out").read_text() == "keep me"


def test_an_objective_file_that_joblib_did_not_write_is_named_as_such(capsys, tmp_path):
    (tmp_path / "seeds.smi").write_text("CCO\n")
    (tmp_path / "a.csv").write_text("id,SMILES,y\n1,CCO,0.1\n")
    err = one_error(*run(capsys, "optimize", tmp_path / "seeds.smi", "--objective", tmp_path / "a.csv"),
                    "optimize")
    assert f"cannot load the estimator in {tmp_path / 'a.csv'}: it is not a joblib file" in err
    assert "No module named" not in err


def test_a_pretraining_run_that_fails_before_training_leaves_no_folder(capsys, tmp_path):
    (tmp_path / "empty.smi").write_text("")
    err = one_error(*run(capsys, "pretrain", tmp_path / "empty.smi", "--output", tmp_path / "run",
                         "--max-steps", 2, "--device", "cpu"), "pretrain")
    assert "empty.smi holds no molecules" in err  # the run failed on its input, after checking --output
    assert os.listdir(tmp_path) == ["empty.smi"]  # neither run/ nor run/checkpoints/


def test_the_first_checkpoint_creates_its_folder(tmp_path):
    checkpoints = Checkpoints(tmp_path / "run" / "checkpoints")
    assert checkpoints.paths() == [] and checkpoints.load_latest() is None  # --resume: a new run
    path = checkpoints.save({"step": 1}, 1)
    assert path == tmp_path / "run" / "checkpoints" / "step-00000001.pt" and path.is_file()


@pytest.mark.parametrize(("signum", "status", "said"), [(signal.SIGTERM, 143, "terminated"),
                                                        (signal.SIGHUP, 129, "terminated"),
                                                        (signal.SIGINT, 130, "interrupted")])
def test_sigterm_sighup_and_ctrl_c_end_a_command_in_one_line_with_no_partial_output(tmp_path, capsys, signum,
                                                                                    status, said):
    # SIGTERM is how batch schedulers stop a job, SIGHUP what closing an ssh terminal sends: both
    # used to leave the hidden partial file behind.
    def command():
        with written_atomically(tmp_path / "out.npy") as temporary:
            temporary.write_bytes(b"half an output")
            os.kill(os.getpid(), signum)
            time.sleep(30)  # the signal arrives here
        return 0

    def unhandled(signum, frame):  # SIGHUP's default would end the test run itself
        pytest.fail(f"run_interruptible left signal {signum} to its previous handler")

    default = signal.signal(signal.SIGHUP, unhandled)
    # A shell ignores Ctrl-C in the jobs it starts in the background, pytest among them; a terminal's
    # foreground command has Python's own handler.
    sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
        assert run_interruptible("cmim embed", command) == status
        assert capsys.readouterr().err == f"cmim embed: {said}\n"
        assert list(tmp_path.iterdir()) == []
        assert {s: signal.getsignal(s) for s in before} == before
    finally:
        signal.signal(signal.SIGHUP, default)
        signal.signal(signal.SIGINT, sigint)
