"""One twin of the bundled models' GPU run (README.md beside this file).

    python3 train_gpu.py NAME CONTRASTIVE_WEIGHT MINUTES PEAK OUT [cmim pretrain options]
    python3 train_gpu.py peak      # the GPU's bf16 matmul peak, for the MFU in the log

Reads the corpora that pack.py wrote to data/ (no RDKit needed: the machine may lack it), trains
with the package's own loop for MINUTES of wall time (``cmim pretrain --max-minutes``: a linear
warm-up of --warmup-steps, 150 unless the options say otherwise, and a cosine decay spread over
the minutes), and writes the model's config and its fp16 weights, in files under 15 MB, to OUT.
MINUTES 0 trains for --max-steps instead, with the decay spread over the steps: a stage on a CPU,
which may be stopped (SIGTERM writes a checkpoint) and continued with --resume. With INIT=DIR
it continues the model that an earlier run left in DIR/run-NAME; with INIT=bundled, the bundled
model of its name. PACKED_DATA and RUNS, if set, stand in for data/ and for /tmp,
where the runs go.
"""
import importlib.util
import json
import lzma
import os
import sys
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
from sklearn_cmim.cli.common import run_interruptible
from sklearn_cmim.cli.pretrain import build_parser
from sklearn_cmim.nn.device import resolve_device, resolve_precision
from sklearn_cmim.nn.model import CMIMModel
from sklearn_cmim.persistence import load_pretrained
from sklearn_cmim.training import reporting
from sklearn_cmim.training.checkpoint import Checkpoints, changed_settings, resume_state
from sklearn_cmim.training.distributed import Context
from sklearn_cmim.training.fit import NonFiniteLossError, StepSkipper
from sklearn_cmim.training.model_spec import new_config
from sklearn_cmim.training.prepared import PreparedCorpus, PreparedStream
from sklearn_cmim.training.pretraining import Loop, Run, train_settings
from sklearn_cmim.training.streams import MixedStream

if STUBBED:  # validation compares the decoded string with the standardised one, exactly
    reporting.canonical_smiles = lambda smiles: smiles

HERE = Path(__file__).resolve().parent
# Where the packed corpora are, and where the runs go; a test points both at small stand-ins.
DATA = Path(os.environ.get("PACKED_DATA", HERE / "data"))
RUNS = Path(os.environ.get("RUNS", "/tmp"))
NAMES = ["moses", "broad", "fragments"]
BUNDLED = {"cmim": "cmim-broad", "mim": "mim-broad"}  # what INIT=bundled continues
ORIGINS = ["../shared/data/moses/train.csv.gz", "../shared/data/pretrain/broad.csv.gz", "fragments.smi"]
WEIGHTS = ["0.35", "0.58", "0.07"]
ARCH = ["--d-model", "384", "--n-heads", "6", "--d-ff", "1536", "--n-encoder-layers", "2",
        "--n-decoder-layers", "4", "--n-latents", "8", "--latent-dim", "32", "--max-length", "256"]


class GpuLoop(Loop):
    """The package's loop with two safety nets for a run on a rented GPU, which has no restart: it
    goes on past up to 10 steps skipped on the device for a non-finite loss, and checks on the
    host instead if the on-device skip fails on the machine's torch."""

    skipped = 0

    def step(self, batch):
        try:
            return super().step(batch)
        except RuntimeError as error:
            if self.run.step > 0 or self.skipper is None:
                raise
            self.log(f"warning: step with the on-device skipper failed ({error}); checking on the host")
            self.skipper = None
            self.run.optimizer.zero_grad(set_to_none=True)
            return super().step(batch)

    def report(self, losses, batch, width, last):
        try:
            super().report(losses, batch, width, last)
        except NonFiniteLossError as error:  # the bad step changed no weight; go on
            self.skipped += 1
            self.log(f"warning: {error}")
            if self.skipped > 10:
                raise


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
    run_dir = RUNS / ("cont" if os.environ.get("INIT") else "") / f"run-{name}"
    args = build_parser().parse_args([
        *ORIGINS, "--weights", *WEIGHTS, *ARCH, "--contrastive-weight", weight, "--batch-size", "1024",
        "--learning-rate", "1e-3", "--warmup-steps", "150", "--mim-warmup-steps", "500",
        "--max-steps", "1000000", *(["--max-minutes", str(minutes)] if minutes > 0 else []),
        "--holdout-every", str(settings["holdout_every"]), "--validation-size", "200",
        "--validation-every", "1000", "--log-every", "200", "--checkpoint-every-steps", "1000000",
        "--checkpoint-every-minutes", "100000", "--keep-checkpoints", "1", "--random-state", "0",
        "--prepared", "prepared/mix.npz", "--output", str(run_dir), *extra])
    context = Context.from_environment()
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    vocabulary = Vocabulary(settings["vocabulary"])
    standardizer = Standardizer(**settings["standardizer"])
    validation = {key: [(ids, smiles) for ids, smiles in value]
                  for key, value in json.loads((DATA / "validation.json").read_text()).items()}
    torch.manual_seed(args.random_state)
    model = CMIMModel(new_config(args, len(vocabulary)))
    if os.environ.get("INIT"):
        init = BUNDLED[name] if os.environ["INIT"] == "bundled" else os.environ["INIT"] + f"/run-{name}"
        earlier = load_pretrained(init)
        if earlier.vocabulary.tokens != vocabulary.tokens:
            sys.exit(f"{init} has another vocabulary than {DATA}: pack the corpora with its own (prepare.sh)")
        model.load_state_dict(earlier.model.state_dict())
    model = model.to(device)
    split = HoldOut(settings["holdout_every"])
    encoder = MoleculeEncoder(standardizer, vocabulary, args.max_length)
    streams = [PreparedStream(load_corpus(key), split, encoder, args.batch_size, args.random_state + i)
               for i, key in enumerate(NAMES)]
    stream = MixedStream(streams, args.weights, args.random_state)
    train = train_settings(args)
    run = Run.new(args, model, train, stream, vocabulary, standardizer)
    checkpoints = Checkpoints(run_dir / "checkpoints", args.keep_checkpoints)
    state = resume_state(args, context, checkpoints)  # None unless --resume finds a checkpoint
    loop = GpuLoop(args, context, device, precision, train, run, checkpoints, validation, peak)
    if "--test-skipper" in sys.argv:  # exercise the GPU's skip path on a CPU
        loop.skipper = StepSkipper(device)
    loop.log_start(None)
    if state is not None:
        run.restore(state, context.rank, device)
        loop.log(f"resumed from {state['path']} at step {run.step}{changed_settings(state, args)}")
        del state
    budget = f"{minutes} min" if minutes > 0 else f"{args.max_steps} steps"
    loop.log(f"training for {budget}; rdkit stubbed: {STUBBED}; torch {torch.__version__}")
    # Ctrl-C, SIGTERM or SIGHUP end the run after the checkpoint that --resume reads.
    if status := run_interruptible("train_gpu.py", loop.train):
        sys.exit(status)
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
