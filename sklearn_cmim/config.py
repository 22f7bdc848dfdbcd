"""The settings that describe a model and its training, as plain dataclasses.

They carry no torch, so the ``cmim`` commands can show their defaults in ``--help`` without
loading it; :mod:`sklearn_cmim.nn.model` and :mod:`sklearn_cmim.training.fit` build on them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["ARCHITECTURE", "DEFAULT_MODEL", "MAX_POPSIZE", "ModelConfig", "TrainSettings"]

# The bundled model the commands, the demo and the examples use unless told otherwise.
DEFAULT_MODEL = "cmim-broad"

# The largest CMA-ES population optimize_molecules and cmim optimize take. A population is decoded
# at once, per seed and generation: far beyond this, one generation would hold the machine for
# hours (a typo's 10**9 allocated without end).
MAX_POPSIZE = 10_000

# The architecture fields ``cmim pretrain`` takes as options (the others follow from the data).
ARCHITECTURE = ("d_model", "n_heads", "d_ff", "n_encoder_layers", "n_decoder_layers", "n_latents",
                "latent_dim", "max_length")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`CMIMModel` (saved with every checkpoint)."""

    vocab_size: int
    d_model: int = 256
    n_heads: int = 4
    d_ff: int = 1024
    n_encoder_layers: int = 2
    n_decoder_layers: int = 4
    n_latents: int = 8
    latent_dim: int = 32
    max_length: int = 128
    dropout: float = 0.1
    min_logvar: float = -6.0
    # Share of decoder input tokens replaced by <unk> in training, so that the decoder must read
    # the molecule from z instead of guessing it from its own prefix (word dropout).
    decoder_token_dropout: float = 0.0
    # Bias terms in the blocks' attention and MLP layers. Without them a CPU training step is about
    # 5% faster (each layer saves a bias copy forward and a row sum backward), and many recent
    # Transformers leave them out; models saved before the option have them (from_dict).
    bias: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """Rebuild a saved config; one saved before ``bias`` existed describes a model with biases.

        Raises ``ValueError`` naming what is wrong with a config that describes no model: a
        missing or unknown setting, a size that is not a positive integer, or ``n_heads`` that do
        not divide ``d_model`` (a model of the other head count would load and embed differently,
        since heads carry no weights of their own).
        """
        if not isinstance(values, dict):
            raise ValueError(f"the model settings must be a mapping, got {type(values).__name__}")
        names = {field.name for field in fields(cls)}
        if unknown := sorted(set(values) - names):
            raise ValueError(f"unknown model settings: {', '.join(unknown)}")
        if "vocab_size" not in values:
            raise ValueError("missing model setting: vocab_size")
        config = cls(**{"bias": True, **values})
        sizes = (*ARCHITECTURE, "vocab_size")
        if bad := [name for name in sizes if isinstance(getattr(config, name), bool)
                   or not isinstance(getattr(config, name), int) or getattr(config, name) < 1]:
            raise ValueError(f"model setting {bad[0]} must be a positive integer, got "
                             f"{getattr(config, bad[0])!r}")
        if config.d_model % config.n_heads:
            raise ValueError(f"d_model {config.d_model} is not a multiple of n_heads {config.n_heads}")
        return config


@dataclass
class TrainSettings:
    """Optimisation and loss settings (MolMIM's recipe, scaled down; docs/method.md, Training)."""

    max_epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 5e-4
    weight_decay: float = 1e-3
    warmup_fraction: float = 0.01
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    mim_warmup_steps: int = 1000
    contrastive_weight: float = 1.0
    temperature: float = 0.1
    contrastive_positive: str = "self"

    def to_dict(self) -> dict:
        return asdict(self)
