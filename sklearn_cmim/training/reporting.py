"""What pretraining reports: throughput and FLOP utilisation, held-out validation, log lines."""

from __future__ import annotations

import time
from collections import Counter

import torch

from ..chem.batching import pad
from ..chem.standardize import canonical_smiles
from ..chem.tokenizer import Vocabulary
from ..nn.device import autocast
from ..nn.losses import total_loss
from ..nn.model import CMIMModel
from .fit import TrainSettings

__all__ = ["Meter", "format_record", "format_validation", "validate", "validate_corpora"]


class Meter:
    """Losses and throughput since the last log line, kept on the device between reads.

    Reading it syncs with the device once per log line. On a GPU, pretraining has no per-step
    sync: a :class:`~sklearn_cmim.training.fit.StepSkipper` leaves the finiteness check to the device.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = self.molecules = self.tokens = self.width = 0
        self.start = time.perf_counter()

    def add(self, losses: dict, batch: list[list[int]], width: int) -> None:
        for name, value in losses.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.steps += 1
        self.molecules += len(batch)
        self.tokens += sum(map(len, batch))  # real tokens, known on the host: no device sync
        self.width += width

    def read(self, model: CMIMModel, peak: float, world_size: int) -> dict:
        """Mean losses and throughput since the last read, then start afresh.

        Throughput is global (this process's x ``world_size``: the ranks run in lockstep); FLOP
        utilisation is per device, against the measured matmul ``peak`` in FLOP/s.
        """
        sums = torch.stack(list(self.sums.values())).tolist()  # one device sync for all the terms
        losses = {name: value / self.steps for name, value in zip(self.sums, sums, strict=True)}
        seconds = time.perf_counter() - self.start
        tokens_per_s = self.tokens * world_size / seconds
        flops = model.training_flops(self.tokens, self.molecules, self.width / self.steps)
        record = {**losses, "molecules_per_s": self.molecules * world_size / seconds,
                  "tokens_per_s": tokens_per_s, "mfu": flops / seconds / peak}
        self.reset()
        return record


def format_record(r: dict, max_steps: int, max_minutes: float | None = None) -> str:
    epoch = (f"epoch {r['epoch']}" if isinstance(r["epoch"], int)
             else "epochs " + "/".join(map(str, r["epoch"])))  # one per corpus
    minutes = "" if max_minutes is None else f" | {r['minutes']:.1f}/{max_minutes:g} min"
    return (f"step {r['step']}/{max_steps}{minutes} | {epoch} | loss {r['total']:.4f} "
            f"(rec {r['rec']:.4f} mim {r['mim']:.4f} con {r['con']:.4f}) | lr {r['lr']:.2e} | "
            f"{r['molecules_per_s']:,.0f} mol/s | {r['tokens_per_s']:,.0f} tok/s | "
            f"MFU {100 * r['mfu']:.1f}% | {r['negatives']} negatives/molecule")


def format_validation(r: dict) -> str:
    each = "".join(f" | {name} {100 * c['accuracy']:.1f}%" for name, c in r.get("corpora", {}).items())
    return (f"validation step {r['step']} | {r['molecules_seen']:,} molecules seen | exact reconstruction "
            f"{100 * r['accuracy']:.1f}% of {r['n']}{each} | loss {r['total']:.4f} (rec {r['rec']:.4f} "
            f"mim {r['mim']:.4f} con {r['con']:.4f})")


def validate_corpora(model: CMIMModel, sets: dict[str, list], vocabulary: Vocabulary, settings: TrainSettings,
                     step: int, device: torch.device, precision: str, global_batch: int) -> dict:
    """:func:`validate` on each corpus's held-out molecules; the record holds their pooled scores
    and, when there are several corpora, each one's accuracy under ``corpora``."""
    each = {name: validate(model, molecules, vocabulary, settings, step, device, precision, global_batch)
            for name, molecules in sets.items() if molecules}
    n = sum(r["n"] for r in each.values())
    pooled = {key: sum(r[key] * r["n"] for r in each.values()) / n
              for key in next(iter(each.values())) if key not in ("step", "molecules_seen", "n")}
    record = {"step": step, "molecules_seen": step * global_batch, "n": n, **pooled}
    if len(each) > 1:
        record["corpora"] = {name: {"accuracy": r["accuracy"], "n": r["n"]} for name, r in each.items()}
    return record


@torch.no_grad()
def validate(model: CMIMModel, molecules: list, vocabulary: Vocabulary, settings: TrainSettings, step: int,
             device: torch.device, precision: str, global_batch: int) -> dict:
    """Held-out losses and exact greedy reconstruction accuracy (decoding the posterior mean)."""
    model.eval()
    sums, hits = Counter(), 0
    # Fixed latent noise makes the losses comparable along the curve and leaves training's RNG alone.
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), autocast(device, precision):
        torch.manual_seed(0)
        for start in range(0, len(molecules), settings.batch_size):
            chunk = molecules[start:start + settings.batch_size]
            ids = pad([encoded for encoded, _ in chunk]).to(device)
            out = model(ids)
            losses = total_loss(out, ids[:, 1:], settings, step=step)
            for name, value in losses.items():
                sums[name] += float(value) * len(chunk)
            decoded = model.generate(out[1], vocabulary.bos_id, vocabulary.eos_id).tolist()
            hits += sum(canonical_smiles(vocabulary.decode(seq)) == canonical_smiles(smiles)
                        for seq, (_, smiles) in zip(decoded, chunk, strict=True))
    n = len(molecules)
    return {"step": step, "molecules_seen": step * global_batch, "accuracy": hits / n, "n": n,
            **{name: value / n for name, value in sums.items()}}
