"""Writes the README's benchmark tables and headline figures from ``mlx-deconv bench --json`` output.

From the repository root, after a benchmark run of each kind::

    .venv/bin/python -m mlx_deconv bench --json out/bench_forward.json --plot docs/bench_forward.png
    .venv/bin/python -m mlx_deconv bench --backward --json out/bench_backward.json
    .venv/bin/python tools/readme_figures.py --forward out/bench_forward.json \\
        --backward out/bench_backward.json --machine "Linux x86-64 (AMD EPYC, 2 cores)"

Each region sits between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``:

* ``forward`` and ``backward``: a caption (machine, dtype, stream, median of
  how many runs) and the table ``bench`` printed, rewritten from the JSON
  given for it (a region without JSON is left as it is);
* ``headline``: the introduction's speed-ups, always recomputed from the
  tables now in the README, so the words cannot disagree with the tables.

``--check`` rewrites nothing and exits with status 1 if the headline
disagrees with the tables.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
HIFIGAN = ("hifigan-1", "hifigan-2", "hifigan-3", "hifigan-4")
DEPTHWISE = "bigvgan-aa"
RATIO_COLUMN = "auto / builtin"


def region(text: str, name: str) -> str:
    """The text between ``<!-- bench:name -->`` and ``<!-- /bench:name -->``."""
    match = re.search(rf"<!-- bench:{name} -->\n(.*?)<!-- /bench:{name} -->", text, re.S)
    if not match:
        raise ValueError(f"README has no <!-- bench:{name} --> ... <!-- /bench:{name} --> region")
    return match.group(1)


def replace_region(text: str, name: str, body: str) -> str:
    region(text, name)  # raises when missing
    return re.sub(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)",
                  lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text, count=1, flags=re.S)


def table_ratios(body: str) -> Dict[str, str]:
    """``{shape: "11.9x"}`` from the "auto / builtin" column of the Markdown table in ``body``."""
    rows = [line for line in body.splitlines() if line.startswith("|")]
    if len(rows) < 3:
        raise ValueError(f"no Markdown table in {body[:200]!r}")
    cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]
    head = cells(rows[0])
    column = head.index(RATIO_COLUMN)
    return {cells(line)[0]: cells(line)[column] for line in rows[2:]}


def _value(ratio: str) -> float:
    return float(ratio.rstrip("x"))


def _span(ratios: List[str]) -> str:
    """``"7.1-13.6x"`` from the table's own strings, so the headline rounds as the table does."""
    lo, hi = min(ratios, key=_value), max(ratios, key=_value)
    return lo if lo == hi else f"{lo.rstrip('x')}-{hi}"


def headline(text: str) -> str:
    """The headline sentence computed from the README's forward and backward tables."""
    forward = table_ratios(region(text, "forward"))
    backward = table_ratios(region(text, "backward"))
    return (f"On the CPU stream it ran {_span([forward[s] for s in HIFIGAN])} faster than `mx.conv_transpose1d` "
            f"on the HiFi-GAN shapes, {_span([backward[s] for s in HIFIGAN])} with the backward pass, and "
            f"{forward[DEPTHWISE]} on BigVGAN's depthwise anti-aliasing layer (one `bench` run of each kind, "
            f"tables below).\n")


def caption(result: Dict, machine: Optional[str]) -> str:
    stream = result.get("stream", "default")
    stream = "the default stream" if stream == "default" else f"stream {stream}"
    repeat = result.get("repeat")
    warmup = result.get("warmup")
    if repeat is None or warmup is None:
        raise ValueError("this JSON does not record repeat and warmup: write it with a current `bench --json`")
    where = f"{machine}; {result['machine']}" if machine else result["machine"]
    return (f"{result['kind'].capitalize()}, measured on {where}, "
            f"{result['dtype']}, {stream}, median of {repeat} after {warmup} warm-up "
            f"(a dash: the backend would compute as `gemm` there):\n")


def table_region(result: Dict, machine: Optional[str]) -> str:
    from mlx_deconv import bench

    backward = result["kind"] != "forward"
    return caption(result, machine) + "\n" + bench.table(result["rows"], backward) + "\n"


def rewrite(text: str, forward: Optional[Dict] = None, backward: Optional[Dict] = None,
            machine: Optional[str] = None) -> str:
    """The README text with the given regions rewritten and the headline recomputed."""
    for name, result, kind in (("forward", forward, "forward"), ("backward", backward, "forward+backward")):
        if result is not None:
            if result.get("kind") != kind:
                raise ValueError(f"--{name} expects a {kind} run, got {result.get('kind')!r}")
            text = replace_region(text, name, table_region(result, machine))
    return replace_region(text, "headline", headline(text))


def headline_agrees(text: str) -> Tuple[bool, str, str]:
    """``(agrees, in README, from its tables)``."""
    written, computed = region(text, "headline"), headline(text)
    return written == computed, written, computed


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Rewrite the README's benchmark regions from bench --json output.")
    parser.add_argument("--forward", help="JSON of `mlx-deconv bench --json PATH`")
    parser.add_argument("--backward", help="JSON of `mlx-deconv bench --backward --json PATH`")
    parser.add_argument("--machine", help="how to name the machine in the captions (default: the JSON's)")
    parser.add_argument("--readme", default=str(README))
    parser.add_argument("--check", action="store_true", help="only check that the headline agrees with the tables")
    args = parser.parse_args(argv)
    path = Path(args.readme)
    text = path.read_text()
    if args.check:
        agrees, written, computed = headline_agrees(text)
        if not agrees:
            print(f"headline disagrees with the tables:\n  README: {written}  tables: {computed}")
        return 0 if agrees else 1
    load = lambda p: json.loads(Path(p).read_text()) if p else None
    path.write_text(rewrite(text, load(args.forward), load(args.backward), args.machine))
    print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
