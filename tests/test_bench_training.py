"""The bench's training part on tiny generators: PyTorch's step on the same weights, and how the two agree.

Nothing here asserts on a measured time.
"""

import json

import numpy as np
import pytest

from mlx_deconv.bench import runner, training
from mlx_deconv.cli import build_parser

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def result():
    result = training.run(tiny=True, frames=4, batch=2, warmup=0, repeat=1)
    assert training.add_torch(result, warmup=0, repeat=1)
    return result


def test_the_steps_agree_with_pytorch_on_the_same_weights(result):
    assert [r["name"] for r in result["rows"]] == [c.name for c in training.CASES]
    for row in result["rows"]:
        assert set(row["seconds"]) == {"mlx_deconv", "compiled", "torch"}
        # the compiled step computes the same gradients (MLX fuses, it does not reorder the arithmetic)
        assert row["compiled_difference"] < 1e-5, row
        assert abs(row["loss"] - row["torch_loss"]) < 1e-5 * max(1.0, abs(row["torch_loss"])), row
        assert row["loss_error"]["mlx_deconv"] < 1e-5 and row["loss_error"]["torch"] < 1e-5, row
        # every weight, bias and Snake parameter is compared with float64, none silently dropped
        assert row["gradients_compared"] == len(row["_torch"][4]), row
        assert row["gradient_error"]["mlx_deconv"] < 1e-3, row
        assert row["gradient_error"]["torch"] < 1e-3, row
        # both of our steps also timed step by step against PyTorch's, one round per repeat
        assert set(row["paired"]) == {"mlx_deconv", "compiled"}, row
        assert all(len(p["ratios"]) == 1 and p["ratio"] > 0 for p in row["paired"].values()), row


def test_each_rows_steps_train_that_rows_model(result):
    """The steps timed against PyTorch's step by step are the row's own: each gives that model's gradients."""
    from mlx.utils import tree_flatten

    for row in result["rows"]:
        for name, step in row["_steps"].items():
            flat = dict(tree_flatten(step()[1]))  # (loss, gradients), compiled or not
            assert set(flat) == set(row["_torch"][4]), (row["name"], name)


def test_a_wrong_gradient_shows_in_the_comparison(result):
    """The check is not vacuous: one of our gradient tensors off by a little shows in our error, not PyTorch's."""
    row = dict(result["rows"][0])
    theirs, ours, mel, target, grads = row["_torch"]
    name = next(iter(grads))
    bad = dict(grads, **{name: grads[name] + 0.1 * np.abs(grads[name]).max() + 1e-3})
    worse = {"rows": [dict(row, _torch=(theirs, ours, mel, target, bad), seconds=dict(row["seconds"]))]}
    training.add_torch(worse, warmup=0, repeat=1)
    assert worse["rows"][0]["gradient_error"]["mlx_deconv"] > 0.05
    assert worse["rows"][0]["gradient_error"]["torch"] < 1e-3


def test_the_compiled_step_is_compared_tensor_by_tensor():
    a = {"w": np.ones(3), "b": np.zeros(2)}
    assert training._largest_difference(a, a) == 0.0
    assert training._largest_difference(dict(a, w=np.array([1.0, 1.0, 1.5])), a) == 0.5
    assert training._largest_difference({"w": np.ones(3)}, a) == float("inf")  # a tensor missing is not agreement


def test_table_and_json(result):
    table = training.table(result)
    assert table.splitlines()[0].startswith("| generator | initial channels | batch x frames |")
    assert "| bigvgan-128 | 16 | 2 x 4 |" in table
    json.dumps(training.public(result))


def test_select_names_the_unknown_case():
    with pytest.raises(ValueError, match="bigvgan-64"):
        training.select(["bigvgan-64"])


def test_the_part_is_selected_as_the_other_model_parts():
    parse = lambda *argv: build_parser().parse_args(["bench", *argv])  # noqa: E731
    assert "training" in runner.PARTS
    assert runner._training_selected(parse())
    assert runner._training_selected(parse("--only", "training", "--backward"))
    assert not runner._training_selected(parse("--only", "short"))
    assert not runner._training_selected(parse("--shapes", "hifigan-1"))
