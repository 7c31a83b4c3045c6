"""The README and docs run as written: code blocks, commands, paths and links, and figures that agree.

``README.md`` is the front door; the reference is in ``docs/*.md``, one page per subject. Every
``python`` block of either is a whole program and runs; a block not meant to run is not ``python``
(a signature is ``text``), and one that needs PyTorch follows a ``<!-- readme-test: needs torch -->``
line. The benchmark tables sit in the docs pages and the headline in the README, between the
``<!-- bench:NAME -->`` markers that ``tools/readme_figures.py`` writes.
"""

import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]  # whose python blocks run
DOCS = [*PAGES, ROOT / "metal" / "README.md"]  # whose links and paths resolve
NEEDS_TORCH = "<!-- readme-test: needs torch -->"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def load_figures():
    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "tools" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def blocks(text, language):
    """``(line, code, needs_torch)`` of every fenced block in ``language``, in order."""
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) == language:
            before = text[:match.start()].rstrip().splitlines()
            found.append((text.count("\n", 0, match.start()) + 1, match.group(2),
                          bool(before) and before[-1].strip() == NEEDS_TORCH))
    return found


def name(doc):
    return doc.relative_to(ROOT).as_posix()


def all_blocks(language, docs=PAGES):
    """``(page, line, code, needs_torch)`` of every block in ``language`` of the given pages."""
    return [(name(doc), *block) for doc in docs for block in blocks(doc.read_text(), language)]


def pages_text():
    return "\n".join(doc.read_text() for doc in PAGES)


PYTHON_BLOCKS = all_blocks("python")


def has_torch():
    return importlib.util.find_spec("torch") is not None


def test_readme_has_python_blocks():
    assert len([b for b in PYTHON_BLOCKS if b[0] == "README.md"]) >= 3
    assert {"docs/ops.md", "docs/layers.md", "docs/vocoders.md"} <= {b[0] for b in PYTHON_BLOCKS}


@pytest.mark.parametrize("doc, line, code, needs_torch", PYTHON_BLOCKS,
                         ids=[f"{b[0]}:line{b[1]}" for b in PYTHON_BLOCKS])
def test_python_block_runs_in_a_fresh_process(doc, line, code, needs_torch, tmp_path):
    """Each block is a whole program: run alone, outside the repository, it finishes and prints what it says."""
    if needs_torch and not has_torch():
        pytest.skip(f"this {doc} block needs PyTorch, which is not installed")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{doc} block at line {line}:\n{result.stderr[-3000:]}"
    # A print line's trailing comment (up to a colon) is what that line prints.
    prints = [l for l in code.splitlines() if l.startswith("print(")]
    printed = result.stdout.splitlines()
    assert len(printed) == len(prints), result.stdout
    for source, got in zip(prints, printed):
        assert "#" in source, f"{doc} line {line}: say what {source!r} prints"
        want = source.split("#", 1)[1].split(":")[0]
        assert got.replace(" ", "") == want.replace(" ", ""), f"{doc} line {line}: {source!r} printed {got!r}"


def test_signatures_are_not_python_blocks():
    """Only programs go in ``python`` blocks; a signature is ``text``."""
    for doc, line, code, _ in PYTHON_BLOCKS:
        compile(code, f"{doc}:{line}", "exec")
    signatures = "".join(code for _, _, code, _ in all_blocks("text"))
    assert "conv_transpose1d(x, weight, bias=None" in signatures and "conv1d(x, weight, bias=None" in signatures


COMMAND = re.compile(r"^(make( \w+)*( TORCH=)?|\.venv/bin/\S+|python -m pip install \S+)( |$)")


@pytest.mark.parametrize("doc", PAGES, ids=[name(d) for d in PAGES])
def test_every_shell_command_works_after_its_setup_step(doc):
    """Commands go through ``make`` or name ``.venv/bin/...``; only Install's pip lines use your own python."""
    text = doc.read_text()
    for line, code, _ in blocks(text, "sh"):
        for command in code.splitlines():
            command = command.split("#")[0].strip()
            if command:
                assert COMMAND.match(command), f"{name(doc)} line {line}: {command!r}"
    for line, code, _ in blocks(text, "text"):
        for command in code.splitlines():
            if command.startswith(("python", "mlx-deconv", ".venv")):
                assert command.startswith(".venv/bin/"), command
    # Inline commands too: no bare `python examples/...` or `mlx.launch` that would miss the venv.
    bare = re.search(r"`(python (?!-m pip install)|mlx\.launch |pytest |mlx-deconv )", text)
    assert not bare, text[bare.start():bare.start() + 80]


def test_bench_defaults_match_the_cli():
    from mlx_deconv.cli import build_parser

    args = build_parser().parse_args(["bench"])
    text = pages_text()
    assert f"[--repeat {args.repeat}]" in text and f"[--warmup {args.warmup}]" in text
    assert f"[--slow {args.slow:g}]" in text and f"[--decoder-seconds {args.decoder_seconds:g}]" in text
    from mlx_deconv import bench

    assert f"[--only {' '.join(bench.PARTS)}]" in text


def test_examples_install_hints_work_from_a_clone():
    """No example tells users to install from an index the package is not on yet."""
    for path in sorted((ROOT / "examples").glob("*.py")):
        text = path.read_text()
        assert "pip install 'mlx-deconv" not in text and 'pip install "mlx-deconv' not in text, path.name
        for run in re.findall(r"Run: (\S+)", text):
            assert run.startswith(".venv/bin/"), (path.name, run)


def slug(heading):
    """GitHub's anchor of a heading: lower case, every character but letters, digits, ``_``, ``-`` and
    spaces dropped, spaces made hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc):
    """The anchors of ``doc``'s headings (outside code blocks), repeated ones numbered as GitHub does."""
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6} (.+?)#*$", FENCE.sub("", doc.read_text()), re.M):
        base = slug(heading)
        found.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return found


def test_slugs_are_githubs():
    assert slug("The `auto` rule") == "the-auto-rule"
    assert slug("Moved from code comments (backends) — 2026-11-30") == "moved-from-code-comments-backends--2026-11-30"
    assert slug("The benchmark's decoder shapes (`bench.SHAPES`)") == "the-benchmarks-decoder-shapes-benchshapes"


@pytest.mark.parametrize("doc", DOCS, ids=[name(d) for d in DOCS])
def test_links_and_paths_resolve(doc):
    """Every relative link and the heading it points to, every repository path in backticks and every test it
    names exists."""
    text = doc.read_text()
    missing = []
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", FENCE.sub("", text)):
        if re.match(r"[a-z]+://", target):
            continue
        path = (doc.parent / target) if target else doc
        if not path.exists():
            missing.append(target)
        elif anchor and (path.suffix != ".md" or anchor not in anchors(path)):
            missing.append(f"{target}#{anchor}")
    assert "../shared" not in text, f"{name(doc)} points outside the repository"
    for path in re.findall(r"`((?:mlx_deconv|tests|docs|metal|examples|tools)/[\w./-]*\w)`", text):
        if not (ROOT / path).exists():
            missing.append(path)
    test_sources = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for module in set(re.findall(r"`(test_\w+\.py)`", text)):
        if not (ROOT / "tests" / module).exists():
            missing.append(module)
    for test in set(re.findall(r"`(test_\w+)`", text)):
        if f"def {test}(" not in test_sources:
            missing.append(test)
    assert not missing, f"{doc.relative_to(ROOT)} names what does not exist: {missing}"
    assert "DESIGN.md" not in text, "cite docs/design.md, not a DESIGN.md outside the repository"


def _table(body):
    """``[{column: cell}]`` of the Markdown table in ``body``, read here independently of the script."""
    lines = [r for r in body.splitlines() if r.startswith("|")]
    if len(lines) < 3:
        return None
    cells = lambda r: [c.strip() for c in r.strip().strip("|").split("|")]
    return [dict(zip(cells(lines[0]), cells(r))) for r in lines[2:]]


def _number(cell):
    return float(cell.rstrip("x*"))


def read_pages(root=ROOT):
    """``{path: text}`` of README.md and docs/*.md under ``root``, read here independently of the script."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_text()
            for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))]}


def copy_pages(tmp_path):
    """A copy of README.md and docs/*.md under ``tmp_path``, for the script to rewrite."""
    (tmp_path / "docs").mkdir(parents=True, exist_ok=True)
    for page, text in read_pages().items():
        (tmp_path / page).write_text(text)
    return tmp_path


def assert_headline_says(figures, root, pages, *rows):
    """The rewritten headline holds each of ``rows``, its figures are the tables' and ``--check`` agrees."""
    headline = in_pages(pages, "headline")
    for said in rows:
        assert said in headline, headline
    assert headline_figures(headline) == expected_headline_figures(pages)
    assert figures.main(["--check", "--root", str(root)]) == 0


def in_pages(pages, name):
    """Region ``name``'s text, from the one page that holds it."""
    holders = [text for text in pages.values() if f"<!-- bench:{name} -->" in text]
    assert len(holders) == 1, f"{len(holders)} pages hold region {name}"
    return re.search(rf"<!-- bench:{name} -->\n(.*?)<!-- /bench:{name} -->", holders[0], re.S).group(1)


def test_regions_sit_where_the_docs_say():
    """The headline in the README; the benchmark tables in docs/performance.md, the BLAS table in docs/blas.md."""
    pages = read_pages()
    for region, page in (("headline", "README.md"), ("forward", "docs/performance.md"),
                         ("backward", "docs/performance.md"), ("conv1d", "docs/performance.md"),
                         ("decoder", "docs/performance.md"), ("blas", "docs/blas.md")):
        assert [p for p, text in pages.items() if f"<!-- bench:{region} -->" in text] == [page], region
    assert "(docs/performance.md#the-benchmark)" in in_pages(pages, "headline")


def paired(row):
    """The median of a row's paired ratio to PyTorch (``"1.14x (0.91-1.25)"``), or None without one."""
    cell = row.get("time / PyTorch's, paired", "-")
    return None if cell in ("-", "—") else _number(cell.split()[0])


def expected_headline_figures(pages):
    """Every figure the headline should say, in order, as ``(low, high)`` (``(v, v)`` for one value)."""
    forward = {r["shape"]: r for r in _table(in_pages(pages, "forward"))}
    backward = {r["shape"]: r for r in _table(in_pages(pages, "backward"))}
    hifi = [s for s in forward if s.startswith("hifigan")]
    span = lambda values: (min(values), max(values))
    ratio = lambda rows, s: _number(rows[s]["auto / builtin"])
    figures_ = [span([ratio(forward, s) for s in hifi]), span([ratio(backward, s) for s in hifi])]
    times_torch = lambda row: round(_number(row[row["auto"] + " ms"]) / _number(row["torch ms"]), 2)
    for rows in (forward, backward):
        if all(rows[s].get("torch ms") for s in hifi):
            figures_.append(span([times_torch(rows[s]) for s in hifi]))
    conv = _table(in_pages(pages, "conv1d"))
    values = [_number(r["auto / builtin"]) for r in conv or () if int(r["dilation"]) > 1]
    figures_ += [span(values)] if values else []
    for rows in (conv, _table(in_pages(pages, "conv1d-backward"))):
        if rows and all(r.get("torch ms") for r in rows):
            figures_.append(span([times_torch(r) for r in rows]))
    decoder = _table(in_pages(pages, "decoder"))
    if decoder:
        rows = {r["HiFi-GAN V1 generator"].split()[0]: r for r in decoder}
        ours = rows["mlx_deconv"]
        figures_ += [span([_number(ours["real-time factor"])]), span([_number(ours["speed-up over MLX ops"])])]
        if paired(ours):
            figures_.append(span([paired(ours)]))
        elif "PyTorch" in rows:
            figures_.append(span([round(_number(ours["seconds"]) / _number(rows["PyTorch"]["seconds"]), 2)]))
    streaming = _table(in_pages(pages, "streaming"))
    if streaming:
        figures_.append(span([_number(streaming[0]["real-time factor"])]))  # only the first carries the phrase
    training = _table(in_pages(pages, "training"))
    for family in ("bigvgan", "hifigan"):
        for column in ("mlx_deconv / PyTorch", "compiled / PyTorch"):
            mine = [r for r in training or () if r["generator"].startswith(family)]
            steps = [r.get(column + ", paired", "-") for r in mine]
            if steps and "-" not in steps:  # step by step, where every row has it
                figures_.append(span([_number(c.split()[0]) for c in steps]))
                continue
            ratios = [_number(r[column]) for r in mine if r.get(column, "-") != "-"]
            figures_ += [span(ratios)] if ratios else []
    generator = _table(in_pages(pages, "bigvgan"))
    if generator:
        rows = {r["BigVGAN v2 24 kHz generator"]: _number(r["seconds"]) for r in generator}
        mine = next(r for r in generator if r["BigVGAN v2 24 kHz generator"].startswith("mlx_deconv"))
        ours = next(v for k, v in rows.items() if k.startswith("mlx_deconv"))
        figures_ += [span([paired(mine) or round(ours / v, 2)]) for k, v in rows.items() if k.startswith("PyTorch")]
    models = _table(in_pages(pages, "models"))
    if models:
        longest = max(int(r["frames"]) for r in models)
        figures_.append(span([_number(r["speed-up"]) for r in models if int(r["frames"]) == longest
                              and r["model"] != "hifigan"]))
    short = _table(in_pages(pages, "short"))
    for grid in ("fitting", "held-out"):
        figures_ += [span([_number(r["geomean"])]) for r in short or ()
                     if r["BLAS"] == short[0]["BLAS"] and r["grid"] == grid]
    return figures_


def headline_figures(headline):
    """The figures the headline says, in order: each ``lo-hix`` or ``vx`` span, and the real-time factor."""
    found = re.findall(r"(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?x\b|real-time factor of (\d+(?:\.\d+)?)", headline)
    return [(float(lo or rtf), float(hi or lo or rtf)) for lo, hi, rtf in found]


def test_headline_agrees_with_the_tables():
    """The README's headline says what the tables in docs/ say."""
    figures = load_figures()
    agrees, written, computed = figures.headline_agrees(figures.read_pages())
    assert agrees, f"README: {written!r}\ntables: {computed!r}"
    # And it says what the tables say, read independently here.
    pages = read_pages()
    assert headline_figures(in_pages(pages, "headline")) == expected_headline_figures(pages)


def fake_run(kind, scale, *, optimized=True, slower=1.0, torch=False, conv1d=False, decoder=False):
    """A bench ``--json`` result: every transposed shape with ``builtin`` ``scale * (1 + i/10)`` times slower than
    ``auto``; ``conv1d`` rows with ``builtin`` 30+j times slower (dilated) or 2+j/10 (not); a decoder 50x faster
    than MLX's ops and twice PyTorch's time; PyTorch twice as fast as ``auto`` on the transposed shapes; every
    MLX time (matmul too) ``slower`` times longer."""
    from mlx_deconv import bench
    from mlx_deconv.bench import conv1d as bench_conv1d

    rows = []
    for i, shape in enumerate(bench.SHAPES):
        auto = 0.01 * (i + 1) * slower
        rows.append(dict(shape=dataclasses.asdict(shape), auto="gemm", tuned="gemm",
                         seconds=dict(builtin=auto * scale * (1 + i / 10), gemm=auto, winograd=None),
                         torch_seconds=0.005 * (i + 1) if torch else None, matmul_seconds=auto,
                         copy_bytes_per_second=1e10, op_bytes=1e6, peak_bytes=2e6, workers=2, gflop=1.0))
    conv_rows = []
    for j, shape in enumerate(bench_conv1d.CONV1D_SHAPES if conv1d else []):
        auto = 0.002 * (j + 1) * slower
        factor = 30 + j if shape.dilation > 1 else 2 + j / 10
        conv_rows.append(dict(shape=dataclasses.asdict(shape), auto="gemm", tuned="gemm",
                              seconds=dict(builtin=auto * factor, gemm=auto), runs=dict(builtin=2, gemm=9),
                              torch_seconds=0.001 if torch else None, gflop=0.5))
    dec = None
    if decoder:
        from mlx_deconv import hifigan

        dec = dict(config=json.loads(json.dumps(hifigan.V1.to_dict())), frames=43, audio_seconds=0.5,
                   seconds=dict(builtin=100.0 * slower, auto=2.0 * slower), runs=dict(builtin=1, auto=9),
                   max_abs_diff=dict(builtin=1e-6))
        if torch:
            dec["seconds"]["torch"], dec["runs"]["torch"], dec["max_abs_diff"]["torch"] = 1.0, 9, 2e-6
    blas = "libmkl_rt.so.2" if optimized else "libblas.so.3"
    return dict(machine=f"Linux x86_64, mlx 0.0, python 3, CPU BLAS {blas}", kind=kind, dtype="float32",
                stream="default", repeat=9, warmup=3, slow_seconds=0.5, decoder_slow_seconds=10.0,
                machine_details=dict(blas=blas, blas_optimized=optimized, torch="2.0" if torch else None,
                                     torch_threads=2 if torch else None),
                rows=rows, conv1d_rows=conv_rows, decoder=dec)


def write(tmp_path, name, run):
    path = tmp_path / name
    path.write_text(json.dumps(run))
    return str(path)


def test_figures_script_rewrites_tables_and_headline(tmp_path):
    from mlx_deconv import bench

    figures = load_figures()
    root = copy_pages(tmp_path / "repo")
    forward = write(tmp_path, "f.json", fake_run("forward", 10))
    backward = write(tmp_path, "b.json", fake_run("forward+backward", 20))
    assert figures.main(["--forward", forward, "--backward", backward, "--root", str(root),
                         "--machine", "a test box"]) == 0
    pages = read_pages(root)
    assert bench.table(fake_run("forward", 10)["rows"]) in in_pages(pages, "forward")
    assert bench.table(fake_run("forward+backward", 20)["rows"], True) in in_pages(pages, "backward")
    assert "median of 9 after 3 warm-up" in in_pages(pages, "forward")
    assert "a test box" in pages["docs/performance.md"]
    # hifigan-1..4 are shapes 0..3: builtin/auto = scale * (1 + i/10).
    assert in_pages(pages, "headline").startswith(
        "| what | compared with | ratio |\n|---|---|---|\n| `conv_transpose1d`, HiFi-GAN's upsampling layers | "
        "`mx.conv_transpose1d` | 10.0-13.0x faster |\n| the same, forward and backward | `mx.conv_transpose1d` | "
        "20.0-26.0x faster |")
    assert figures.main(["--check", "--root", str(root)]) == 0
    assert headline_figures(in_pages(pages, "headline")) == expected_headline_figures(pages)
    # Outside the regions nothing changed, in any page; running again changes nothing.
    strip = lambda t: re.sub(r"<!-- bench:(\w+) -->.*?<!-- /bench:\1 -->", "", t, flags=re.S)
    assert {p: strip(t) for p, t in pages.items()} == {p: strip(t) for p, t in read_pages().items()}
    figures.main(["--forward", forward, "--backward", backward, "--root", str(root), "--machine", "a test box"])
    assert read_pages(root) == pages
    # A headline edited by hand is caught.
    (root / "README.md").write_text(pages["README.md"].replace("10.0-13.0x", "10.0-14.0x"))
    assert figures.main(["--check", "--root", str(root)]) == 1


def test_figures_script_writes_conv1d_decoder_and_their_headline(tmp_path):
    """One forward run with every part (PyTorch too) fills every forward region; the headline table says
    conv1d over mx.conv1d with dilation, the decoder over MLX's ops and against PyTorch."""
    from mlx_deconv.bench import conv1d as bench_conv1d
    from mlx_deconv.bench import decoder as bench_decoder

    figures = load_figures()
    root = copy_pages(tmp_path / "repo")
    run = fake_run("forward", 10, torch=True, conv1d=True, decoder=True)
    assert figures.main(["--forward", write(tmp_path, "f.json", run), "--root", str(root)]) == 0
    pages = read_pages(root)
    assert bench_conv1d.table(run["conv1d_rows"], 9, 0.5) in in_pages(pages, "conv1d")
    assert bench_decoder.table(run["decoder"], 9) in in_pages(pages, "decoder")
    assert ("(512 initial channels, rates 8, 8, 2, 2, kernels 16, 16, 4, 4, resblock \"1\" with kernels 3, 7, 11)"
            in in_pages(pages, "decoder"))
    assert "TODO(lead)" not in in_pages(pages, "conv1d") + in_pages(pages, "decoder")
    assert "PyTorch 2.0 was timed after every MLX timing" in in_pages(pages, "conv1d")
    # Shapes 1, 2, 4, 5 are dilated (30 + j); 0 and 3 are not (2 + j/10).
    assert_headline_says(figures, root, pages,
                         "| HiFi-GAN's upsampling layers | PyTorch (CPU) | 2.00x its time |",
                         "| `conv1d`, HiFi-GAN's dilated residual-block convolutions | `mx.conv1d` | 31.0-35.0x faster |",
                         "| HiFi-GAN V1 end to end, at a real-time factor of 4 | MLX's ops | 50.0x faster |",
                         "| HiFi-GAN V1 end to end | PyTorch (CPU) | 2.00x its time |")
    # The parts of separate runs (bench --only ...) are taken each from the file that has it.
    parts = copy_pages(tmp_path / "parts")
    only_transposed = dict(run, conv1d_rows=[], decoder=None)
    only_rest = dict(run, rows=[])
    assert figures.main(["--forward", write(tmp_path, "t.json", only_transposed), write(tmp_path, "r.json", only_rest),
                         "--root", str(parts)]) == 0
    assert read_pages(parts) == pages
    with pytest.raises(ValueError, match="two --forward files"):
        figures.rewrite(figures.read_pages(), forward=[run, only_rest])


def test_figures_script_writes_the_blas_effect(tmp_path):
    figures = load_figures()
    root = copy_pages(tmp_path / "repo")
    fast = fake_run("forward", 10, conv1d=True, decoder=True)
    slow = fake_run("forward", 10, optimized=False, slower=4.0, conv1d=True, decoder=True)
    assert figures.main(["--forward", write(tmp_path, "f.json", fast), "--reference-blas",
                         write(tmp_path, "r.json", slow), "--root", str(root)]) == 0
    blas = in_pages(read_pages(root), "blas")
    assert "TODO(lead)" not in blas and "`libblas.so.3` (`MLX_DECONV_BLAS=0`)" in blas and "`libmkl_rt.so.2`" in blas
    assert ("Behind the optimized BLAS, MLX's own matmul (the FLOPs of each dense shape, on the same worker streams) "
            "ran 4.0x faster; `conv_transpose1d`'s `auto` ran 4.0x faster; `conv1d`'s `auto` ran 4.0x faster; the "
            "HiFi-GAN V1 generator ran 4.0x faster.") in blas
    # hifigan-1: 1 GFLOP in 10 ms of matmul (40 ms behind the reference BLAS).
    assert "| hifigan-1 | 25.0 | 100.0 | 40.0 | 10.0 | 4.0x |" in blas
    assert "| bigvgan-aa |  |  |" in blas  # a grouped shape's thin matmul says little: no rate
    assert "| HiFi-GAN V1 end to end |  |  | 8.00 s | 2.00 s | 4.0x |" in blas
    # The two runs must be what their flags say.
    with pytest.raises(ValueError, match="--reference-blas expects a run without"):
        figures.rewrite(figures.read_pages(), forward=fast, reference_blas=fast)
    with pytest.raises(ValueError, match="--forward expects a run with"):
        figures.rewrite(figures.read_pages(), forward=slow, reference_blas=slow)
    with pytest.raises(ValueError, match="give both"):
        figures.rewrite(figures.read_pages(), reference_blas=slow)


def test_figures_script_refuses_a_json_without_its_settings(tmp_path):
    figures = load_figures()
    run = fake_run("forward", 10)
    del run["repeat"]
    with pytest.raises(ValueError, match="repeat"):
        figures.rewrite(figures.read_pages(), forward=run)
    with pytest.raises(ValueError, match="forward"):
        figures.rewrite(figures.read_pages(), forward=fake_run("forward+backward", 2))
    with pytest.raises(ValueError, match="forward\\+backward"):
        figures.rewrite(figures.read_pages(), backward=fake_run("forward", 2))


def test_design_tables_list_the_bench_shapes():
    """docs/design.md's tables of the benchmark's shapes are the shapes ``bench`` runs."""
    from mlx_deconv import bench
    from mlx_deconv.bench import conv1d as bench_conv1d

    text = (ROOT / "docs" / "design.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] and not cells[0].startswith(("name", "---")):
            rows[cells[0]] = cells
    for s in bench.SHAPES:
        assert rows[s.name][1:10] == [str(v) for v in (s.batch, s.length, s.in_channels, s.out_channels,
                                                       s.kernel_size, s.stride, s.padding, s.dilation, s.groups)]
    for s in bench_conv1d.CONV1D_SHAPES:
        assert rows[s.name][1:5] == [str(v) for v in (s.length, s.channels, s.kernel_size, s.dilation)]


def test_no_todo_is_left_for_the_lead():
    """Fails while a figure still waits for a measurement: each TODO(lead) says the command that fills it."""
    todos = [f"{page}: {line.strip()[:120]}" for page, text in read_pages().items() for line in text.splitlines()
             if "TODO(lead)" in line]
    assert not todos, "README or docs still have TODO(lead):\n" + "\n".join(todos)


def test_make_says_what_it_installs_before_installing():
    """Each pip install in the Makefile's recipes comes after an echo naming what it installs."""
    make = __import__("shutil").which("make")
    if make is None:
        pytest.skip("no make on this machine")
    for torch_setting, says in (("TORCH=torch==2.13.0", "installing torch==2.13.0 for the PyTorch parity tests"),
                                ("TORCH=", "PyTorch not installed")):
        plan = subprocess.run([make, "-n", "-B", "test", torch_setting], cwd=ROOT, capture_output=True, text=True,
                              timeout=60).stdout.splitlines()
        installs = [i for i, line in enumerate(plan) if "pip install" in line and "--upgrade pip" not in line]
        assert installs, plan
        for i in installs:
            assert any(line.startswith("echo \"make: ") for line in plan[:i]), plan[:i + 1]
        assert any(says in line for line in plan), plan
        assert "make test TORCH=" in "\n".join(plan)


def test_figures_script_writes_conv1d_gradients_and_training_with_their_headline(tmp_path):
    """A backward run's conv1d rows fill their own region, a forward run's training rows theirs, and the
    headline says each against PyTorch: from the tables, as the reader sees them."""
    from mlx_deconv.bench import conv1d as bench_conv1d
    from mlx_deconv.bench import training as bench_training

    figures = load_figures()
    root = copy_pages(tmp_path / "repo")
    forward = fake_run("forward", 10, torch=True, conv1d=True)
    forward["training"] = {"rows": [
        dict(name=name, family=name.split("-")[0], channels=c, frames=16, batch=2, samples=4096, parameters=10**6,
             seconds=dict(mlx_deconv=s, compiled=s / 2, torch=0.2), runs=dict(mlx_deconv=5, compiled=5, torch=5),
             loss=0.5, torch_loss=0.5, loss_error=dict(mlx_deconv=1e-7, torch=1e-8),
             gradient_error=dict(mlx_deconv=2e-6, torch=3e-6), gradients_compared=40, compiled_difference=0.0,
             **({} if name.startswith("hifigan") else dict(paired={
                 "mlx_deconv": dict(ratio=s * 2, ratios=(s * 2, s * 2.2), pause=0.5),
                 "compiled": dict(ratio=s, ratios=(s, s), pause=0.5)})))
        for name, c, s in (("bigvgan-128", 128, 0.5), ("bigvgan-256", 256, 0.7), ("hifigan-v1", 512, 0.3))]}
    backward = fake_run("forward+backward", 20, torch=True, conv1d=True)
    assert figures.main(["--forward", write(tmp_path, "f.json", forward), "--backward",
                         write(tmp_path, "b.json", backward), "--root", str(root)]) == 0
    pages = read_pages(root)
    assert bench_conv1d.table(backward["conv1d_rows"], 9, 0.5) in in_pages(pages, "conv1d-backward")
    assert "forward+backward" in in_pages(pages, "conv1d-backward")
    assert bench_training.table(forward["training"]) in in_pages(pages, "training")
    assert_headline_says(figures, root, pages,
                         "| a BigVGAN v2 training step | PyTorch (CPU), same weights, step by step | 1.00-1.40x its time |",
                         "| a BigVGAN v2 training step, compiled | PyTorch (CPU), same weights, step by step "
                         "| 0.50-0.70x its time |",
                         "| a HiFi-GAN V1 training step | PyTorch (CPU), same weights | 1.50x its time |",
                         "| a HiFi-GAN V1 training step, compiled | PyTorch (CPU), same weights | 0.75x its time |")
