"""The worker streams, and independent branches spread over them (a streamed vocoder's residual blocks)."""

import mlx.core as mx
import numpy as np
import pytest

import mlx_deconv as md  # noqa: F401 (first, as a user would)
from mlx_deconv import hifigan
from mlx_deconv.nn import stream_combinators
from mlx_deconv.runtime import worker_streams as ws


def _workers(monkeypatch, count):
    """``count`` worker streams whatever this machine has: the caller's and others."""
    streams = [mx.default_stream(mx.cpu)] + [mx.new_stream(mx.cpu) for _ in range(count - 1)]
    monkeypatch.setattr(ws, "worker_streams", lambda stream, max_workers=ws.MAX_WORKERS: streams)
    return streams


@pytest.fixture
def two_workers(monkeypatch):
    """Two worker streams whatever this machine has: the caller's and another."""
    return _workers(monkeypatch, 2)


@pytest.fixture
def own_streams(monkeypatch):
    """This thread's cached streams, forgotten before and after the test (it may fake the core count)."""
    monkeypatch.setattr(ws._LOCAL, "streams", None, raising=False)
    yield
    ws._LOCAL.streams = None


def test_the_costliest_branch_goes_first_to_the_least_loaded_stream(two_workers):
    caller, other = two_workers
    # HiFi-GAN's blocks, kernels 3, 7 and 11: 11 alone on the caller's stream, 3 + 7 on the other.
    assert ws.branch_streams([3, 7, 11], caller) == [other, other, None]
    assert ws.branch_streams([11, 7, 3], caller) == [None, other, other]
    assert ws.branch_streams([5, 5], caller) == [None, other]  # a tie goes to the caller's stream


@pytest.mark.parametrize("count", [3, 4, 8])
def test_more_streams_take_as_many_as_the_branches_share_evenly(monkeypatch, count):
    caller, second, third = _workers(monkeypatch, count)[:3]
    assert ws.branch_streams([3, 7, 11], caller) == [second, second, None]  # 3 streams: 11, 7, 3 too uneven
    assert ws.branch_streams([5, 5, 5], caller) == [None, second, third]
    places = ws.branch_streams([4] * 4, caller)  # four streams, or two (three would carry 8, 4, 4)
    assert places[0] is None and len({repr(p) for p in places}) == (4 if count >= 4 else 2)
    assert ws.branch_streams([10, 1, 1], caller) == [None, None, None]


def test_branches_stay_on_the_caller_s_stream_when_spreading_them_cannot_pay(two_workers, monkeypatch):
    caller, _ = two_workers
    assert ws.branch_streams([10, 1], caller) == [None, None]  # the busiest stream would carry 10 of 11
    assert ws.branch_streams([7], caller) == [None]
    monkeypatch.setattr(ws, "worker_streams", lambda stream, max_workers=ws.MAX_WORKERS: [stream])
    assert ws.branch_streams([3, 7, 11], caller) == [None, None, None]


def test_inside_one_stream_each_only_the_caller_s_stream_is_offered(monkeypatch, own_streams):
    monkeypatch.setattr(ws, "serial_blas", lambda stream: True)
    monkeypatch.setattr(ws, "_CORES", 3)
    caller = mx.default_stream(mx.cpu)
    workers = ws.worker_streams(caller)
    assert len(workers) == 3 and workers[0] == caller and len({repr(s) for s in workers}) == 3
    with ws.one_stream_each():
        assert ws.worker_streams(caller) == [caller]
        with pytest.raises(RuntimeError):
            with ws.one_stream_each():
                raise RuntimeError("a branch failed")
        assert ws.worker_streams(caller) == [caller]  # the inner exit restored the outer state
    assert ws.worker_streams(caller) == workers
    # A branch already on an extra stream is not offered its own stream a second time.
    assert ws.worker_streams(workers[1]) == [workers[1], workers[2]]
    assert ws.worker_streams(caller, max_workers=2) == workers[:2]  # a smaller request after a larger one


class _Spy:
    """A branch that notes, as it is built, the stream it is built on and the workers its calls would get."""

    def __init__(self, branch, seen):
        self.branch, self.seen = branch, seen

    def _note(self):
        stream = mx.default_stream(mx.cpu)
        self.seen.append((repr(stream), len(ws.worker_streams(stream))))

    def step(self, x):
        self._note()
        return self.branch.step(x)

    def flush(self):
        self._note()
        return self.branch.flush()


def test_a_placed_mean_streams_what_the_whole_model_computes(monkeypatch, own_streams):
    """Each branch of every stage on a stream of its own: the audio is the offline model's."""
    config = hifigan.HiFiGANConfig.from_dict(dict(
        resblock="1", num_mels=12, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4], upsample_initial_channel=16,
        resblock_kernel_sizes=[3, 5, 7], resblock_dilation_sizes=[[1, 3], [1, 3], [1, 3]]))
    model = hifigan.HiFiGAN(config)
    mel = mx.random.normal((1, 17, config.num_mels), key=mx.random.key(3))
    whole = np.array(model(mel))
    other = mx.new_stream(mx.cpu)
    monkeypatch.setattr(stream_combinators, "branch_streams", lambda costs, stream=None: [None, other, None][:len(costs)])
    monkeypatch.setattr(ws, "BRANCH_MIN_FLOPS", 0)  # a tiny model's blocks are spread too
    monkeypatch.setattr(ws, "serial_blas", lambda stream: True)  # two worker streams on any machine
    monkeypatch.setattr(ws, "_CORES", 2)
    stream = hifigan.StreamingHiFiGAN(model)
    means = [p for p in stream._chain.parts if isinstance(p, stream_combinators.Mean)]
    seen = [[] for _ in range(3)]
    for mean in means:
        mean.branches = [_Spy(b, s) for b, s in zip(mean.branches, seen)]
    pieces = [stream.step(mel[:, i:i + 3]) for i in range(0, 17, 3)]
    caller = repr(mx.default_stream(mx.cpu))
    assert seen[0] and {s for s, _ in seen[0]} == {caller} and {s for s, _ in seen[2]} == {caller}
    assert {s for s, _ in seen[1]} == {repr(other)}
    assert {n for b in seen for _, n in b} == {1}  # inside a placed branch, each call keeps to its stream
    pieces.append(stream.flush())
    np.testing.assert_allclose(np.array(mx.concatenate(pieces, axis=1)), whole, atol=1e-6)


def test_a_mean_is_spread_only_between_its_bounds(monkeypatch):
    """Calls too large (they share their own blocks) or branches too small (hand-offs outweigh them) stay put."""
    calls = []
    monkeypatch.setattr(stream_combinators, "branch_streams", lambda costs, stream=None: calls.append(costs) or [None] * len(costs))
    branches = [stream_combinators.Chain([md.Conv1d(8, 8, k, padding=k // 2).streaming() for _ in range(2)])
                for k in (3, 5)]
    mean = stream_combinators.Mean(branches)
    assert mean._costs == [2 * 3 * 64, 2 * 5 * 64] and mean._largest == 5 * 64
    # 10 rows: 2 * 10 * 1024 = 20480 FLOPs in all, 2 * 10 * 320 = 6400 in the largest call.
    for low, high, spread in ((20480, 6401, True), (20481, 6401, False), (20480, 6400, False)):
        monkeypatch.setattr(ws, "BRANCH_MIN_FLOPS", low)
        monkeypatch.setattr(ws, "BRANCH_MAX_FLOPS", high)
        calls.clear()
        mean.step(mx.zeros((1, 10, 8)))
        assert bool(calls) is spread, (low, high)
    monkeypatch.setattr(ws, "BRANCH_MIN_FLOPS", 0)
    calls.clear()
    mean.flush()
    assert not calls  # a flush is never spread
