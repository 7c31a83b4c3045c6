"""The two ops: :mod:`.functional` (the calls), :mod:`.validation` and :mod:`.geometry` (arguments into a
validated geometry, no arrays), :mod:`.layouts` (PyTorch's weight layout) and :mod:`.reference` (the float64 oracle)."""
