"""Contrastive Mutual Information Machine (cMIM) molecular embeddings for scikit-learn."""

from .chem import Standardizer
from .descriptors import RDKitDescriptorsTransformer
from .fingerprints import ECFPTransformer
from .persistence import list_pretrained
from .transformer import CMIMTransformer

__all__ = [
    "CMIMTransformer",
    "ECFPTransformer",
    "RDKitDescriptorsTransformer",
    "Standardizer",
    "list_pretrained",
]
__version__ = "0.1.0"
