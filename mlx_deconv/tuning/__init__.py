"""Autotuning: :mod:`.tuner` (when to time, the choices; ``mlx_deconv.autotune``), :mod:`.cache` (kept on disk),
:mod:`.timing` (one primed timing) and :mod:`.command` (``python -m mlx_deconv autotune``)."""
