"""What only a GPU can show: the estimator, pretraining and the bundled models on CUDA.

CI machines have no GPU, so this module is skipped there; run it wherever one is
(``pytest -m cuda``). docs/installation.md says where it last ran and what it found.
"""

from __future__ import annotations

import copy
import pickle
import shutil

import numpy as np
import pytest
import torch

from sklearn_cmim import CMIMTransformer
from sklearn_cmim.cli import pretrain
from sklearn_cmim.persistence import load_pretrained
from sklearn_cmim.training import fit as training
from sklearn_cmim.training.checkpoint import load_checkpoint
from tests.conftest import TINY
from tests.test_pretrain import DELANEY
from tests.test_pretrain import TINY as PRETRAIN_TINY

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ON_GPU = [flag if flag != "cpu" else "cuda" for flag in PRETRAIN_TINY]  # --device cuda


def on_the_cpu(estimator: CMIMTransformer) -> CMIMTransformer:
    """A copy of a fitted estimator moved to the CPU."""
    moved = copy.deepcopy(estimator)
    moved.model_, moved.device_ = moved.model_.cpu(), torch.device("cpu")
    return moved


def test_estimator_fitted_on_the_gpu_embeds_as_its_copy_on_the_cpu(smiles):
    est = CMIMTransformer(**TINY, device="cuda", precision="fp32").fit(smiles)
    assert est.device_.type == "cuda" and next(est.model_.parameters()).is_cuda
    np.testing.assert_allclose(est.transform(smiles), on_the_cpu(est).transform(smiles), atol=1e-4)


def test_pickled_gpu_estimator_comes_back_on_the_gpu_with_the_same_embeddings(smiles):
    est = CMIMTransformer(**TINY, device="cuda").fit(smiles)
    restored = pickle.loads(pickle.dumps(est))
    assert restored.device_.type == "cuda" and next(restored.model_.parameters()).is_cuda
    np.testing.assert_array_equal(restored.transform(smiles), est.transform(smiles))


def test_bf16_training_on_the_gpu_lowers_the_loss(smiles):
    est = CMIMTransformer(**{**TINY, "max_epochs": 8, "learning_rate": 3e-3}, device="cuda",
                          precision="bf16").fit(smiles)
    assert est.precision_ == "bf16" and est.history_[-1]["rec"] < 0.8 * est.history_[0]["rec"]
    assert np.isfinite(est.transform(smiles)).all()


def test_pretraining_on_the_gpu_logs_a_plausible_peak_and_loads(tmp_path, capsys):
    out = tmp_path / "run"
    assert pretrain.main([DELANEY, "--output", str(out), *ON_GPU, "--precision", "bf16",
                          "--max-steps", "6"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "on cuda | bf16" in header
    run = load_pretrained(out).metadata
    # A peak timed without waiting for the device would come out far above any GPU's.
    assert 1e12 < run["pretraining"]["matmul_peak_flops"] < 3e15
    assert 0 < run["training_log"][-1]["mfu"] < 1
    cmim = CMIMTransformer(pretrained=out, max_epochs=0, device="cuda").fit(["CCO"])
    embeddings = cmim.transform(["CCCO", "CCN"])
    assert embeddings.shape[0] == 2 and np.isfinite(embeddings).all()


@pytest.mark.slow
def test_resumed_gpu_run_restores_its_random_state_and_data_position(tmp_path):
    common = [DELANEY, *ON_GPU, "--max-steps", "8", "--checkpoint-every-steps", "4", "--log-every", "1"]
    assert pretrain.main([*common, "--output", str(tmp_path / "a")]) == 0
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "a" / "checkpoints" / "step-00000004.pt", tmp_path / "b" / "checkpoints")
    assert pretrain.main([*common, "--output", str(tmp_path / "b"), "--resume"]) == 0
    ranks = [load_checkpoint(tmp_path / name / "checkpoints" / "step-00000008.pt")["ranks"][0]
             for name in "ab"]
    assert ranks[0]["data"] == ranks[1]["data"]
    assert torch.equal(ranks[0]["rng"]["cuda"], ranks[1]["rng"]["cuda"])
    # The GPU's atomic adds (embedding gradients) need not sum in the same order twice, so the
    # runs agree to rounding rather than bit for bit.
    logs = [load_pretrained(tmp_path / name).metadata["training_log"] for name in "ab"]
    assert [r["total"] for r in logs[1][4:]] == pytest.approx([r["total"] for r in logs[0][4:]], rel=1e-3)


def test_a_non_finite_step_is_skipped_on_the_gpu_and_reported(tmp_path, capsys, monkeypatch):
    real_loss = training.total_loss

    def nan_at_step_seven(*args, **kwargs):
        losses = real_loss(*args, **kwargs)
        if kwargs["step"] == 6:
            losses["total"] = losses["total"] * float("nan")
        return losses

    monkeypatch.setattr(training, "total_loss", nan_at_step_seven)
    out = tmp_path / "run"
    status = pretrain.main([DELANEY, "--output", str(out), *ON_GPU, "--max-steps", "20",
                            "--checkpoint-every-steps", "4"])
    assert status == 1 and "was skipped" in capsys.readouterr().err
    for step in (4, 8):  # step 7 was skipped on the device, so the checkpoint after it is finite
        state = load_checkpoint(out / "checkpoints" / f"step-{step:08d}.pt")
        assert all(torch.isfinite(value).all() for value in state["model"].values())


def test_bundled_model_decodes_on_the_gpu_as_on_the_cpu(esol):
    molecules = esol[0][:64]
    gpu = CMIMTransformer(pretrained="cmim-broad", max_epochs=0, device="cuda", precision="fp32")
    gpu.fit(molecules[:1])
    cpu = on_the_cpu(gpu)
    decoded = [model.inverse_transform(model.transform(molecules)) for model in (gpu, cpu)]
    agree = np.mean([a == b for a, b in zip(*decoded, strict=True)])
    assert agree >= 0.95, list(zip(*decoded, strict=True))
