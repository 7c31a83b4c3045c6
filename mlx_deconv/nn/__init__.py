"""The layers: :mod:`.layers` (``Conv1d``, ``ConvTranspose1d``), :mod:`.config`, :mod:`.streaming`, :mod:`.keras`
(Keras' spelling), :mod:`.weight_norm`, :mod:`.initializers`, :mod:`.activations` and :mod:`.interop` (PyTorch weights)."""
