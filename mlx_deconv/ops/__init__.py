"""The two ops: :mod:`.functional` (``conv_transpose1d``, ``conv1d``: validate, pick a backend, run it) and
:mod:`.reference` (the float64 oracle written from the definition)."""
