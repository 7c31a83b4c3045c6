"""``torch_generator``: HiFi-GAN's generator in PyTorch, for parity tests and benchmarks.

Written from the paper's description with the original repository's parameter
names, from the same :class:`~mlx_deconv.hifigan.HiFiGANConfig` as the MLX
model; torch is imported only when it is called.
"""

from __future__ import annotations

from typing import Optional

from .model import LRELU_SLOPE, POST_LRELU_SLOPE, HiFiGANConfig, same_padding


def torch_generator(config: HiFiGANConfig, weight_norm: Optional[str] = "legacy"):
    """The generator as a ``torch.nn.Module`` with the original repository's parameter names.

    Written from the paper's description, for parity tests and benchmarks; torch is imported here.

    Args:
        config (HiFiGANConfig): the network's shape.
        weight_norm: ``"legacy"`` (``torch.nn.utils.weight_norm``, as the original
            checkpoints), ``"parametrizations"``, or ``None``. Default: ``"legacy"``.

    Returns:
        torch.nn.Module: call it on ``(N, num_mels, frames)``; it returns ``(N, 1, samples)``.
        ``remove_weight_norm()`` folds the weight norm into plain weights.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn as tnn

    def norm(module):
        if weight_norm == "legacy":
            return tnn.utils.weight_norm(module)
        if weight_norm == "parametrizations":
            return tnn.utils.parametrizations.weight_norm(module)
        if weight_norm is None:
            return module
        raise ValueError(f"weight_norm must be 'legacy', 'parametrizations' or None, got {weight_norm!r}")

    def unnorm(module):
        if weight_norm == "legacy":
            tnn.utils.remove_weight_norm(module)
        elif weight_norm == "parametrizations":
            tnn.utils.parametrize.remove_parametrizations(module, "weight")

    def conv(c_in, c_out, k, d=1):
        return norm(tnn.Conv1d(c_in, c_out, k, dilation=d, padding=same_padding(k, d)))

    class Block1(tnn.Module):
        def __init__(self, ch, k, dilations):
            super().__init__()
            self.convs1 = tnn.ModuleList([conv(ch, ch, k, d) for d in dilations])
            self.convs2 = tnn.ModuleList([conv(ch, ch, k) for _ in dilations])

        def forward(self, x):
            for c1, c2 in zip(self.convs1, self.convs2):
                x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
            return x

    class Block2(tnn.Module):
        def __init__(self, ch, k, dilations):
            super().__init__()
            self.convs = tnn.ModuleList([conv(ch, ch, k, d) for d in dilations])

        def forward(self, x):
            for c in self.convs:
                x = x + c(F.leaky_relu(x, LRELU_SLOPE))
            return x

    class Generator(tnn.Module):
        def __init__(self):
            super().__init__()
            self.num_kernels = len(config.resblock_kernel_sizes)
            self.conv_pre = norm(tnn.Conv1d(config.num_mels, config.channels(0), 7, padding=3))
            self.ups = tnn.ModuleList()
            self.resblocks = tnn.ModuleList()
            block = Block1 if config.resblock == "1" else Block2
            for i, (u, k) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes)):
                padding, output_padding = config.upsample_padding(i)
                up = tnn.ConvTranspose1d(config.channels(i), config.channels(i + 1), k, u, padding=padding,
                                         output_padding=output_padding)
                self.ups.append(norm(up))
                for kernel, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes):
                    self.resblocks.append(block(config.channels(i + 1), kernel, dilations))
            self.conv_post = norm(tnn.Conv1d(config.channels(len(self.ups)), 1, 7, padding=3))

        def forward(self, x):
            x = self.conv_pre(x)
            for i, up in enumerate(self.ups):
                x = up(F.leaky_relu(x, LRELU_SLOPE))
                blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
                x = sum(b(x) for b in blocks) / self.num_kernels
            return torch.tanh(self.conv_post(F.leaky_relu(x, POST_LRELU_SLOPE)))

        def remove_weight_norm(self):
            for module in self.modules():
                if isinstance(module, (tnn.Conv1d, tnn.ConvTranspose1d)):
                    unnorm(module)

    return Generator()
