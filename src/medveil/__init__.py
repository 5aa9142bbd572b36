"""medveil: keyed multistage SVD obfuscation of medical images."""

__version__ = "0.1.0"
