"""ef21-mpi: communication-compressed distributed optimisation (EF21 and friends) with real message passing."""

__version__ = "0.1.0"
