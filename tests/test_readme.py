"""The README and docs run as written: code blocks, commands, paths and links, and figures that agree."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "metal" / "README.md"]
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


PYTHON_BLOCKS = blocks(README.read_text(), "python")


def has_torch():
    return importlib.util.find_spec("torch") is not None


def test_readme_has_python_blocks():
    assert len(PYTHON_BLOCKS) >= 3


@pytest.mark.parametrize("line, code, needs_torch", PYTHON_BLOCKS, ids=[f"line{b[0]}" for b in PYTHON_BLOCKS])
def test_python_block_runs_in_a_fresh_process(line, code, needs_torch, tmp_path):
    """Each block is a whole program: run alone, outside the repository, it finishes and prints what it says."""
    if needs_torch and not has_torch():
        pytest.skip("this README block needs PyTorch, which is not installed")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"README.md block at line {line}:\n{result.stderr[-3000:]}"
    # A print line's trailing comment (up to a colon) is what that line prints.
    prints = [l for l in code.splitlines() if l.startswith("print(")]
    printed = result.stdout.splitlines()
    assert len(printed) == len(prints), result.stdout
    for source, got in zip(prints, printed):
        assert "#" in source, f"README.md line {line}: say what {source!r} prints"
        want = source.split("#", 1)[1].split(":")[0]
        assert got.replace(" ", "") == want.replace(" ", ""), f"README.md line {line}: {source!r} printed {got!r}"


def test_signatures_are_not_python_blocks():
    """Only programs go in ``python`` blocks; a signature is ``text``."""
    for _, code, _ in PYTHON_BLOCKS:
        compile(code, "README.md", "exec")
    assert "conv_transpose1d(x, weight, bias=None" in "".join(code for _, code, _ in blocks(README.read_text(), "text"))


COMMAND = re.compile(r"^(make( \w+)*( TORCH=)?|\.venv/bin/\S+|python -m pip install \S+)( |$)")


def test_every_shell_command_works_after_its_setup_step():
    """Commands go through ``make`` or name ``.venv/bin/...``; only Install's pip lines use your own python."""
    text = README.read_text()
    for line, code, _ in blocks(text, "sh"):
        for command in code.splitlines():
            command = command.split("#")[0].strip()
            if command:
                assert COMMAND.match(command), f"README.md line {line}: {command!r}"
    for line, code, _ in blocks(text, "text"):
        for command in code.splitlines():
            if command.startswith(("python", "mlx-deconv", ".venv")):
                assert command.startswith(".venv/bin/"), command
    # Inline commands too: no bare `python examples/...` or `mlx.launch` that would miss the venv.
    bare = re.search(r"`(python (?!-m pip install)|mlx\.launch |pytest |mlx-deconv )", text)
    assert not bare, text[bare.start():bare.start() + 80]


def test_bench_defaults_match_the_cli():
    from mlx_deconv.__main__ import build_parser

    args = build_parser().parse_args(["bench"])
    text = README.read_text()
    assert f"[--repeat {args.repeat}]" in text and f"[--warmup {args.warmup}]" in text


def test_examples_install_hints_work_from_a_clone():
    """No example tells users to install from an index the package is not on yet."""
    for path in sorted((ROOT / "examples").glob("*.py")):
        text = path.read_text()
        assert "pip install 'mlx-deconv" not in text and 'pip install "mlx-deconv' not in text, path.name
        for run in re.findall(r"Run: (\S+)", text):
            assert run.startswith(".venv/bin/"), (path.name, run)


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_links_and_paths_resolve(doc):
    """Every relative link, every repository path in backticks and every test it names exists."""
    text = doc.read_text()
    missing = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+://", target) and not (doc.parent / target).exists():
            missing.append(target)
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


def test_headline_agrees_with_the_tables():
    figures = load_figures()
    agrees, written, computed = figures.headline_agrees(README.read_text())
    assert agrees, f"README: {written!r}\ntables: {computed!r}"
    # And it says what the tables say, read independently here.
    text = README.read_text()
    ratios = {}
    for name in ("forward", "backward"):
        body = figures.region(text, name)
        rows = [r for r in body.splitlines() if r.startswith("| hifigan") or r.startswith("| bigvgan-aa")]
        head = [c.strip() for c in body.splitlines()[[i for i, r in enumerate(body.splitlines())
                                                        if r.startswith("| shape")][0]].strip("|").split("|")]
        col = head.index("auto / builtin")
        ratios[name] = {r.strip("|").split("|")[0].strip(): float(r.strip("|").split("|")[col].strip().rstrip("x"))
                        for r in rows}
    numbers = [float(v) for v in re.findall(r"(\d+\.\d+)", figures.region(text, "headline"))]
    hifi = lambda kind: [v for k, v in ratios[kind].items() if k.startswith("hifigan")]
    assert numbers == [min(hifi("forward")), max(hifi("forward")), min(hifi("backward")), max(hifi("backward")),
                       ratios["forward"]["bigvgan-aa"]]


def fake_run(kind, scale):
    """A bench ``--json`` result with every shape, ``builtin`` ``scale`` times slower than ``auto``."""
    from mlx_deconv import bench

    rows = []
    for i, shape in enumerate(bench.SHAPES):
        auto = 0.01 * (i + 1)
        rows.append(dict(shape=dict(name=shape.name), auto="gemm",
                         seconds=dict(builtin=auto * scale * (1 + i / 10), gemm=auto, winograd=None),
                         torch_seconds=None, matmul_seconds=auto, copy_bytes_per_second=1e10, op_bytes=1e6,
                         peak_bytes=2e6, workers=2, gflop=1.0))
    return dict(machine="Linux x86_64, mlx 0.0, python 3", kind=kind, dtype="float32", stream="default",
                repeat=9, warmup=3, rows=rows)


def test_figures_script_rewrites_tables_and_headline(tmp_path):
    from mlx_deconv import bench

    figures = load_figures()
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text())
    forward, backward = tmp_path / "f.json", tmp_path / "b.json"
    forward.write_text(json.dumps(fake_run("forward", 10)))
    backward.write_text(json.dumps(fake_run("forward+backward", 20)))
    assert figures.main(["--forward", str(forward), "--backward", str(backward), "--readme", str(readme),
                         "--machine", "a test box"]) == 0
    text = readme.read_text()
    assert bench.table(fake_run("forward", 10)["rows"]) in figures.region(text, "forward")
    assert bench.table(fake_run("forward+backward", 20)["rows"], True) in figures.region(text, "backward")
    assert "median of 9 after 3 warm-up" in figures.region(text, "forward") and "a test box" in text
    # hifigan-1..4 are shapes 0..3: builtin/auto = scale * (1 + i/10).
    assert figures.region(text, "headline").startswith(
        "On the CPU stream it ran 10.0-13.0x faster than `mx.conv_transpose1d` on the HiFi-GAN shapes, "
        "20.0-26.0x with the backward pass, and 14.0x on BigVGAN")
    assert figures.main(["--check", "--readme", str(readme)]) == 0
    # Outside the regions nothing changed; running again changes nothing.
    strip = lambda t: re.sub(r"<!-- bench:(\w+) -->.*?<!-- /bench:\1 -->", "", t, flags=re.S)
    assert strip(text) == strip(README.read_text())
    figures.main(["--forward", str(forward), "--backward", str(backward), "--readme", str(readme),
                  "--machine", "a test box"])
    assert readme.read_text() == text
    # A headline edited by hand is caught.
    readme.write_text(text.replace("10.0-13.0x", "10.0-14.0x"))
    assert figures.main(["--check", "--readme", str(readme)]) == 1


def test_figures_script_refuses_a_json_without_its_settings(tmp_path):
    figures = load_figures()
    run = fake_run("forward", 10)
    del run["repeat"]
    with pytest.raises(ValueError, match="repeat"):
        figures.rewrite(README.read_text(), forward=run)
    with pytest.raises(ValueError, match="forward"):
        figures.rewrite(README.read_text(), forward=fake_run("forward+backward", 2))


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
