"""Which architecture learns to reconstruct fastest on a CPU budget (used to pick the defaults).

Each candidate trains on the same stream of MOSES training molecules for the same number of
molecules, then is scored by greedy exact-match reconstruction of held-out MOSES scaffold-split
molecules. Wall time is recorded beside it, so accuracy per CPU-minute can be compared. Full run:

    python -m benchmarks.evaluation.architecture --molecules 60000

Smoke run (each candidate's change applied to the tiny quick-mode model, bundled ESOL; seconds):

    python -m benchmarks.evaluation.architecture --quick
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import (
    DOCS_MARKDOWN,
    QUICK_MODEL,
    as_command,
    command_line,
    markdown_table,
    read_moses,
    set_outputs,
    update_markdown_section,
    write_json,
)
from benchmarks.evaluation.downstream import QUICK_TRAIN_MOLECULES
from sklearn_cmim import CMIMTransformer
from sklearn_cmim.chem.batching import length_bucketed_batches, pad
from sklearn_cmim.chem.standardize import Standardizer
from sklearn_cmim.chem.tokenizer import Vocabulary
from sklearn_cmim.datasets import load_esol
from sklearn_cmim.nn.device import autocast
from sklearn_cmim.nn.model import CMIMModel
from sklearn_cmim.training.fit import make_optimizer, make_scheduler, train_step

CANDIDATES = {
    "base K1 D128": {},
    "K8 D32": {"n_latents": 8, "latent_dim": 32},
    "word dropout 0.25": {"decoder_token_dropout": 0.25},
    "lr 1e-3": {"learning_rate": 1e-3},
    "2 decoder layers": {"n_decoder_layers": 2},
}


def run(name, overrides, train, held_out, args):
    params = {**CMIMTransformer().get_params(), **args.architecture, "batch_size": args.batch_size,
              "max_epochs": 1, **{k: v for k, v in overrides.items() if k != "decoder_token_dropout"}}
    est = CMIMTransformer(**params)
    vocabulary = Vocabulary.build(train)
    torch.manual_seed(0)
    config = est._model_config(len(vocabulary))
    config.decoder_token_dropout = overrides.get("decoder_token_dropout", 0.0)
    model = CMIMModel(config)
    settings = est._train_settings()
    sequences = [vocabulary.encode(s) for s in train]
    batches = length_bucketed_batches([len(s) for s in sequences], settings.batch_size,
                                      np.random.default_rng(0))
    optimizer = make_optimizer(model, settings)
    scheduler = make_scheduler(optimizer, len(batches), settings)
    device = torch.device("cpu")
    start = time.perf_counter()
    for step, batch in enumerate(batches):
        train_step(model, pad([sequences[i] for i in batch]), optimizer, scheduler, step, settings,
                   autocast(device, "bf16"))
    seconds = time.perf_counter() - start
    # Score through the estimator so decoding is exactly what users get.
    est.model_, est.vocabulary_, est.standardizer_ = model.eval(), vocabulary, Standardizer()
    est.device_, est.precision_, est.history_ = device, "bf16", []
    accuracy = est.score(held_out)
    own, shuffled = token_accuracy(model, [vocabulary.encode(s) for s in held_out])
    result = {"name": name, "overrides": overrides, "train_seconds": seconds,
              "molecules_per_s": len(train) / seconds, "reconstruction": accuracy,
              "token_accuracy": own, "token_accuracy_shuffled_z": shuffled,
              "parameters": model.num_parameters()}
    print(json.dumps(result), flush=True)
    return result


@torch.no_grad()
def token_accuracy(model, sequences):
    """Teacher-forced next-token accuracy with each molecule's own mu, and with another's.

    The gap between the two is how much the decoder reads from the latent: an early signal,
    long before greedy decoding gets whole molecules right.
    """
    ids = pad(sequences)
    mu, _ = model.encode(ids)
    targets, real = ids[:, 1:], ids[:, 1:] != 0
    scores = []
    for z in (mu, mu.roll(1, dims=0)):
        predicted = model.logits(model.decoder_states(ids[:, :-1], z)).argmax(-1)
        scores.append(float(((predicted == targets) & real).sum() / real.sum()))
    return scores


def molecules(args) -> tuple[list[str], list[str], str]:
    """Training and held-out molecules, and where they came from."""
    if args.quick:
        esol = load_esol()[0]
        return (esol[:args.molecules], esol[args.molecules:args.molecules + args.held_out],
                "bundled ESOL: held out are the ones after the training molecules")
    return (read_moses("train.csv.gz", args.molecules), read_moses("test_scaffolds.csv.gz", args.held_out),
            "MOSES train; held out: MOSES test_scaffolds")


def markdown(report: dict) -> str:
    config, base = report["config"], report["config"]["base"]
    rows = [[r["name"], f"{r['parameters']:,}", f"{r['train_seconds']:.1f}", f"{r['molecules_per_s']:,.0f}",
             f"{r['reconstruction']:.1%}", f"{r['token_accuracy']:.1%}",
             f"{r['token_accuracy_shuffled_z']:.1%}"] for r in report["results"]]
    quick = " (**quick mode**: a tiny model; the numbers mean nothing)" if config["quick"] else ""
    return "\n".join([
        "## Architecture on a CPU budget", "",
        f"Written by `{report['command']}`{quick}. Each candidate changes the base (d_model "
        f"{base['d_model']}, {base['n_encoder_layers']} encoder + {base['n_decoder_layers']} decoder layers, "
        f"K={base['n_latents']} latents of D={base['latent_dim']}), trains one epoch over "
        f"{config['molecules']:,} molecules in batches of {config['batch_size']}, then greedily "
        f"reconstructs {config['held_out']:,} held-out ones ({config['source']}). Token accuracy is "
        "teacher-forced, with each molecule's own latent mean and with another's: the gap is how much "
        "the decoder reads from the latent.", "",
        markdown_table(["candidate", "parameters", "training s", "molecules/s", "exact reconstruction",
                        "token accuracy", "with another's latent"], rows),
    ])


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", type=int, default=60000)
    parser.add_argument("--held-out", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--only", nargs="*", help="candidate names to run")
    parser.add_argument("--out", type=Path, help="JSON (default docs/benchmarks)")
    parser.add_argument("--markdown", type=Path, help=f"report to update (default {DOCS_MARKDOWN})")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny model on bundled ESOL")
    args = parser.parse_args(argv)
    # Candidates override the package's defaults, or the tiny model's in quick mode.
    args.architecture = {}
    if args.quick:
        args.molecules, args.held_out, args.batch_size = QUICK_TRAIN_MOLECULES, 20, 32
        args.architecture = QUICK_MODEL
    set_outputs(args, "architecture-quick")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    train, held_out, source = molecules(args)
    results = [run(name, overrides, train, held_out, args) for name, overrides in CANDIDATES.items()
               if not args.only or name in args.only]
    report = {"command": command_line("benchmarks.evaluation.architecture", argv),
              "config": {"quick": args.quick, "molecules": len(train), "held_out": len(held_out),
                         "source": source, "batch_size": args.batch_size,
                         "base": {k: v for k, v in CMIMTransformer(**args.architecture).get_params().items()
                                  if k in QUICK_MODEL}},
              "results": results}
    write_json(args.out / "architecture.json", report)
    update_markdown_section(args.markdown, "architecture", markdown(report))
    return report


if __name__ == "__main__":
    as_command(main)
