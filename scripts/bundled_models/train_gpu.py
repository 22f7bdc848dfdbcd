"""One twin of the bundled models' GPU run (README.md beside this file).

    python3 train_gpu.py NAME CONTRASTIVE_WEIGHT MINUTES PEAK OUT [cmim pretrain options]
    python3 train_gpu.py peak      # the GPU's bf16 matmul peak, for the MFU in the log

Reads the corpora that pack.py wrote to data/ (no RDKit needed: the machine may lack it), trains
with the package's own loop for MINUTES of wall time, with a linear warm-up and a cosine decay
spread over that time, and writes the model's config and its fp16 weights, in files under 15 MB,
to OUT. With INIT=DIR it continues the model that an earlier run left in DIR/run-NAME; WARMUP
sets the warm-up steps (default 150).
"""
import importlib.util
import json
import lzma
import math
import os
import sys
import time
from pathlib import Path
from unittest import mock

if importlib.util.find_spec("rdkit") is None or "--stub-rdkit" in sys.argv:
    for module in ("rdkit", "rdkit.Chem", "rdkit.Chem.MolStandardize", "rdkit.RDLogger"):
        sys.modules[module] = mock.MagicMock()
    STUBBED = True
else:
    STUBBED = False

import numpy as np
import torch

from sklearn_cmim.chem.corpus import HoldOut, MoleculeEncoder
from sklearn_cmim.chem.standardize import Standardizer
from sklearn_cmim.chem.tokenizer import Vocabulary
from sklearn_cmim.cli.pretrain import build_parser
from sklearn_cmim.config import ARCHITECTURE
from sklearn_cmim.nn.device import resolve_device, resolve_precision
from sklearn_cmim.nn.model import CMIMModel, ModelConfig
from sklearn_cmim.training import reporting
from sklearn_cmim.training.checkpoint import Checkpoints
from sklearn_cmim.training.distributed import Context
from sklearn_cmim.training.fit import NonFiniteLossError, StepSkipper, TrainSettings, make_optimizer
from sklearn_cmim.training.prepared import PreparedCorpus, PreparedStream
from sklearn_cmim.training.pretraining import Loop, Run
from sklearn_cmim.training.streams import MixedStream

if STUBBED:  # validation compares the decoded string with the standardised one, exactly
    reporting.canonical_smiles = lambda smiles: smiles

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
NAMES = ["moses", "broad", "fragments"]
ORIGINS = ["../shared/data/moses/train.csv.gz", "../shared/data/pretrain/broad.csv.gz", "fragments.smi"]
WEIGHTS = ["0.35", "0.58", "0.07"]
ARCH = ["--d-model", "384", "--n-heads", "6", "--d-ff", "1536", "--n-encoder-layers", "2",
        "--n-decoder-layers", "4", "--n-latents", "8", "--latent-dim", "32", "--max-length", "256"]


class TimedSchedule:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor`` over the wall-time budget."""

    def __init__(self, seconds: float, warmup: int, floor: float):
        self.seconds, self.warmup, self.floor, self.start = seconds, warmup, floor, None

    def __call__(self, step: int) -> float:
        if step < self.warmup or self.start is None:
            return (step + 1) / self.warmup if step < self.warmup else 1.0
        progress = min(1.0, (time.perf_counter() - self.start) / self.seconds)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


class TimedLoop(Loop):
    """The package's loop, stopped by the clock instead of a step count."""

    def train(self) -> None:
        batches = iter(self.run.stream)
        self.deadline = time.perf_counter() + self.budget
        self.schedule_fn.start = time.perf_counter()
        skipped = 0
        while True:
            batch = next(batches)
            try:
                losses, width = self.step(batch)
            except NonFiniteLossError as error:  # host check: the step changed no weight; go on
                skipped += 1
                self.log(f"warning: {error}")
                if skipped > 10:
                    raise
                continue
            except RuntimeError as error:  # e.g. the on-device skip failing on this torch: host checks
                if self.run.step > 0 or self.skipper is None:
                    raise
                self.log(f"warning: step with the on-device skipper failed ({error}); checking on the host")
                self.skipper = None
                self.run.optimizer.zero_grad(set_to_none=True)
                losses, width = self.step(batch)
            last = time.perf_counter() >= self.deadline or self.run.step >= self.args.max_steps
            if last:
                self.args.max_steps = self.run.step
            try:
                self.report(losses, batch, width, last)
            except NonFiniteLossError as error:  # the bad step was skipped on the device; go on
                skipped += 1
                self.log(f"warning: {error}")
                self.skipper = StepSkipper.for_device(self.device) if self.skipper is not None else None
                if skipped > 10:
                    self.args.max_steps, last = self.run.step, True
            paused = time.perf_counter()
            self.validate(last)  # no checkpoints: the run is shorter than a restart would cost
            self.meter.start += time.perf_counter() - paused
            if last:
                return


def load_corpus(name: str) -> PreparedCorpus:
    meta = np.load(DATA / f"{name}.meta.npz")
    tokens = np.frombuffer(lzma.decompress((DATA / f"{name}.tokens.xz").read_bytes()), dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum(meta["lengths"].astype(np.int64))])
    return PreparedCorpus(tokens=tokens, offsets=offsets, records=meta["records"],
                          skipped_records=meta["skipped_records"], skipped_reasons=meta["skipped_reasons"],
                          settings=json.loads(str(meta["settings"])))


def main():
    if sys.argv[1] == "peak":  # measured before the twins start, so that neither sees half the GPU
        from sklearn_cmim.nn.flops import matmul_peak_flops
        print(matmul_peak_flops(torch.device("cuda"), torch.bfloat16, size=8192, min_seconds=1.0))
        return
    name, weight, minutes, peak = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    out = Path(sys.argv[5])
    extra = [a for a in sys.argv[6:] if a not in ("--stub-rdkit", "--test-skipper")]
    settings = json.loads((DATA / "settings.json").read_text())
    run_dir = Path("/tmp") / ("cont" if os.environ.get("INIT") else "") / f"run-{name}"
    args = build_parser().parse_args([
        *ORIGINS, "--weights", *WEIGHTS, *ARCH, "--contrastive-weight", weight, "--batch-size", "1024",
        "--learning-rate", "1e-3", "--mim-warmup-steps", "500", "--max-steps", "1000000",
        "--holdout-every", str(settings["holdout_every"]), "--validation-size", "200",
        "--validation-every", "1000", "--log-every", "200", "--checkpoint-every-steps", "1000000",
        "--checkpoint-every-minutes", "100000", "--keep-checkpoints", "1", "--random-state", "0",
        "--prepared", "prepared/mix.npz", "--output", str(run_dir), *extra])
    args.time_limit_minutes = minutes
    context = Context.from_environment()
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    vocabulary = Vocabulary(settings["vocabulary"])
    standardizer = Standardizer(**settings["standardizer"])
    validation = {key: [(ids, smiles) for ids, smiles in value]
                  for key, value in json.loads((DATA / "validation.json").read_text()).items()}
    config = ModelConfig(vocab_size=len(vocabulary), dropout=args.dropout, bias=args.bias,
                         **{key: getattr(args, key) for key in ARCHITECTURE})
    train = TrainSettings(batch_size=args.batch_size, learning_rate=args.learning_rate,
                          weight_decay=args.weight_decay, mim_warmup_steps=args.mim_warmup_steps,
                          contrastive_weight=args.contrastive_weight, temperature=args.temperature,
                          contrastive_positive=args.contrastive_positive)
    torch.manual_seed(args.random_state)
    model = CMIMModel(config)
    if os.environ.get("INIT"):
        from sklearn_cmim.persistence import load_pretrained
        model.load_state_dict(load_pretrained(os.environ["INIT"] + f"/run-{name}").model.state_dict())
    model = model.to(device)
    optimizer = make_optimizer(model, train)
    split = HoldOut(settings["holdout_every"])
    encoder = MoleculeEncoder(standardizer, vocabulary, config.max_length)
    streams = [PreparedStream(load_corpus(key), split, encoder, args.batch_size, args.random_state + i)
               for i, key in enumerate(NAMES)]
    stream = MixedStream(streams, args.weights, args.random_state)
    warmup = int(os.environ.get("WARMUP", 150))
    schedule_fn = TimedSchedule(minutes * 60, warmup=warmup, floor=train.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_fn)
    run = Run(model, optimizer, scheduler, stream, vocabulary, standardizer)
    loop = TimedLoop(args, context, device, precision, train, run, Checkpoints(run_dir / "checkpoints", 1),
                     validation, peak)
    loop.budget, loop.schedule_fn = minutes * 60, schedule_fn
    if "--test-skipper" in sys.argv:  # exercise the GPU's skip path on a CPU
        loop.skipper = StepSkipper(device)
    loop.log_start(None)
    loop.log(f"training for {minutes} min; rdkit stubbed: {STUBBED}; torch {torch.__version__}")
    loop.train()
    loop.finish()
    # Bring back: the config (with its metadata) and fp16 weights in parts under 15 MB.
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.config.json").write_text((run_dir / "config.json").read_text())
    state = {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}
    parts, size = [{}], 0
    for key, value in state.items():
        nbytes = value.numel() * value.element_size()
        if size + nbytes > 15_000_000 and parts[-1]:
            parts.append({})
            size = 0
        parts[-1][key] = value
        size += nbytes
    for i, part in enumerate(parts):
        torch.save(part, out / f"{name}.w{i}.pt")
    loop.log(f"wrote {len(parts)} weight parts to {out}")


if __name__ == "__main__":
    main()
