"""What a pretraining run starts from: the model's config, its vocabulary and standardiser, and
the weights of the model that ``--init-from`` continues, if any."""

from __future__ import annotations

import dataclasses

from ..chem.corpus import Corpus, CorpusError, HoldOut, build_vocabulary
from ..chem.standardize import Standardizer
from ..chem.tokenizer import Vocabulary
from ..config import ARCHITECTURE
from ..nn.model import CMIMModel, ModelConfig
from ..persistence import Pretrained, load_pretrained
from .distributed import Context

__all__ = ["initial_summary", "load_extended", "model_spec", "new_config"]


def model_spec(args, context: Context, corpora: list[Corpus], split: HoldOut, state: dict | None):
    """Model config, vocabulary, standardiser and the model to start from (``None``: fresh weights):
    the checkpoint's when resuming, else from ``args``."""
    if state is not None:
        return (ModelConfig.from_dict(state["config"]), Vocabulary(state["vocabulary"]),
                Standardizer(**state["standardizer"]), None)
    initial = load_model_option("--init-from", args.init_from) if args.init_from else None
    standardizer = (initial.standardizer if initial is not None
                    else Standardizer(args.largest_fragment, args.neutralize, args.isomeric))
    # Rank 0 reads the corpora once; the others receive the result.
    vocabulary = Vocabulary(context.on_main(
        lambda: make_vocabulary(args, corpora, split, standardizer).to_list()))
    if initial is None:
        return new_config(args, len(vocabulary)), vocabulary, standardizer, None
    vocabulary = initial.vocabulary.extended(vocabulary)
    base = initial.model.config
    if 0 < args.max_length < base.max_length:  # its position table can grow, not shrink
        raise CorpusError(f"--max-length {args.max_length} is below {args.init_from}'s {base.max_length}: "
                          "a continued model keeps its positions (drop --max-length, or give a larger one)")
    config = dataclasses.replace(base, vocab_size=len(vocabulary), dropout=args.dropout,
                                 max_length=max(base.max_length, args.max_length))
    return config, vocabulary, standardizer, initial


def new_config(args, vocab_size: int) -> ModelConfig:
    """The config of a model with fresh weights, as ``args`` describe it."""
    return ModelConfig(vocab_size=vocab_size, dropout=args.dropout, bias=args.bias,
                       **{name: getattr(args, name) for name in ARCHITECTURE})


def load_extended(model: CMIMModel, initial: CMIMModel) -> None:
    """Copy ``initial``'s weights into ``model``, whose token and position tables may be longer: the
    rows ``initial`` has are copied, the new ones keep their fresh initialisation."""
    weights = model.state_dict()
    for name, value in initial.state_dict().items():
        weights[name][:value.shape[0]] = value
    model.load_state_dict(weights)


def make_vocabulary(args, corpora: list[Corpus], split: HoldOut, standardizer: Standardizer) -> Vocabulary:
    if args.vocab_from is None:
        return build_vocabulary(corpora, split, standardizer, args.vocab_records, args.vocab_min_count)
    return load_model_option("--vocab-from", args.vocab_from).vocabulary


def load_model_option(option: str, name: str) -> Pretrained:
    try:
        return load_pretrained(name)
    except (FileNotFoundError, ValueError) as error:
        raise CorpusError(f"{option}: {error}") from None


def initial_summary(name: str, initial: Pretrained) -> dict:
    """What the model a run started from was: its name and its own pretraining's size."""
    pretraining = initial.metadata.get("pretraining", {})
    return {"model": str(name), **{key: pretraining[key] for key in ("steps", "molecules_seen")
                                    if key in pretraining}}
