"""BigVGAN: NVIDIA's generator (:mod:`.model`, :mod:`.config`), its streaming form (:mod:`.streaming`) and
NVIDIA's own PyTorch generator for comparisons (:mod:`.pytorch`).

``mlx_deconv.bigvgan`` names this package.
"""

from .config import (PRESETS, V2_22KHZ_80BAND_256X, V2_24KHZ_100BAND_256X, V2_44KHZ_128BAND_256X,  # noqa: F401
                     V2_44KHZ_128BAND_512X, BigVGANConfig)
from .model import AMPBlock1, AMPBlock2, BigVGAN, activation_layer, from_checkpoint, load_torch_checkpoint  # noqa: F401
from .pytorch import nvidia_module, torch_generator  # noqa: F401  (torch is imported only when they are called)
from .streaming import ActivationStream, StreamingBigVGAN  # noqa: F401

