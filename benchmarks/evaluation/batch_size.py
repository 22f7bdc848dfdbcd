"""Claim 4 of docs/method.md: cMIM is less sensitive to batch size than InfoNCE.

Two objectives train the same network (``CMIMModel``, same optimiser, schedule, reconstruction
and A-MIM terms) at each batch size for the same number of optimiser steps on MOSES molecules:

* cMIM: the package's own training step; its contrastive term needs no augmentation and averages
  its negatives, so its scale does not grow with the batch.
* InfoNCE: the positive pair is two randomised SMILES of the same molecule (RDKit ``doRandom``),
  each view encoded separately; symmetric NT-Xent over the batch at temperature 0.1 (SimCLR's
  loss: each of the 2B views must find its partner among the other 2B - 1). Each step processes
  both views, so it costs twice the compute of a cMIM step.

Each model then embeds ESOL and Lipophilicity (latent mean), scored by Ridge (alpha chosen inside
each training fold) in 5-fold CV. The learning rate is the same at every batch size: the claim is
about sensitivity to the batch under a fixed recipe. Full run (hours on a CPU):

    python -m benchmarks.evaluation.batch_size

Smoke run (tiny model, a few steps, batch sizes 4 and 8; seconds):

    python -m benchmarks.evaluation.batch_size --quick
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rdkit import Chem
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.common import (
    DOCS_MARKDOWN,
    MOSES,
    QUICK_MODEL,
    as_command,
    command_line,
    fmt,
    markdown_table,
    mean_std,
    moses_or_esol,
    pyplot,
    relative_link,
    set_outputs,
    update_markdown_section,
    write_json,
)
from sklearn_cmim import CMIMTransformer, Standardizer
from sklearn_cmim.chem.batching import pad
from sklearn_cmim.chem.inputs import standardize_items
from sklearn_cmim.chem.tokenizer import Vocabulary
from sklearn_cmim.datasets import load_esol, load_lipophilicity
from sklearn_cmim.nn.device import autocast, resolve_device, resolve_precision
from sklearn_cmim.nn.losses import mim_loss, mim_weight, reconstruction_loss
from sklearn_cmim.nn.model import CMIMModel, ModelConfig
from sklearn_cmim.persistence import Pretrained, save_pretrained
from sklearn_cmim.training.fit import (
    NonFiniteLossError,
    TrainSettings,
    make_optimizer,
    make_scheduler,
    train_step,
)

METHODS = ("cmim", "infonce")
ARCHITECTURE = ("d_model", "n_heads", "d_ff", "n_encoder_layers", "n_decoder_layers", "n_latents",
                "latent_dim")
MAX_LENGTH = 128  # tokens with <bos>/<eos>, as in MolMIM and the package's default
DOWNSTREAM = {"ESOL": load_esol, "Lipophilicity": load_lipophilicity}


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric NT-Xent: row i of ``a`` and row i of ``b`` are two views of one molecule.

    All 2B codes are L2-normalised; each one's partner is the positive and the other 2B - 2 codes
    are negatives (cross-entropy over cosine similarity / temperature); mean over the 2B anchors.
    """
    n = a.shape[0]
    codes = F.normalize(torch.cat([a.flatten(1), b.flatten(1)]).float(), dim=1)
    scores = codes @ codes.T / temperature
    scores = scores.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=scores.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(scores.device)
    return F.cross_entropy(scores, partner)


def random_view(smiles: str) -> str:
    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles), doRandom=True, canonical=False, isomericSmiles=False)


class Corpus:
    """Standardised training molecules, their token ids, and fresh randomised views on demand."""

    def __init__(self, smiles: list[str], max_length: int):
        self.smiles = [s for s in standardize_items(smiles, Standardizer(), errors="nan") if s]
        # Random SMILES can need tokens canonical ones never use (more ring-bond digits), so the
        # vocabulary also reads one random view of every molecule.
        self.vocabulary = Vocabulary.build(self.smiles + [random_view(s) for s in self.smiles])
        self.max_length = max_length
        ids = [self.vocabulary.encode(s) for s in self.smiles]
        keep = [i for i, seq in enumerate(ids) if len(seq) <= max_length]
        self.smiles, self.ids = [self.smiles[i] for i in keep], [ids[i] for i in keep]
        self.long_views = 0

    def canonical(self, batch) -> torch.Tensor:
        return pad([self.ids[i] for i in batch])

    def views(self, batch) -> torch.Tensor:
        sequences = []
        for i in batch:
            seq = self.vocabulary.encode(random_view(self.smiles[i]))
            if len(seq) > self.max_length:  # a view past the model's positions: use the canonical one
                self.long_views += 1
                seq = self.ids[i]
            sequences.append(seq)
        return pad(sequences)


def batches(n: int, batch_size: int, steps: int, rng: np.random.Generator):
    """``steps`` batches of distinct molecules, epoch after epoch of fresh permutations."""
    order = np.empty(0, dtype=int)
    for _ in range(steps):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(n)])
        yield order[:batch_size]
        order = order[batch_size:]


def infonce_step(model, view_a, view_b, optimizer, scheduler, step, settings, amp) -> dict:
    """The package's train_step with the contrastive term swapped for NT-Xent on two views."""
    model.train()
    with amp:
        (z_a, mu_a, logvar_a, logits_a), (z_b, mu_b, logvar_b, logits_b) = model(view_a), model(view_b)
        rec = (reconstruction_loss(logits_a, view_a[:, 1:])
               + reconstruction_loss(logits_b, view_b[:, 1:])) / 2
        mim = (mim_loss(z_a, mu_a, logvar_a) + mim_loss(z_b, mu_b, logvar_b)) / 2
        con = nt_xent(z_a, z_b, settings.temperature)
        total = rec + mim_weight(step, settings.mim_warmup_steps) * mim + settings.contrastive_weight * con
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
    if not (torch.isfinite(total) and torch.isfinite(grad_norm)):
        raise NonFiniteLossError(f"step {step}: non-finite loss ({total.item()}) or gradient norm")
    optimizer.step()
    scheduler.step()
    return {"total": total.detach(), "rec": rec.detach(), "mim": mim.detach(), "con": con.detach()}


def train(method: str, batch_size: int, corpus: Corpus, architecture: dict, args, seed: int, device):
    """One model trained for ``args.steps`` steps; returns it with its mean losses over the last
    10% of the steps. The A-MIM weight ramps up over the first 10% (MolMIM: 1,000 steps)."""
    settings = TrainSettings(batch_size=batch_size, mim_warmup_steps=max(1, args.steps // 10))
    torch.manual_seed(seed)
    model = CMIMModel(ModelConfig(vocab_size=len(corpus.vocabulary), max_length=MAX_LENGTH,
                                  **architecture)).to(device)
    optimizer = make_optimizer(model, settings)
    scheduler = make_scheduler(optimizer, args.steps, settings)
    amp = autocast(device, args.precision)
    tail, start = [], time.perf_counter()
    order = batches(len(corpus.ids), batch_size, args.steps, np.random.default_rng(seed))
    for step, batch in enumerate(order):
        if method == "cmim":
            losses = train_step(model, corpus.canonical(batch).to(device), optimizer, scheduler, step,
                                settings, amp)
        else:
            losses = infonce_step(model, corpus.views(batch).to(device), corpus.views(batch).to(device),
                                  optimizer, scheduler, step, settings, amp)
        if step >= args.steps - max(1, args.steps // 10):
            tail.append({k: float(v) for k, v in losses.items()})
    summary = {k: float(np.mean([t[k] for t in tail])) for k in tail[0]}
    return model.eval(), {"final_losses": summary, "train_seconds": time.perf_counter() - start}


def downstream(model, corpus: Corpus, datasets: dict, folds: int) -> dict:
    """Latent-mean embeddings through the public estimator, then Ridge in k-fold CV (RMSE)."""
    with tempfile.TemporaryDirectory() as directory:
        save_pretrained(directory, Pretrained(model, corpus.vocabulary, Standardizer()))
        embedder = CMIMTransformer(pretrained=directory, max_epochs=0, embedding="latent",
                                   errors="nan").fit(["CCO"])
    scores = {}
    for name, (smiles, y) in datasets.items():
        with warnings.catch_warnings():
            # MoleculeNet holds elements MOSES lacks; they are read as <unk>, which is part of the test.
            warnings.filterwarnings("ignore", message=".*not in the model's vocabulary")
            Z = embedder.transform(smiles)
        ok = np.isfinite(Z).all(axis=1)
        head = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 6)))
        rmse = -cross_val_score(head, Z[ok], y[ok], cv=KFold(folds, shuffle=True, random_state=0),
                                scoring="neg_root_mean_squared_error")
        scores[name] = {"folds": rmse.tolist(), "mean": float(rmse.mean()), "std": float(rmse.std()),
                        "molecules": int(ok.sum())}
    return scores


def sensitivity(runs: list[dict], datasets) -> dict:
    """Per method and dataset: the spread (max - min) of the mean RMSE over the batch sizes."""
    out = {}
    for method in METHODS:
        for name in datasets:
            means = {}
            for run in (r for r in runs if r["method"] == method):
                means.setdefault(run["batch_size"], []).append(run["downstream"][name]["mean"])
            per_size = [float(np.mean(v)) for v in means.values()]
            out.setdefault(method, {})[name] = max(per_size) - min(per_size)
    wins = sum(out["cmim"][n] < out["infonce"][n] for n in datasets)
    return {"spread": out, "cmim_less_sensitive_on": wins, "of": len(datasets)}


def plot(report: dict, out: Path) -> list[Path]:
    plt = pyplot()
    if plt is None:
        return []
    names = list(report["sensitivity"]["spread"]["cmim"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for method, label in (("cmim", "cMIM"), ("infonce", "InfoNCE (random SMILES)")):
            rows = aggregate(report["runs"], method, name)
            ax.errorbar([r[0] for r in rows], [r[1] for r in rows], yerr=[r[2] for r in rows],
                        marker="o", capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(report["config"]["batch_sizes"], [str(b) for b in report["config"]["batch_sizes"]])
        ax.set_xlabel("training batch size")
        ax.set_ylabel("RMSE (lower is better)")
        ax.set_title(f"{name}: latent + Ridge, {report['config']['folds']}-fold CV", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "batch_size.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def fold_noise(runs: list[dict], dataset: str) -> float:
    """Mean standard deviation of the RMSE over CV folds, over every trained model."""
    return float(np.mean([run["downstream"][dataset]["std"] for run in runs]))


def aggregate(runs: list[dict], method: str, dataset: str) -> list[tuple[int, float, float]]:
    """(batch size, mean RMSE, std over CV folds and seeds) for one method."""
    by_size = {}
    for run in (r for r in runs if r["method"] == method):
        by_size.setdefault(run["batch_size"], []).extend(run["downstream"][dataset]["folds"])
    return [(size, *mean_std(folds)) for size, folds in sorted(by_size.items())]


def markdown(report: dict, figures: list[Path], markdown_path: Path, command: str) -> str:
    config = report["config"]
    quick = (" (**quick mode**: tiny model, a few steps; the numbers mean nothing)."
             if config["quick"] else ".")
    lines = [
        "## Batch-size sensitivity: cMIM against InfoNCE", "",
        f"Written by `{command}`{quick}"
        f" {config['steps']} optimiser steps at every batch size on {config['molecules']} molecules from "
        f"{config['source']}; seeds {config['seeds']}; device {config['device']} ({config['precision']}). "
        "Latent-mean embeddings, Ridge, RMSE mean ± std over "
        f"{config['folds']} CV folds (lower is better).", "",
    ]
    names = list(report["sensitivity"]["spread"]["cmim"])
    rows = []
    for method, label in (("cmim", "cMIM"), ("infonce", "InfoNCE")):
        columns = {name: aggregate(report["runs"], method, name) for name in names}
        for i, size in enumerate(config["batch_sizes"]):
            rows.append([label, size, *[f"{fmt(columns[n][i][1])} ± {fmt(columns[n][i][2])}" for n in names]])
    lines += [markdown_table(["method", "batch size", *names], rows), ""]
    spread = report["sensitivity"]["spread"]
    rows = [[label, *[fmt(spread[m][n]) for n in names]]
            for m, label in (("cmim", "cMIM"), ("infonce", "InfoNCE"))]
    lines += ["Spread of the mean RMSE across batch sizes (max - min; smaller is less sensitive):", "",
              markdown_table(["method", *names], rows), "",
              f"cMIM is less sensitive than InfoNCE on {report['sensitivity']['cmim_less_sensitive_on']} of "
              f"{report['sensitivity']['of']} datasets.", ""]
    for name in names:
        noise = fold_noise(report["runs"], name)
        gap = abs(spread["cmim"][name] - spread["infonce"][name])
        lines.append(f"* {name}: the spreads differ by {fmt(gap)}, against a typical standard deviation "
                     f"over CV folds of {fmt(noise)}: "
                     + ("larger, so the difference is resolved." if gap > noise else
                        "smaller, so this run cannot tell the two objectives apart."))
    lines.append("")
    lines += [f"![{path.stem}]({relative_link(path, markdown_path)})" for path in figures]
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps at every batch size")
    parser.add_argument("--molecules", type=int, default=200_000, help="MOSES training molecules")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-downstream", type=int, help="random subset of each downstream set")
    parser.add_argument("--device", help="default: cuda, then mps, then cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--out", type=Path, help="JSON and figure (default docs/benchmarks)")
    parser.add_argument("--markdown", type=Path, help=f"report to update (default {DOCS_MARKDOWN})")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny model, batch sizes 4 and 8")
    for name in ("d_model", "n_heads", "d_ff", "n_encoder_layers", "n_decoder_layers", "n_latents",
                 "latent_dim"):
        parser.add_argument("--" + name.replace("_", "-"), type=int)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.steps, args.molecules = [4, 8], 6, 64
        args.max_downstream = args.max_downstream or 120
    set_outputs(args, "batch-size-quick")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    command = command_line("benchmarks.evaluation.batch_size", argv)
    defaults = QUICK_MODEL if args.quick else CMIMTransformer().get_params()
    architecture = {k: defaults[k] if getattr(args, k) is None else getattr(args, k) for k in ARCHITECTURE}
    device = resolve_device(args.device)
    args.precision = resolve_precision(args.precision, device)
    if not (MOSES / "train.csv.gz").exists() and not args.quick:  # the quick mode runs from a bare clone
        raise SystemExit(f"MOSES not found at {MOSES}")
    smiles, source = moses_or_esol("train.csv.gz", args.molecules)
    corpus = Corpus(smiles, MAX_LENGTH)
    datasets = {}
    for name, loader in DOWNSTREAM.items():
        molecules, y = loader()
        if args.max_downstream and args.max_downstream < len(y):
            pick = np.sort(np.random.default_rng(0).choice(len(y), args.max_downstream, replace=False))
            molecules, y = [molecules[i] for i in pick], y[pick]
        datasets[name] = (molecules, y)

    runs = []
    for seed in args.seeds:
        for batch_size in args.batch_sizes:
            for method in METHODS:
                model, info = train(method, batch_size, corpus, architecture, args, seed, device)
                run = {"method": method, "batch_size": batch_size, "seed": seed, **info,
                       "downstream": downstream(model, corpus, datasets, args.folds)}
                runs.append(run)
                print(f"{method} batch {batch_size} seed {seed}: " + ", ".join(
                    f"{n} {fmt(r['mean'])}" for n, r in run["downstream"].items())
                    + f" ({info['train_seconds']:.0f} s training)", flush=True)
    report = {
        "config": {"quick": args.quick, "batch_sizes": args.batch_sizes, "steps": args.steps,
                   "molecules": len(corpus.ids), "source": source, "seeds": args.seeds, "folds": args.folds,
                   "model": architecture, "device": str(device), "precision": args.precision,
                   "random_views_too_long": corpus.long_views, "command": command},
        "runs": runs,
        "sensitivity": sensitivity(runs, datasets),
    }
    write_json(args.out / "batch_size.json", report)
    figures = plot(report, args.out)
    update_markdown_section(args.markdown, "batch_size", markdown(report, figures, args.markdown, command))
    return report


if __name__ == "__main__":
    as_command(main)
