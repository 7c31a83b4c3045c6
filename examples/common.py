"""Small helpers the example scripts share: output folder, progress bar, optional figures, WAV files."""

from __future__ import annotations

import sys
import wave
from pathlib import Path
from typing import Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")


def output_dir(path: str) -> Path:
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def progress(items: Iterable[T], total: int, label: str, every: int = 1) -> Iterator[T]:
    """Yields ``items`` while drawing a one-line bar on stderr (a line now and then when not a terminal)."""
    tty = sys.stderr.isatty()
    step = max(1, total // 10)
    for i, item in enumerate(items, 1):
        yield item
        if tty and i % every == 0 or i == total:
            filled = 30 * i // total
            sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {i}/{total}")
            if i == total:
                sys.stderr.write("\n")
        elif not tty and i % step == 0:
            sys.stderr.write(f"{label}: {i}/{total}\n")
        sys.stderr.flush()


def pyplot() -> Optional[object]:
    """matplotlib.pyplot with a file-only backend, or None (with a note) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    except ImportError:
        print("matplotlib is not installed (from the repository: .venv/bin/python -m pip install -e '.[examples]'): figures skipped")
        return None


def write_wav(path, audio, rate: int) -> None:
    """Mono 16-bit PCM of ``audio`` (a 1-D float array, clipped to [-1, 1]) at ``rate`` Hz."""
    import numpy as np

    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
