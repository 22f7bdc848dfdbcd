"""Performance benchmarks: how fast the package runs and how much memory it takes (see
:mod:`benchmarks`)."""
