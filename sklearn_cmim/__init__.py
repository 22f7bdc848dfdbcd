"""Contrastive Mutual Information Machine (cMIM) molecular embeddings for scikit-learn."""

import importlib

__all__ = [
    "CMIMTransformer",
    "ECFPTransformer",
    "RDKitDescriptorsTransformer",
    "Standardizer",
    "UnknownTokenWarning",
    "list_pretrained",
    "optimize_molecules",
]
__version__ = "0.1.0"

# name -> module. The names are imported on first use (PEP 562), so that importing a submodule
# such as the ``cmim`` command's parser does not load torch, RDKit and scikit-learn.
_EXPORTS = {
    "CMIMTransformer": "transformer",
    "ECFPTransformer": "fingerprints",
    "RDKitDescriptorsTransformer": "descriptors",
    "Standardizer": "chem.standardize",
    "UnknownTokenWarning": "exceptions",
    "list_pretrained": "persistence",
    "optimize_molecules": "optimization",
}


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted({*globals(), *__all__})
