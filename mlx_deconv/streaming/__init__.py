"""Exact streaming of any decoder that is local in time: :func:`stream`.

:mod:`.receptive_field` finds what each output sample depends on (and refuses decoders that are
not local); :mod:`.decoder` runs the stream by overlap-save, or through this package's models' own
stateful streams.
"""

from .decoder import DecoderStream, stream
from .receptive_field import NonLocalDecoderError, ReceptiveField, from_frames, measure, nonlocal_layers

__all__ = ["stream", "DecoderStream", "NonLocalDecoderError", "ReceptiveField", "measure", "from_frames",
           "nonlocal_layers"]
