"""``python -m mlx_deconv bench``: its parts (:mod:`.transposed`, :mod:`.conv1d`, :mod:`.decoder`), their timing (:mod:`.timing`) and the run (:mod:`.runner`)."""

from .runner import (PARTS, SHAPES, HIFIGAN_STACK, Shape, add_torch, interleaved_medians, long_signal,  # noqa: F401
                     machine, machine_details, main, medians_phrase, plot, run, run_mlx, select, table)
