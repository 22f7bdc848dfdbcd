"""What :meth:`CMIMTransformer.sample` and ``cmim sample`` share, kept free of torch and RDKit so
that the command's ``--help`` can show it at once."""

__all__ = ["DEFAULT_SIGMA"]

# Noise scale around a molecule's latent mean, in units of the prior's standard deviation. Taken
# from the validity-against-sigma curves of the bundled models' cards (docs/models/): the largest
# measured scale at which at least 90% of the decodings stay valid molecules. Most of them are
# still the molecule itself; a larger sigma gives more new molecules and fewer valid ones.
DEFAULT_SIGMA = 0.07
