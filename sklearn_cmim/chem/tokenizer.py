"""SMILES -> token ids and back (docs/method.md, Data path).

The regex is MolMIM's, one token per match, plus ``<`` so that the dative bonds RDKit writes
for organometallics (``->``, ``<-``) can be read. The vocabulary is learned from the training corpus;
tokens it has not seen map to ``<unk>`` and are counted, so callers can warn about them once.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

__all__ = ["SMILES_REGEX", "Vocabulary", "tokenize"]

SMILES_REGEX = re.compile(
    r"\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>|<|\*|\$|\%[0-9]{2}|[0-9]"
)

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)


def tokenize(smiles: str) -> list[str]:
    """Split a SMILES string into tokens; raise ``ValueError`` if a character matches no token.

    Examples
    --------
    >>> tokenize("CC(=O)Cl")
    ['C', 'C', '(', '=', 'O', ')', 'Cl']
    """
    tokens = SMILES_REGEX.findall(smiles)
    if sum(map(len, tokens)) != len(smiles):
        raise ValueError(f"SMILES {smiles!r} has characters the tokenizer cannot read")
    return tokens


class Vocabulary:
    """Token <-> id map with the special tokens ``<pad>=0, <bos>=1, <eos>=2, <unk>=3``.

    Parameters
    ----------
    tokens : list of str
        The ordinary tokens, in id order after the four special ones.

    Examples
    --------
    >>> vocab = Vocabulary.build(["CCO", "c1ccccc1"])
    >>> vocab.encode("CCO")
    [1, 5, 5, 6, 2]
    >>> vocab.decode(vocab.encode("CCO"))
    'CCO'
    """

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokens: list[str]):
        self.tokens = list(SPECIAL_TOKENS) + [t for t in tokens if t not in SPECIAL_TOKENS]
        self.index = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, smiles: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Learn the vocabulary of a corpus (sorted, so it does not depend on corpus order).

        A token gets an id when at least ``min_count`` of the molecules hold it: a token seen in
        a handful of molecules cannot be learned, and its molecules are better skipped. Strings
        the tokenizer cannot read are passed over here; encoding reports them.

        Examples
        --------
        >>> Vocabulary.build(["CCO", "CCN", "CC[Se]C"], min_count=2).tokens[4:]
        ['C']
        """
        holding: Counter = Counter()
        for s in smiles:
            holding.update(set(SMILES_REGEX.findall(s)))
        return cls(sorted(token for token, n in holding.items() if n >= min_count))

    def extended(self, other: Vocabulary) -> Vocabulary:
        """This vocabulary with the tokens of ``other`` it lacks appended, so every id keeps its token.

        Examples
        --------
        >>> Vocabulary(["C", "O"]).extended(Vocabulary(["Cl", "C"])).tokens[4:]
        ['C', 'O', 'Cl']
        """
        return Vocabulary(self.tokens + [t for t in other.tokens if t not in self.index])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, smiles: str, unknown: Counter | None = None) -> list[int]:
        """Ids of ``<bos> tokens <eos>``; unseen tokens become ``<unk>`` and are added to ``unknown``."""
        ids = [self.bos_id]
        for token in tokenize(smiles):
            token_id = self.index.get(token, self.unk_id)
            if token_id == self.unk_id and unknown is not None:
                unknown[token] += 1
            ids.append(token_id)
        ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int]) -> str | None:
        """SMILES text of ids up to the first ``<eos>`` (a leading ``<bos>`` is skipped), or ``None``
        for a sequence that is not a finished SMILES: one with no ``<eos>`` (a decoding that ran
        out of positions) or with another special token before it. Dropping such a token, or
        cutting a runaway chain short, would pass off a molecule the model never wrote."""
        out = []
        for position, i in enumerate(ids):
            if i == self.eos_id:
                return "".join(out)
            if i < len(SPECIAL_TOKENS):
                if position == 0 and i == self.bos_id:
                    continue
                return None
            out.append(self.tokens[i])
        return None

    def to_list(self) -> list[str]:
        return list(self.tokens)
