"""vaelm: a distributed batch platform for a variational-autoencoder language model."""

__version__ = "0.1.0"
