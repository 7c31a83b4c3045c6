"""Writes the benchmark tables of the docs and the README's headline figures from ``mlx-deconv bench --json``.

One tool (about 550 lines): each region of the docs is written by a small function from the same
JSON, and the headline read back from the tables it wrote.

From the repository root (the runs take minutes; the MLX-ops decoder alone
takes minutes behind the reference BLAS)::

    .venv/bin/python -m mlx_deconv bench --json out/bench_forward.json --plot docs/bench_forward.png
    .venv/bin/python -m mlx_deconv bench --backward --json out/bench_backward.json
    MLX_DECONV_BLAS=0 .venv/bin/python -m mlx_deconv bench --no-decoder --no-tuned --json out/bench_reference_blas.json
    .venv/bin/python tools/readme_figures.py --forward out/bench_forward.json \\
        --backward out/bench_backward.json --reference-blas out/bench_reference_blas.json

The reference-BLAS run leaves out the end-to-end decoder (its MLX-ops variant takes minutes
there); without ``--no-decoder`` the ``blas`` region gets the generator's row too. The
``conv1d`` rows of a ``--backward`` run go to the ``conv1d-backward`` region.

``--forward`` takes one or more JSON files of forward runs (``bench --only
PART`` runs the parts separately); each part is taken from the file that
has it. Each region sits between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->``, in whichever of ``README.md`` and ``docs/*.md`` holds
it (exactly one page must): today the headline in ``README.md``, the ``blas``
table in ``docs/blas.md`` and the other tables in ``docs/performance.md``.

* ``forward`` and ``backward``: the ``conv_transpose1d`` table of a forward
  and of a ``--backward`` run, with a caption (machine, dtype, stream,
  median of how many runs);
* ``conv1d`` and ``conv1d-backward``: the ``conv1d`` rows (HiFi-GAN V1's residual blocks) of a forward
  and of a ``--backward`` run;
* ``decoder``: the end-to-end HiFi-GAN V1 row of a forward run;
* ``blas``: the forward run (optimized BLAS, loaded by ``import mlx_deconv``)
  against ``--reference-blas``, the same benchmark with ``MLX_DECONV_BLAS=0``
  (MLX's bundled reference BLAS): MLX's matmul rate and ``auto``'s times;
* ``short``: the short-calls grids of the forward run (and of ``--reference-blas``
  when it has one): per BLAS, grid (the fitting grid the rule's thresholds were
  fitted on, and the held-out grid) and op, the time of MLX's function called
  directly over ``auto``'s: cells below 0.9x, minimum and geomean;
* ``streaming``: HiFi-GAN V1 streamed 2, 8 and 32 frames a step, of the forward run;
* ``activation`` and ``bigvgan``: the anti-aliased activation's rows and the BigVGAN v2 generator's;
* ``models``: mlx-audio's decoders, plain MLX against ``patch_mlx()``;
* ``training``: a training step of BigVGAN and HiFi-GAN against PyTorch's;
* ``headline``: the README introduction's figures (the short calls' from the ``short`` table's first
  BLAS, each op's geomean and its calls more than 10% slower), always recomputed from
  the tables now in the docs, so the words cannot disagree with the tables;
  it ends with a link to the page and section of the ``forward`` table.

A region without JSON is left as it is. ``--check`` rewrites nothing and
exits with status 1 if the headline disagrees with the tables. ``--root``
names another copy of the repository's pages (the tests use one).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
HIFIGAN = ("hifigan-1", "hifigan-2", "hifigan-3", "hifigan-4")
DEPTHWISE = "bigvgan-aa"
RATIO_COLUMN = "auto / builtin"
PAIRED_COLUMN = "time / PyTorch's, paired"
PAIRED_WITH_TORCH = "PyTorch (CPU), call by call"
MLX_DECONV_ROW = "mlx_deconv"  # the decoder table's row label starts with this
TORCH_ROW = "PyTorch"
REGIONS = ("headline", "forward", "backward", "conv1d", "conv1d-backward", "training", "decoder", "blas", "short",
           "streaming", "activation", "bigvgan", "models")


def region(text: str, name: str) -> str:
    """The text between ``<!-- bench:name -->`` and ``<!-- /bench:name -->``."""
    match = re.search(rf"<!-- bench:{name} -->\n(.*?)<!-- /bench:{name} -->", text, re.S)
    if not match:
        raise ValueError(f"no <!-- bench:{name} --> ... <!-- /bench:{name} --> region in this page")
    return match.group(1)


def replace_region(text: str, name: str, body: str) -> str:
    region(text, name)  # raises when missing
    return re.sub(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)",
                  lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text, count=1, flags=re.S)


# -- the pages: README.md and docs/*.md -----------------------------------------------------------
def read_pages(root=ROOT) -> Dict[str, str]:
    """``{path relative to root: text}`` of ``README.md`` and ``docs/*.md`` under ``root``."""
    root = Path(root)
    paths = [root / "README.md"] + sorted((root / "docs").glob("*.md"))
    return {path.relative_to(root).as_posix(): path.read_text() for path in paths if path.exists()}


def locate(pages: Mapping[str, str], name: str) -> str:
    """The page that holds region ``name``: exactly one must."""
    holders = [page for page, text in pages.items() if f"<!-- bench:{name} -->" in text]
    if len(holders) != 1:
        raise ValueError(f"{len(holders)} pages hold a <!-- bench:{name} --> region"
                         f"{': ' + ', '.join(holders) if holders else ''}; exactly one must")
    return holders[0]


def page_region(pages: Mapping[str, str], name: str) -> str:
    """The text of region ``name``, from the page that holds it."""
    return region(pages[locate(pages, name)], name)


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _link_to_region(pages: Mapping[str, str], name: str, source: str) -> str:
    """A Markdown link, relative to page ``source``, to the section that holds region ``name``."""
    page = locate(pages, name)
    text = pages[page]
    before = re.sub(r"^```.*?^```$", "", text[:text.index(f"<!-- bench:{name} -->")], flags=re.S | re.M)
    headings = re.findall(r"^#{1,6} (.+)$", before, re.M)  # outside code blocks, whose comments start with #
    target = Path(os.path.relpath(page, os.path.dirname(source) or ".")).as_posix()
    anchor = f"#{slug(headings[-1])}" if headings else ""
    return f"[{page}]({target}{anchor})"


# -- reading the tables ----------------------------------------------------------------------------
def _cells(line: str) -> List[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def table_rows(body: str) -> Optional[List[Dict[str, str]]]:
    """The first Markdown table in ``body`` as ``[{column: cell}]``, or None when there is none."""
    lines = [line for line in body.splitlines() if line.startswith("|")]
    if len(lines) < 3:
        return None
    head = _cells(lines[0])
    return [dict(zip(head, _cells(line))) for line in lines[2:]]


def table_ratios(body: str) -> Dict[str, str]:
    """``{shape: "11.9x"}`` from the "auto / builtin" column of the Markdown table in ``body``."""
    rows = table_rows(body)
    if rows is None:
        raise ValueError(f"no Markdown table in {body[:200]!r}")
    return {row["shape"]: row[RATIO_COLUMN] for row in rows}


def _value(cell: str) -> float:
    """The number in a cell: ``"11.9x"``, ``"720.5"``, ``"1.2*"`` (timed once)."""
    return float(cell.rstrip("x*"))


def _span(cells: Sequence[str], suffix: str = "x") -> str:
    """``"7.1-13.6x"`` from the table's own strings, so the headline rounds as the table does."""
    lo, hi = (c.rstrip("x*") for c in (min(cells, key=_value), max(cells, key=_value)))
    return f"{lo}{suffix}" if lo == hi else f"{lo}-{hi}{suffix}"


def _times_torch(row: Dict[str, str]) -> Optional[float]:
    """``auto``'s time over PyTorch's in a ``conv_transpose1d`` table row, or None without PyTorch."""
    torch = row.get("torch ms")
    if not torch:
        return None
    return _value(row[f"{row['auto']} ms"]) / _value(torch)


def _paired(row: Dict[str, str]) -> Optional[str]:
    """The headline cell of a paired ratio, ``"1.02x (0.98-1.12)"`` -> ``"1.02x its time (0.98-1.12 by round)"``."""
    cell = row.get(PAIRED_COLUMN, "-")
    if cell in ("-", "—"):
        return None
    ratio, _, spread = cell.partition(" ")
    return f"{ratio} its time" + (f" ({spread.strip('()')} by round)" if spread else "")


def _optional_table(pages: Mapping[str, str], name: str) -> Optional[List[Dict[str, str]]]:
    try:
        return table_rows(page_region(pages, name))
    except ValueError:
        return None


def _machine_and_blas(pages: Mapping[str, str]) -> str:
    """``machine; BLAS`` as the forward table's caption names them."""
    caption = page_region(pages, "forward")
    machine = re.search(r"measured on (.*?), mlx ", caption)
    blas = re.search(r"CPU BLAS (\S+)", caption)
    return f"{machine.group(1) if machine else 'see the tables'}; BLAS {blas.group(1) if blas else 'see the tables'}"


def headline(pages: Mapping[str, str]) -> str:
    """The README's headline table computed from the tables in ``pages``: a few rows, each saying what was
    measured, against what the user would otherwise run, and the ratio (a row for each table filled in).
    Every other figure stays in its table in the docs."""
    forward_rows = table_rows(page_region(pages, "forward"))
    forward = table_ratios(page_region(pages, "forward"))
    backward = table_ratios(page_region(pages, "backward"))
    for name, table in (("forward", forward), ("backward", backward)):
        missing = [s for s in HIFIGAN if s not in table]
        if missing:
            raise ValueError(f"the {name} table lacks {missing}: write it from a run of every shape")
    rows = [("`conv_transpose1d`, HiFi-GAN's upsampling layers", "`mx.conv_transpose1d`",
             f"{_span([forward[s] for s in HIFIGAN])} faster"),
            ("the same, forward and backward", "`mx.conv_transpose1d`", f"{_span([backward[s] for s in HIFIGAN])} faster")]
    for what, table in (("HiFi-GAN's upsampling layers", forward_rows),
                        ("the same, forward and backward", table_rows(page_region(pages, "backward")))):
        vs_torch = [_times_torch(row) for row in table if row["shape"] in HIFIGAN]
        if all(v is not None for v in vs_torch):
            rows.append((what, "PyTorch (CPU)", f"{_span([f'{v:.2f}' for v in vs_torch])} its time"))
    conv = _optional_table(pages, "conv1d")
    dilated = [r[RATIO_COLUMN] for r in conv or () if int(r["dilation"]) > 1]
    if dilated:
        rows.append(("`conv1d`, HiFi-GAN's dilated residual-block convolutions", "`mx.conv1d`", f"{_span(dilated)} faster"))
    for what, table in (("`conv1d`, HiFi-GAN's residual-block convolutions", conv),
                        ("the same, forward and backward", _optional_table(pages, "conv1d-backward"))):
        vs_torch = [_times_torch(row) for row in table or ()]
        if vs_torch and all(v is not None for v in vs_torch):
            rows.append((what, "PyTorch (CPU)", f"{_span([f'{v:.2f}' for v in vs_torch])} its time"))
    decoder = _optional_table(pages, "decoder")
    if decoder:
        named = {r["HiFi-GAN V1 generator"].split(" ")[0]: r for r in decoder}
        ours = named[MLX_DECONV_ROW]
        rows.append((f"HiFi-GAN V1 end to end, at a real-time factor of {ours['real-time factor']}", "MLX's ops",
                     f"{ours['speed-up over MLX ops']} faster"))
        if _paired(ours):
            rows.append(("HiFi-GAN V1 end to end", PAIRED_WITH_TORCH, _paired(ours)))
        elif TORCH_ROW in named:
            rows.append(("HiFi-GAN V1 end to end", "PyTorch (CPU)",
                         f"{_value(ours['seconds']) / _value(named[TORCH_ROW]['seconds']):.2f}x its time"))
    streaming = _optional_table(pages, "streaming")
    if streaming:
        rtf = {r["frames per step"]: r["real-time factor"] for r in streaming}
        first, *rest = list(rtf)
        rows.append(("streaming HiFi-GAN V1", "real time", f"real-time factor of {rtf[first]} at {first} frames a step"
                     + "".join(f", {rtf[k]} at {k}" for k in rest)))
    training = _optional_table(pages, "training")
    if training:
        for family, label in (("bigvgan", "a BigVGAN v2 training step"), ("hifigan", "a HiFi-GAN V1 training step")):
            for column, how in (("mlx_deconv / PyTorch", ""), ("compiled / PyTorch", ", compiled")):
                mine = [r for r in training if r["generator"].startswith(family)]
                paired = [r.get(column + ", paired", "-") for r in mine]
                if paired and all(p != "-" for p in paired):  # step by step, as the end-to-end rows
                    rows.append((label + how, "PyTorch (CPU), same weights, step by step",
                                 f"{_span([p.split()[0] for p in paired])} its time"))
                    continue
                ratios = [r[column] for r in mine if r.get(column, "-") != "-"]
                if ratios:
                    rows.append((label + how, "PyTorch (CPU), same weights", f"{_span(ratios)} its time"))
    generator = _optional_table(pages, "bigvgan")
    if generator:
        named = {r["BigVGAN v2 24 kHz generator"]: r for r in generator}
        mine = next(r for k, r in named.items() if k.startswith("mlx_deconv"))
        ours = _value(mine["seconds"])
        for k, r in named.items():
            if k.startswith("PyTorch"):
                rows.append(("BigVGAN v2 end to end", PAIRED_WITH_TORCH, _paired(mine)) if _paired(mine) else
                            ("BigVGAN v2 end to end", "PyTorch (CPU)", f"{ours / _value(r['seconds']):.2f}x its time"))
    models = _optional_table(pages, "models")
    if models:
        longest = max(int(r["frames"]) for r in models)
        ups = [r["speed-up"] for r in models if int(r["frames"]) == longest and r["model"] != "hifigan"]
        if ups:
            rows.append((f"mlx-audio's decoders under `patch_mlx()`, {longest} frames", "the same decoders on MLX",
                         f"{_span(ups)} faster"))
    short = _optional_table(pages, "short")
    if short:
        blas = short[0]["BLAS"]  # the forward run's BLAS, the one the other rows were measured behind
        for grid, what in (("fitting", "short calls, L 1-1024 (the grid the rule was fitted on)"),
                           ("held-out", "short calls, a held-out grid (batch 2-4, odd sizes, half precision)")):
            cells = [r for r in short if r["BLAS"] == blas and r["grid"] == grid]
            if cells:
                rows.append((what, "`mx.conv1d` / `mx.conv_transpose1d` called directly",
                             " / ".join(r["geomean"] for r in cells) + " faster by geomean; "
                             + " and ".join(f"{r['below 0.9x']} of {r['cells']}" for r in cells)
                             + " calls more than 10% slower"))
    where = _link_to_region(pages, "forward", locate(pages, "headline"))
    lines = ["| what | compared with | ratio |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return ("\n".join(lines) + f"\n\nCPU stream, float32: {_machine_and_blas(pages)}. One `bench` run of each kind; "
            f"the tables, with dates: {where}.\n")


# -- writing the regions from JSON ---------------------------------------------------------------
def _where(result: Dict, machine: Optional[str]) -> str:
    return f"{machine}; {result['machine']}" if machine else result["machine"]


def _settings(result: Dict) -> Tuple[int, int]:
    repeat, warmup = result.get("repeat"), result.get("warmup")
    if repeat is None or warmup is None:
        raise ValueError("this JSON does not record repeat and warmup: write it with a current `bench --json`")
    return repeat, warmup


def _torch_note(result: Dict) -> str:
    details = result.get("machine_details") or {}
    if not details.get("torch"):
        return ""
    return (f" PyTorch {details['torch']} was timed after every MLX timing of the run, with "
            f"{details.get('torch_threads')} threads (its default).")


def _stream(result: Dict) -> str:
    stream = result.get("stream", "default")
    return "the default stream" if stream == "default" else f"stream {stream}"


def _tuned_note(rows: List[Dict]) -> str:
    if not any(r.get("tuned") for r in rows):
        return ""
    return (" \"tuned\": autotuning's choice, timed in the same run; \"auto / tuned\": the rule's time over the "
            "tuned backend's.")


def _primed(result: Dict) -> bool:
    """Whether the run timed each call right after an untimed one (``bench --json`` records it)."""
    return result.get("timing") == "primed"


def _medians(result: Dict) -> str:
    from mlx_deconv.bench.timing import medians_phrase

    return medians_phrase(*_settings(result), _primed(result))


def caption(result: Dict, machine: Optional[str]) -> str:
    """The caption of a ``conv_transpose1d`` table."""
    return (f"{result['kind'].capitalize()}, measured on {_where(result, machine)}, "
            f"{result['dtype']}, {_stream(result)}, {_medians(result)} "
            f"(a dash: the backend would compute as `gemm` there).{_tuned_note(result['rows'])}"
            f"{_torch_note(result)}\n")


def table_region(result: Dict, machine: Optional[str]) -> str:
    from mlx_deconv import bench

    backward = result["kind"] != "forward"
    return caption(result, machine) + "\n" + bench.table(result["rows"], backward) + "\n"


def conv1d_region(result: Dict, machine: Optional[str]) -> str:
    from mlx_deconv.bench import conv1d as bench_conv1d

    repeat, _ = _settings(result)
    rows = result["conv1d_rows"]
    return (f"`conv1d`, {result['kind']}, HiFi-GAN V1's residual-block convolutions (\"same\" padding, "
            f"{bench_conv1d.FRAMES} mel frames: one second of 22.05 kHz audio at each stage's rate), measured on "
            f"{_where(result, machine)}, {result['dtype']}, {_stream(result)}, {_medians(result)}. "
            f"\"auto / builtin\": the speed-up over `mx.conv1d` in the same run.{_tuned_note(rows)}"
            f"{_torch_note(result)}\n\n" + bench_conv1d.table(rows, repeat, result.get("slow_seconds")) + "\n")


def decoder_region(result: Dict, machine: Optional[str]) -> str:
    from mlx_deconv.bench import decoder as bench_decoder

    repeat, warmup = _settings(result)
    dec = result["decoder"]
    c = dec["config"]
    join = lambda values: ", ".join(str(v) for v in values)
    return (f"A HiFi-GAN generator end to end ({c['upsample_initial_channel']} initial channels, rates "
            f"{join(c['upsample_rates'])}, kernels {join(c['upsample_kernel_sizes'])}, resblock \"{c['resblock']}\" "
            f"with kernels {join(c['resblock_kernel_sizes'])}), float32, {_stream(result)}, measured on "
            f"{_where(result, machine)}: "
            + bench_decoder.caption(dec, repeat, warmup, result.get("decoder_slow_seconds"), _primed(result))
            + _torch_note(result) + "\n\n" + bench_decoder.table(dec, repeat) + "\n")


def _blas_name(result: Dict) -> str:
    details = result.get("machine_details") or {}
    return f"`{details.get('blas')}`" if details.get("blas") else "the platform BLAS"


def blas_region(optimized: Dict, reference: Dict, machine: Optional[str]) -> str:
    """The forward run behind the optimized BLAS against the same benchmark behind the reference BLAS."""
    for result, want, flag in ((optimized, True, "--forward"), (reference, False, "--reference-blas")):
        details = result.get("machine_details") or {}
        if "blas_optimized" not in details:
            raise ValueError(f"{flag}: this JSON does not record the BLAS: write it with a current `bench --json`")
        if bool(details["blas_optimized"]) != want:
            raise ValueError(f"{flag} expects a run {'with' if want else 'without'} the optimized BLAS "
                             f"(MLX_DECONV_BLAS{'' if want else '=0'}), got {details.get('blas')!r}")
        if result.get("kind") != "forward":
            raise ValueError(f"{flag} expects a forward run, got {result.get('kind')!r}")
    _settings(optimized)  # fails early on a JSON without them
    lines = ["| row | matmul GFLOP/s, reference BLAS | matmul GFLOP/s, optimized | auto ms, reference BLAS "
             "| auto ms, optimized | speed-up |",
             "|---|---|---|---|---|---|"]
    matmul_ratios, speedups = [], {}

    def add(kind: str, name: str, ref_s: float, opt_s: float, ref_rate: str = "", opt_rate: str = "") -> None:
        speedups.setdefault(kind, []).append(ref_s / opt_s)
        show = (lambda s: f"{s:.2f} s") if kind == "decoder" else (lambda s: f"{s * 1e3:.1f}")
        lines.append(f"| {name} | {ref_rate} | {opt_rate} | {show(ref_s)} | {show(opt_s)} | {ref_s / opt_s:.1f}x |")

    ref_rows = {r["shape"]["name"]: r for r in reference.get("rows") or []}
    for row in optimized.get("rows") or []:
        ref = ref_rows.get(row["shape"]["name"])
        if ref is None:
            continue
        rates = ("", "")
        if row["shape"].get("groups", 1) == 1:  # the matmul of a grouped shape is thin: its rate says little
            ref_rate, opt_rate = row["gflop"] / ref["matmul_seconds"], row["gflop"] / row["matmul_seconds"]
            matmul_ratios.append(opt_rate / ref_rate)
            rates = (f"{ref_rate:.1f}", f"{opt_rate:.1f}")
        add("conv_transpose1d", row["shape"]["name"], ref["seconds"][ref["auto"]], row["seconds"][row["auto"]],
            *rates)
    ref_conv = {r["shape"]["name"]: r for r in reference.get("conv1d_rows") or []}
    for row in optimized.get("conv1d_rows") or []:
        ref = ref_conv.get(row["shape"]["name"])
        if ref is not None:
            add("conv1d", f"conv1d {row['shape']['name']}", ref["seconds"][ref["auto"]], row["seconds"][row["auto"]])
    if optimized.get("decoder") and reference.get("decoder"):
        add("decoder", "HiFi-GAN V1 end to end", reference["decoder"]["seconds"]["auto"],
            optimized["decoder"]["seconds"]["auto"])
    if len(lines) == 2:
        raise ValueError("--forward and --reference-blas have no row in common")
    span = lambda values: (f"{min(values):.1f}x" if f"{min(values):.1f}" == f"{max(values):.1f}"
                           else f"{min(values):.1f}-{max(values):.1f}x")
    said = []
    if matmul_ratios:
        said.append(f"MLX's own matmul (the FLOPs of each dense shape, on the same worker streams) ran "
                    f"{span(matmul_ratios)} faster")
    names = {"conv_transpose1d": "`conv_transpose1d`'s `auto`", "conv1d": "`conv1d`'s `auto`",
             "decoder": "the HiFi-GAN V1 generator"}
    said += [f"{names[kind]} ran {span(values)} faster" for kind, values in speedups.items()]
    where = machine or optimized["machine"].split(", CPU BLAS")[0]
    return (f"Measured on {where}, forward, {optimized['dtype']}, {_medians(optimized)}: the "
            f"same benchmark behind MLX's bundled {_blas_name(reference)} (`MLX_DECONV_BLAS=0`) and behind "
            f"{_blas_name(optimized)} loaded by `import mlx_deconv`. Behind the optimized BLAS, " + "; ".join(said) + ".\n\n"
            + "\n".join(lines) + "\n")


def _short_summary(result: Dict) -> List[Dict[str, str]]:
    """Per grid and op: cells, cells below 0.9x, ``mx / auto`` minimum and geomean, cells whose values disagree."""
    from mlx_deconv.bench import short_calls

    rows = result["short_calls"]
    if any("mx_over_auto" not in r for r in rows):
        raise ValueError("these short-calls rows compare `auto` with `builtin` (an older bench): rerun "
                         "`bench --only short --json PATH`, which compares with MLX's function called directly")
    out = []
    for grid, ops in short_calls.summary(rows).items():
        for op, v in ops.items():
            out.append(dict(grid=grid, op=op, cells=str(v["cells"]), below=str(v["below"]), min=f"{v['min']:.2f}x",
                            geomean=f"{v['geomean']:.2f}x", disagree=str(v["disagree"])))
    return out


def _short_medians() -> str:
    from mlx_deconv.bench import short_calls

    return short_calls.timing_phrase()


def short_region(result: Dict, reference: Optional[Dict], machine: Optional[str]) -> str:
    """The short-calls summary, against MLX's function called directly, per grid behind each BLAS that has a run."""
    from mlx_deconv.bench import short_calls

    runs = [(_blas_name(result), result)]
    if reference is not None and reference.get("short_calls"):
        runs.append(("the bundled reference BLAS (`MLX_DECONV_BLAS=0`)", reference))
    lines = [f"Short calls, {_stream(result)}, measured on {_where(result, machine)}, {_short_medians()}. "
             f"\"mx / auto\" is the time of MLX's function called directly (`mx.conv1d` / `mx.conv_transpose1d` "
             f"with MLX's own arguments, what a user would call instead) over `backend=\"auto\"`'s, paired per "
             f"round: above 1, `auto` is faster. The rule's thresholds were fitted on the fitting grid (batch 1, "
             f"{result['dtype']}, L 1-1024); the held-out grid (batch 2-4, odd lengths, C_in ≠ C_out, float16, "
             f"bfloat16 and float32, groups 2 and 8) was fitted on by nothing. \"values differ\": cells where "
             f"`auto`'s or MLX's output is off the float64 definition by more than {short_calls.AGREE_UNITS:g} "
             f"rounding units.", "",
             f"| BLAS | grid | op | cells | below {short_calls.SLOWER:g}x | mx / auto, minimum | geomean | values differ |",
             "|---|---|---|---|---|---|---|---|"]
    for name, run in runs:
        for r in _short_summary(run):
            lines.append(f"| {name} | {r['grid']} | `{r['op']}` | {r['cells']} | {r['below']} | {r['min']} | "
                         f"{r['geomean']} | {r['disagree']} |")
    return "\n".join(lines) + "\n"


def streaming_region(result: Dict, machine: Optional[str]) -> str:
    from mlx_deconv.bench import streaming as bench_streaming

    repeat, warmup = _settings(result)
    streamed = result["streaming"]
    return (f"HiFi-GAN V1 streamed (`StreamingHiFiGAN.step`), batch 1, float32, {_stream(result)}, measured on "
            f"{_where(result, machine)}; median of {repeat} steady steps after {warmup}. PyTorch: the same weights "
            f"run on the chunk plus the {streamed['context']} mel frames of left context its audio depends on."
            f"{_torch_note(result)}\n\n" + bench_streaming.table(streamed) + "\n")


def activation_region(result: Dict, machine: Optional[str]) -> str:
    from mlx_deconv.bench import bigvgan as bench_bigvgan

    repeat, warmup = _settings(result)
    big = result["bigvgan"]
    return (f"Measured on {_where(result, machine)}, {_stream(result)}. "
            + bench_bigvgan.caption(big, repeat, warmup) + _torch_note(result) + "\n\n"
            + bench_bigvgan.activation_table(big, repeat) + "\n")


def bigvgan_region(result: Dict, machine: Optional[str]) -> str:
    from mlx_deconv.bench import bigvgan as bench_bigvgan

    repeat, _ = _settings(result)
    return "The same run:\n\n" + bench_bigvgan.generator_table(result["bigvgan"], repeat) + "\n"


def training_region(result: Dict, machine: Optional[str]) -> str:
    from mlx_deconv.bench import training as bench_training

    return (f"A training step (forward, L1 loss, the gradient of every parameter), float32, {_stream(result)}, "
            f"measured on {_where(result, machine)}, {_medians(result)}.{_torch_note(result)}"
            + (" " + bench_training.paired_note(result["training"]) if bench_training.paired_note(result["training"])
               else "") + "\n\n"
            + bench_training.table(result["training"]) + "\n")


def models_region(result: Dict, machine: Optional[str]) -> str:
    from mlx_deconv.bench import patched_decoders as bench_models

    repeat, warmup = _settings(result)
    models = result["models"]
    return (f"Float32, {_stream(result)}, measured on {_where(result, machine)}. "
            + bench_models.caption(models, repeat, warmup, bench_models.SLOW) + "\n\n"
            + bench_models.table(models, repeat) + "\n")


def _parts(results: Sequence[Dict]) -> Dict[str, Dict]:
    """``{part: result}`` for the parts (``rows``, ``conv1d_rows``, ``decoder``) the forward results hold."""
    found: Dict[str, Dict] = {}
    for result in results:
        if result.get("kind") != "forward":
            raise ValueError(f"--forward expects a forward run, got {result.get('kind')!r}")
        for part in ("rows", "conv1d_rows", "decoder", "short_calls", "streaming", "bigvgan", "models", "training"):
            if result.get(part):
                if part in found:
                    raise ValueError(f"two --forward files hold {part!r}: give each part once")
                found[part] = result
    return found


def rewrite(pages: Mapping[str, str], forward=None, backward: Optional[Dict] = None, machine: Optional[str] = None,
            reference_blas: Optional[Dict] = None) -> Dict[str, str]:
    """The pages (``{path: text}``, as ``read_pages`` gives) with the given regions rewritten, wherever
    each is, and the headline recomputed.

    Args:
        forward: one forward ``bench --json`` result, or a list of them (each part from the one that has it).
        backward: a ``bench --backward --json`` result.
        reference_blas: a forward result run with ``MLX_DECONV_BLAS=0``, for the ``blas`` region.
    """
    pages = dict(pages)

    def put(name: str, body: str) -> None:
        page = locate(pages, name)
        pages[page] = replace_region(pages[page], name, body)

    forwards = [] if forward is None else [forward] if isinstance(forward, dict) else list(forward)
    parts = _parts(forwards)
    if "rows" in parts:
        put("forward", table_region(parts["rows"], machine))
    if "conv1d_rows" in parts:
        put("conv1d", conv1d_region(parts["conv1d_rows"], machine))
    if "decoder" in parts:
        put("decoder", decoder_region(parts["decoder"], machine))
    if "short_calls" in parts:
        put("short", short_region(parts["short_calls"], reference_blas, machine))
    if "streaming" in parts:
        put("streaming", streaming_region(parts["streaming"], machine))
    if "bigvgan" in parts:
        put("activation", activation_region(parts["bigvgan"], machine))
        put("bigvgan", bigvgan_region(parts["bigvgan"], machine))
    if "models" in parts:
        put("models", models_region(parts["models"], machine))
    if "training" in parts:
        put("training", training_region(parts["training"], machine))
    if backward is not None:
        if backward.get("kind") != "forward+backward":
            raise ValueError(f"--backward expects a forward+backward run, got {backward.get('kind')!r}")
        put("backward", table_region(backward, machine))
        if backward.get("conv1d_rows"):
            put("conv1d-backward", conv1d_region(backward, machine))
    if reference_blas is not None:
        if not forwards:
            raise ValueError("--reference-blas is compared with --forward: give both")
        merged = dict(forwards[0])
        for part, result in parts.items():
            merged[part] = result[part]
        put("blas", blas_region(merged, reference_blas, machine))
    put("headline", headline(pages))
    return pages


def headline_agrees(pages: Mapping[str, str]) -> Tuple[bool, str, str]:
    """``(agrees, the headline written, the headline its tables give)``."""
    written, computed = page_region(pages, "headline"), headline(pages)
    return written == computed, written, computed


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Rewrite the benchmark regions of README.md and docs/*.md "
                                                 "from bench --json output.")
    parser.add_argument("--forward", nargs="+", help="JSON of forward `mlx-deconv bench --json PATH` runs")
    parser.add_argument("--backward", help="JSON of `mlx-deconv bench --backward --json PATH`")
    parser.add_argument("--reference-blas", help="JSON of the forward run with MLX_DECONV_BLAS=0 (the blas region)")
    parser.add_argument("--machine", help="how to name the machine in the captions (default: the JSON's)")
    parser.add_argument("--root", default=str(ROOT), help="the folder of README.md and docs/ (default: this "
                                                          "repository)")
    parser.add_argument("--check", action="store_true", help="only check that the headline agrees with the tables")
    args = parser.parse_args(argv)
    root = Path(args.root)
    pages = read_pages(root)
    if args.check:
        agrees, written, computed = headline_agrees(pages)
        if not agrees:
            print(f"headline disagrees with the tables:\n  {locate(pages, 'headline')}: {written}  "
                  f"tables: {computed}")
        return 0 if agrees else 1
    load = lambda p: json.loads(Path(p).read_text()) if p else None
    forward = [load(p) for p in args.forward] if args.forward else None
    new = rewrite(pages, forward, load(args.backward), args.machine, load(args.reference_blas))
    for page, text in new.items():
        if text != pages[page]:
            (root / page).write_text(text)
            print(f"rewrote {root / page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
