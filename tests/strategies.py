"""Random transposed-conv configurations and their expected outputs from the reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

import reference as ref


@dataclass
class Case:
    batch: int
    length: int
    groups: int
    in_per_group: int
    out_per_group: int
    taps: int
    stride: int
    dilation: int
    padding: object
    output_padding: Optional[int]
    use_bias: bool
    seed: int

    @property
    def in_channels(self):
        return self.groups * self.in_per_group

    @property
    def out_channels(self):
        return self.groups * self.out_per_group

    def arrays(self):
        """``x (N, L, C_in)``, MLX-layout ``w``, ``bias`` as float64 numpy."""
        rng = np.random.default_rng(self.seed)
        x = rng.standard_normal((self.batch, self.length, self.in_channels))
        w = rng.standard_normal((self.out_channels, self.taps, self.in_per_group))
        b = rng.standard_normal(self.out_channels) if self.use_bias else None
        return x, w, b

    def crops(self):
        """``(left, right)`` of the full output, from the definitions of each padding form."""
        s, d, k = self.stride, self.dilation, self.taps
        op = self.output_padding
        span = d * (k - 1) + 1
        full = (self.length - 1) * s + span
        if self.padding == "causal":
            return 0, full - (self.length * s + (op or 0))
        if isinstance(self.padding, str):
            pad_left, pad_right = ref.keras_pads(self.padding, k, s, d, op)
            return span - 1 - pad_left, span - 1 - pad_right
        if isinstance(self.padding, (tuple, list)):
            left, right = self.padding
        else:
            left = right = self.padding
        return left, right - (op or 0)

    def expected(self, x, w, b):
        """Reference output; Keras paddings go through the independent zero-stuffed form."""
        if self.padding in ("valid", "same"):
            pad_left, pad_right = ref.keras_pads(
                self.padding, self.taps, self.stride, self.dilation, self.output_padding
            )
            return ref.conv_transpose1d_stuffed(
                x, w, b, self.stride, pad_left, pad_right, self.dilation, self.groups
            )
        left, right = self.crops()
        return ref.conv_transpose1d(x, w, b, self.stride, left, right, self.dilation, self.groups)

    def kwargs(self):
        return dict(
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
            dilation=self.dilation,
            groups=self.groups,
        )


@st.composite
def cases(draw, max_length=12, row_shifts=None):
    """Random configurations; ``row_shifts=S`` draws only layers whose taps
    fill ``S`` consecutive input rows (the ``winograd`` backend's domain)."""
    groups = draw(st.sampled_from([1, 1, 2, 3, 4]))
    if row_shifts is None and draw(st.integers(0, 3)) == 0:
        in_per_group = out_per_group = 1  # depthwise
    else:
        in_per_group = draw(st.integers(1 if row_shifts is None else 2, 4))
        out_per_group = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 5))
    if row_shifts is None:
        taps = draw(st.integers(1, 7))
        dilation = draw(st.integers(1, 4))
    else:  # at most a quarter of a tap per slot left empty, as gemm.slab_shifts allows
        fewest = max((row_shifts - 1) * stride + 1, -(-4 * row_shifts * stride // 5))
        taps = draw(st.integers(fewest, row_shifts * stride))
        dilation = 1
    length = draw(st.integers(1, max_length))
    form = draw(st.sampled_from(["int", "pair", "valid", "same", "causal"]))
    if form == "int":
        padding = draw(st.integers(0, 4))
    elif form == "pair":
        padding = (draw(st.integers(0, 5)), draw(st.integers(0, 5)))
    else:
        padding = form
    output_padding = draw(st.one_of(st.none(), st.integers(0, max(stride, dilation) - 1)))
    case = Case(
        batch=draw(st.integers(1, 3)),
        length=length,
        groups=groups,
        in_per_group=in_per_group,
        out_per_group=out_per_group,
        taps=taps,
        stride=stride,
        dilation=dilation,
        padding=padding,
        output_padding=output_padding,
        use_bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )
    left, right = case.crops()
    assume((length - 1) * stride + dilation * (taps - 1) + 1 - left - right >= 1)
    return case
