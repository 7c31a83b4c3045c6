"""HiFi-GAN: the generator (:mod:`.model`), its streaming form (:mod:`.streaming`) and its PyTorch twin (:mod:`.pytorch`).

``mlx_deconv.hifigan`` names this package.
"""

from .model import (LRELU_SLOPE, POST_LRELU_SLOPE, V1, HiFiGAN, HiFiGANConfig, ResBlock1, ResBlock2,  # noqa: F401
                    from_checkpoint, load_torch_checkpoint, same_padding)
from .pytorch import torch_generator  # noqa: F401  (torch is imported only when it is called)
from .streaming import StreamingHiFiGAN  # noqa: F401
