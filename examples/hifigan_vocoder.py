"""Vocode a mel spectrogram with a HiFi-GAN or BigVGAN checkpoint: the installed ``mlx-deconv vocode`` command.

This script only runs that command (``mlx_deconv/cli/vocode.py``), with the same options; prefer
``.venv/bin/mlx-deconv vocode --help``, which needs no clone of the repository:

    .venv/bin/python examples/hifigan_vocoder.py --checkpoint g_02500000 --mel mel.npy --out out.wav
    .venv/bin/python examples/hifigan_vocoder.py --make-random-checkpoint out/hifigan/random --stream
"""

import sys

import mlx_deconv  # noqa: F401 (before mlx.core: it may put a faster BLAS under MLX's CPU matmul)
from mlx_deconv.cli.vocode import main

if __name__ == "__main__":
    sys.exit(main(prog="examples/hifigan_vocoder.py"))
