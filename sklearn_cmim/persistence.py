"""Pretrained-model directories: ``config.json`` + ``vocab.json`` + ``weights.pt``.

Weights are read with ``torch.load(weights_only=True)``, which refuses pickled code, so loading a
directory from a stranger cannot run anything. The config carries all that is needed to rebuild
the model, the vocabulary and the standardiser, and the latent prior ``sample`` draws from.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .chem.standardize import Standardizer
from .chem.tokenizer import Vocabulary
from .exceptions import user_stacklevel
from .nn.model import CMIMModel, ModelConfig
from .nn.sampling import LatentPrior

__all__ = ["Pretrained", "list_pretrained", "load_pretrained", "save_pretrained"]

FORMAT_VERSION = 1
BUNDLED_DIR = Path(__file__).parent / "pretrained"
CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE = "config.json", "vocab.json", "weights.pt"


@dataclass
class Pretrained:
    """A model with the vocabulary and standardiser it was trained with, and the latent prior fitted
    to its training molecules (``None`` for a directory written without one)."""

    model: CMIMModel
    vocabulary: Vocabulary
    standardizer: Standardizer
    metadata: dict = field(default_factory=dict)
    latent_prior: LatentPrior | None = None


def list_pretrained() -> list[str]:
    """Names of the pretrained models shipped inside the package.

    Each name can be passed as ``CMIMTransformer(pretrained=name)``; loading it needs no network.

    Returns
    -------
    names : list of str
        Sorted; empty when no model is bundled.

    Examples
    --------
    >>> from sklearn_cmim import list_pretrained
    >>> "cmim-broad" in list_pretrained()
    True
    """
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def resolve_pretrained(name_or_dir: str | os.PathLike) -> Path:
    """A bundled model's name, or a directory written by :func:`save_pretrained` (a ``Path`` is
    always a directory; a string that names a bundled model, the bundled model)."""
    if isinstance(name_or_dir, str) and name_or_dir in list_pretrained():
        if (Path(name_or_dir) / CONFIG_FILE).is_file():  # a model of one's own, named like a bundled one
            warnings.warn(f"{name_or_dir!r} names the bundled model, not the directory {name_or_dir} here: "
                          f"give ./{name_or_dir} to load that one", UserWarning, stacklevel=user_stacklevel())
        return BUNDLED_DIR / name_or_dir
    path = Path(name_or_dir)
    if not (path / CONFIG_FILE).is_file():
        bundled = ", ".join(list_pretrained()) or "none"
        raise FileNotFoundError(
            f"{str(name_or_dir)!r} is neither a bundled model (bundled: {bundled}) nor a directory "
            f"holding {CONFIG_FILE}{loading_hint(path)}"
        )
    return path


def loading_hint(path: Path) -> str:
    """Advice where ``path`` is a file of a model directory, a ``cmim pretrain`` checkpoint, or a
    run that has not written its model yet: a checkpoint's model loads once ``cmim export`` writes it."""
    if path.is_file() and (path.parent / CONFIG_FILE).is_file():
        return f"; give the model's directory, {path.parent}"
    if path.is_file() and path.name.startswith("step-") and path.suffix == ".pt":
        return f"; to load the model of this checkpoint, write it out first: cmim export {path} DIR"
    if path.is_dir() and any((path / "checkpoints").glob("step-*.pt")):
        return (f"; {path} is a cmim pretrain run not finished yet: resume it, or cmim export one of "
                f"its checkpoints ({path / 'checkpoints'})")
    return ""


def weights_to_bytes(model: torch.nn.Module, half: bool = False) -> bytes:
    state = {k: (v.half() if half and v.is_floating_point() else v).cpu()
             for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_error_reason(error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in words fit for a user.

    torch's own message for a file holding arbitrary objects suggests retrying with
    ``weights_only=False``, the one thing not to do with a file from a stranger.
    """
    if isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in str(error):
        return "it holds objects other than tensors and plain data, which could run code when loaded"
    message = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def load_weights(source, origin: str) -> dict:
    """Read a state dict safely (no pickled code), as float32 on the CPU."""
    if isinstance(source, (str, os.PathLike)) and not os.path.exists(source):
        raise ValueError(f"cannot load weights from {origin}: the file is missing")
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"cannot load weights from {origin}: the file is corrupt or is not a plain "
            f"tensor state dict ({load_error_reason(error)})"
        ) from None
    if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ValueError(f"cannot load weights from {origin}: it holds a {type(state).__name__}, not a "
                         "plain tensor state dict")
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def build_model(config: dict, state: dict, origin: str) -> CMIMModel:
    try:
        model = CMIMModel(ModelConfig.from_dict(config))
    except ValueError as error:
        raise ValueError(f"the model config in {origin} describes no model: {error}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # torch lists each mismatch on a line of its own, after a title
        faults = [line.strip() for line in str(error).splitlines()[1:] if line.strip()] or [str(error)]
        raise ValueError(f"weights in {origin} do not match its config: {'; '.join(faults)}") from None
    return model.eval()


def save_pretrained(directory: str | os.PathLike, pretrained: Pretrained, half: bool = False) -> Path:
    """Write a model directory atomically (files go to a temporary folder, then are renamed in)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "format_version": FORMAT_VERSION,
        "model": pretrained.model.config.to_dict(),
        "standardizer": pretrained.standardizer.to_dict(),
        "metadata": pretrained.metadata,
    }
    if pretrained.latent_prior is not None:
        config["latent_prior"] = pretrained.latent_prior.to_dict()
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        tmp = Path(tmp)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        (tmp / VOCAB_FILE).write_text(json.dumps(pretrained.vocabulary.to_list()))
        (tmp / WEIGHTS_FILE).write_bytes(weights_to_bytes(pretrained.model, half=half))
        # The config marks a complete directory: a model being replaced loses it first, so that a
        # crash between the renames leaves a directory that refuses to load, not one that loads
        # one model's weights with another's vocabulary and metadata.
        (directory / CONFIG_FILE).unlink(missing_ok=True)
        for name in (WEIGHTS_FILE, VOCAB_FILE, CONFIG_FILE):
            os.replace(tmp / name, directory / name)
    return directory


def load_pretrained(name_or_dir: str | os.PathLike) -> Pretrained:
    """Load a bundled model by name or a directory written by :func:`save_pretrained`."""
    path = resolve_pretrained(name_or_dir)
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
        tokens = json.loads((path / VOCAB_FILE).read_text())
        model_config = config["model"]
        standardizer = Standardizer(**config.get("standardizer", {}))
        prior = LatentPrior.from_dict(config["latent_prior"]) if "latent_prior" in config else None
        version = config.get("format_version", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValueError(f"format_version {version!r} is not an integer")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a valid pretrained-model directory: {error}") from None
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer sklearn_cmim (format "
                         f"{config['format_version']}); upgrade the package to read it")
    state = load_weights(path / WEIGHTS_FILE, str(path / WEIGHTS_FILE))
    model = build_model(model_config, state, str(path))
    width = model.config.n_latents * model.config.latent_dim
    if prior is not None and len(prior.mean) != width:
        raise ValueError(f"the latent prior in {path / CONFIG_FILE} has {len(prior.mean)} dimensions, "
                         f"its model's latent {width}")
    # A vocabulary of another size would give ids the weights lack, or decode to the wrong tokens.
    if len(tokens) != model.config.vocab_size:
        raise ValueError(f"{path / VOCAB_FILE} holds {len(tokens)} tokens, its model's embedding "
                         f"{model.config.vocab_size}")
    return Pretrained(model, Vocabulary(tokens), standardizer, config.get("metadata", {}), prior)
