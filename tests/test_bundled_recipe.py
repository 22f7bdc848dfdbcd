"""The bundled models' recipe (scripts/bundled_models): a GPU run that continues them is joined to
their metadata, so that their cards keep counting every stage."""

import importlib.util
from pathlib import Path

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
