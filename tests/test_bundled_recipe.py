"""The bundled models' recipe (scripts/bundled_models): a GPU run that continues them is joined to
their metadata, so that their cards keep counting every stage."""

import importlib.util
import json
import lzma
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.evaluation.pretrained_metrics import optimisation
from sklearn_cmim.chem.standardize import Standardizer
from sklearn_cmim.chem.tokenizer import Vocabulary
from sklearn_cmim.persistence import load_pretrained

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bundled_models" / "assemble.py"


def load_assemble():
    spec = importlib.util.spec_from_file_location("assemble", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def a_stage(steps: int, batch: int, minutes: float | None = 5.0) -> dict:
    """The metadata one train_gpu.py run stores with its model."""
    seen = steps * batch
    return {"metadata": {
        "contrastive_weight": 1.0, "temperature": 0.1,
        "pretraining": {"steps": steps, "molecules_seen": seen, "skipped_molecules": {},
                        "matmul_peak_flops": 1e15,
                        "arguments": {"learning_rate": 1e-4, "warmup_steps": 20, "max_minutes": minutes,
                                      "mim_warmup_steps": 0, "batch_size": batch}},
        "learning_curve": [{"step": steps, "molecules_seen": seen, "accuracy": 0.9}],
        "training_log": [{"step": s, "molecules_seen": s * batch, "lr": 1e-4} for s in (1, steps)],
    }}


def test_a_continuation_of_the_bundled_model_comes_after_its_stages_and_counts_on():
    metadata = load_assemble().metadata
    bundled = load_pretrained("cmim-broad").metadata
    assert metadata([{"metadata": bundled}]) == bundled  # a joined model joins to itself
    joined = metadata([{"metadata": bundled}, a_stage(steps=100, batch=1024)])
    before = bundled["pretraining"]
    run = joined["pretraining"]
    assert run["steps"] == before["steps"] + 100
    assert run["molecules_seen"] == before["molecules_seen"] + 102_400
    assert run["stages"][:-1] == before["stages"]
    assert run["stages"][-1] == {"steps": 100, "molecules_seen": 102_400, "learning_rate": 1e-4,
                                 "warmup_steps": 20, "minutes": 5.0, "mim_warmup_steps": 0}
    # The architecture the cards print is the first run's; the curves go on where the bundled ones end.
    assert run["arguments"] == {**before["arguments"], "max_steps": run["steps"]}
    assert joined["learning_curve"][:-1] == bundled["learning_curve"]
    assert joined["learning_curve"][-1]["step"] == run["steps"]
    assert [r["step"] for r in joined["training_log"][-2:]] == [before["steps"] + 1, run["steps"]]


def test_a_stage_on_another_machine_is_told_apart_in_the_metadata_and_the_card():
    """A CPU stage, trained by steps over several sittings: its stage gives steps and batch size
    instead of minutes, and every stage then names its machine and how its validation matched."""
    assemble = load_assemble()
    bundled = load_pretrained("cmim-broad").metadata
    joined = assemble.metadata([{"metadata": bundled}, a_stage(steps=1000, batch=1024, minutes=None)],
                               "2 CPU cores", "canonical SMILES equal")
    run = joined["pretraining"]
    gpu, cpu = len(bundled["pretraining"]["stages"]), len(bundled["pretraining"]["stages"]) + 1
    assert run["stages"][-1]["minutes"] is None and run["stages"][-1]["batch_size"] == 1024
    assert [stage["hardware"] for stage in run["stages"]] == [assemble.HARDWARE] * gpu + ["2 CPU cores"]
    assert run["hardware"] == (f"stages {', '.join(map(str, range(1, gpu + 1)))}: {assemble.HARDWARE}; "
                               f"stage {cpu}: 2 CPU cores")
    assert run["validation_match"].endswith(f"stage {cpu}: canonical SMILES equal")
    assert "over its steps" in run["schedule"]
    card = optimisation(run, run["arguments"])
    assert card.endswith(f"stage {cpu}: peak lr 0.0001, 1,000 steps of 1024 on 2 CPU cores; "
                         f"each stage {run['schedule']}")
    first = bundled["pretraining"]["stages"][0]
    assert f"min of wall time ({first['steps']:,} steps) on {assemble.HARDWARE}" in card


ALCOHOLS = ["C" * n + "O" for n in range(1, 41)]


def packed_corpora(folder: Path) -> Path:
    """Stand-ins of what pack.py writes: three tiny corpora of alcohols, and their settings."""
    vocabulary = Vocabulary.build(ALCOHOLS)
    data = folder / "data"
    data.mkdir()
    settings = {"vocabulary": vocabulary.to_list(), "standardizer": Standardizer().to_dict(),
                "holdout_every": 10, "max_length": 256}
    (data / "settings.json").write_text(json.dumps(settings))
    encoded = [np.array(vocabulary.encode(smiles), dtype=np.uint8) for smiles in ALCOHOLS]
    for name in ("moses", "broad", "fragments"):
        (data / f"{name}.tokens.xz").write_bytes(lzma.compress(np.concatenate(encoded).tobytes()))
        np.savez(data / f"{name}.meta.npz", lengths=np.array([len(ids) for ids in encoded], dtype=np.uint8),
                 records=np.arange(len(encoded)), skipped_records=np.array([], dtype=np.int64),
                 skipped_reasons=np.array([], dtype=np.int8), settings=np.array(json.dumps(settings)))
    validation = {"moses": [[encoded[i].tolist(), ALCOHOLS[i]] for i in range(4)]}
    (data / "validation.json").write_text(json.dumps(validation))
    return data


def train_gpu_command(tmp_path: Path, minutes: str, *options: str) -> tuple[list[str], dict]:
    """train_gpu.py on the stand-ins in ``tmp_path``, and its environment."""
    env = {**os.environ, "PACKED_DATA": str(tmp_path / "data"), "RUNS": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(SCRIPT.parents[2])}
    command = [sys.executable, str(SCRIPT.with_name("train_gpu.py")), "cmim", "1.0", minutes, "1e12",
               str(tmp_path / "out"), "--device", "cpu", "--batch-size", "4", "--warmup-steps", "1", *options]
    return command, env


def train_gpu(tmp_path: Path, minutes: str, *options: str) -> subprocess.CompletedProcess:
    command, env = train_gpu_command(tmp_path, minutes, *options)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_the_gpu_script_trains_from_packed_corpora_on_a_cpu(tmp_path):
    """train_gpu.py on stand-ins of the packed corpora, for seconds: the recipe's machine has only
    them, so a run that needed the corpora themselves would fail there, after the loan began."""
    packed_corpora(tmp_path)
    train_gpu(tmp_path, "0.02")
    config = json.loads((tmp_path / "out" / "cmim.config.json").read_text())
    assert config["metadata"]["pretraining"]["steps"] >= 1
    assert (tmp_path / "out" / "cmim.w0.pt").exists()


def test_a_stage_by_steps_goes_on_where_it_stopped(tmp_path):
    """MINUTES 0: a stage of --max-steps, which --resume continues from its checkpoint (a CPU stage
    spans several sittings) and whose stored arguments have no minutes (assemble.py reads that)."""
    packed_corpora(tmp_path)
    train_gpu(tmp_path, "0", "--max-steps", "2", "--log-every", "1")
    done = train_gpu(tmp_path, "0", "--max-steps", "4", "--log-every", "1", "--resume")
    assert "resumed from" in done.stdout and "at step 2 (max steps 2, now 4)" in done.stdout
    metadata = json.loads((tmp_path / "out" / "cmim.config.json").read_text())["metadata"]
    run = metadata["pretraining"]
    assert run["steps"] == 4 and run["arguments"]["max_minutes"] is None
    assert [record["step"] for record in metadata["training_log"]] == [1, 2, 3, 4]


def test_a_stage_stopped_by_sigterm_leaves_a_checkpoint_and_exits_quietly(tmp_path):
    packed_corpora(tmp_path)
    command, env = train_gpu_command(tmp_path, "0", "--max-steps", "100000", "--log-every", "1")
    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in run.stdout:  # stop it once it is training
        if line.startswith("step 2/"):
            run.send_signal(signal.SIGTERM)
            break
    out, err = run.communicate(timeout=300)
    assert run.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM" in out and "Traceback" not in err
    assert list((tmp_path / "run-cmim" / "checkpoints").glob("step-*.pt"))
