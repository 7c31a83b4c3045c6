"""What HiFi-GAN and BigVGAN share: after each upsampling layer, one block per ``(kernel, dilations)``
pair, their outputs averaged; and a config read from a ``config.json``'s dictionary."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Dict, List


class StageBlocks:
    """For a generator whose ``resblocks`` list holds ``len(config.resblock_kernel_sizes)`` blocks per stage, in order."""

    @property
    def num_kernels(self) -> int:
        return len(self.config.resblock_kernel_sizes)

    def stage_blocks(self, stage: int) -> List:
        """The blocks after upsampling layer ``stage``, whose outputs are averaged."""
        n = self.num_kernels
        return self.resblocks[stage * n:(stage + 1) * n]


def config_from_dict(cls, values: Dict, model: str):
    """``cls`` (a config dataclass) from a ``config.json``'s dictionary, keys it has no field for ignored.

    Raises:
        ValueError: naming the fields without a default that ``values`` lacks.
    """
    names = {f.name for f in fields(cls)}
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in values]
    if missing:
        raise ValueError(f"{model} config lacks {missing}")
    return cls(**{k: v for k, v in values.items() if k in names})
