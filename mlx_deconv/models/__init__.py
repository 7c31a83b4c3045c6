"""Whole decoders built from the package's layers: a folder per model, each with its streaming form and its PyTorch twin."""
