"""The bundled models' recipe (scripts/bundled_models): a GPU run that continues them is joined to
their metadata, so that their cards keep counting every stage."""

import importlib.util
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from sklearn_cmim.chem.standardize import Standardizer
from sklearn_cmim.chem.tokenizer import Vocabulary
from sklearn_cmim.persistence import load_pretrained

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bundled_models" / "assemble.py"


def load_assemble():
    spec = importlib.util.spec_from_file_location("assemble", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def a_stage(steps: int, batch: int) -> dict:
    """The metadata one train_gpu.py run stores with its model."""
    seen = steps * batch
    return {"metadata": {
        "contrastive_weight": 1.0, "temperature": 0.1,
        "pretraining": {"steps": steps, "molecules_seen": seen, "skipped_molecules": {},
                        "matmul_peak_flops": 1e15,
                        "arguments": {"learning_rate": 1e-4, "warmup_steps": 20, "max_minutes": 5.0,
                                      "mim_warmup_steps": 0}},
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


ALCOHOLS = ["C" * n + "O" for n in range(1, 41)]


def test_the_gpu_script_trains_from_packed_corpora_on_a_cpu(tmp_path):
    """train_gpu.py on stand-ins of the packed corpora, for seconds: the recipe's machine has only
    them, so a run that needed the corpora themselves would fail there, after the loan began."""
    vocabulary = Vocabulary.build(ALCOHOLS)
    data = tmp_path / "data"
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
    env = {**os.environ, "PACKED_DATA": str(data), "RUNS": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(SCRIPT.parents[2])}
    command = [sys.executable, str(SCRIPT.with_name("train_gpu.py")), "cmim", "1.0", "0.02", "1e12",
               str(tmp_path / "out"), "--device", "cpu", "--batch-size", "4", "--warmup-steps", "1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((tmp_path / "out" / "cmim.config.json").read_text())
    assert config["metadata"]["pretraining"]["steps"] >= 1
    assert (tmp_path / "out" / "cmim.w0.pt").exists()
