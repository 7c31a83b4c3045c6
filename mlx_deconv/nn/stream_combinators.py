"""Streams of compositions: layer streams and pointwise functions chained, residual sums and means of branches.

Each holds, along the length axis (1), the samples one branch has produced until the others have
produced theirs, so a composition of exact layer streams (:mod:`mlx_deconv.nn.streaming`) is exact too.
Shared by the models' own streams and by :func:`mlx_deconv.stream`'s streams of module trees.
"""

from __future__ import annotations

from typing import Optional

import mlx.core as mx

from ..runtime import worker_streams
from ..runtime.worker_streams import branch_streams, one_stream_each

__all__ = ["Queue", "Chain", "Residual", "Mean", "layer_work"]


class Queue:
    """Samples waiting to be added to another branch's (later) output, along the length axis."""

    def __init__(self):
        self.items: Optional[mx.array] = None

    def push(self, x: mx.array) -> None:
        self.items = x if self.items is None else mx.concatenate([self.items, x], axis=1)

    def pop(self, n: int) -> mx.array:
        out, self.items = self.items[:, :n], self.items[:, n:]
        return out

    def __len__(self) -> int:
        return 0 if self.items is None else self.items.shape[1]


class Chain:
    """Streams and elementwise functions one after the other."""

    def __init__(self, parts):
        self.parts = parts

    def step(self, x):
        for p in self.parts:
            if hasattr(p, "step"):
                x = p.step(x)
            elif x.shape[1]:  # a pointwise function keeps the shape: an empty chunk stays as it is
                x = p(x)
        return x

    def flush(self):
        x = None
        for p in self.parts:
            if hasattr(p, "step"):
                x = p.flush() if x is None else mx.concatenate([p.step(x), p.flush()], axis=1)
            elif x is not None and x.shape[1]:
                x = p(x)
        return x


class Residual:
    """``x + branch(x)``, with ``x`` held until the branch's output for it arrives (stride 1)."""

    def __init__(self, branch):
        self.branch, self.skip = branch, Queue()

    def step(self, x):
        self.skip.push(x)
        y = self.branch.step(x)
        return y + self.skip.pop(y.shape[1])

    def flush(self):
        y = self.branch.flush()
        return y + self.skip.pop(y.shape[1])


class Mean:
    """The mean of several branches' outputs, emitted as far as all of them have come.

    The branches are independent. On a CPU stream behind a serial BLAS, while their calls are small
    (:data:`~mlx_deconv.runtime.worker_streams.BRANCH_MAX_FLOPS`: a few mel frames a step, where
    each call would run on one core) but their sum is not
    (:data:`~mlx_deconv.runtime.worker_streams.BRANCH_MIN_FLOPS`), the branches are spread over
    the worker streams, balanced by their multiply-adds
    (:func:`~mlx_deconv.runtime.worker_streams.branch_streams`).
    """

    def __init__(self, branches):
        self.branches = branches
        self.queues = [Queue() for _ in branches]
        works = [layer_work(b) for b in branches]
        self._costs = [sum(w) for w in works]
        self._largest = max((max(w, default=0) for w in works), default=0)

    def _emit(self):
        n = min(len(q) for q in self.queues)
        total = self.queues[0].pop(n)
        for q in self.queues[1:]:
            total = total + q.pop(n)
        return total / len(self.queues)

    def _places(self, x) -> list:
        """Per branch, None (the caller's stream) or the worker stream it runs on for input ``x``."""
        flops = 2 * x.shape[0] * x.shape[1]  # per multiply-add per output sample
        if not (flops * sum(self._costs) >= worker_streams.BRANCH_MIN_FLOPS
                and flops * self._largest < worker_streams.BRANCH_MAX_FLOPS):
            return [None] * len(self.branches)
        return branch_streams(self._costs)

    def _push(self, run, places) -> None:
        """Pushes ``run(branch)`` of each branch into its queue, built on the stream ``places`` gives it."""
        if all(p is None for p in places):
            for b, q in zip(self.branches, self.queues):
                q.push(run(b))
            return
        caller = mx.default_stream(mx.default_device())
        with one_stream_each():
            for b, q, place in zip(self.branches, self.queues, places):
                with mx.stream(caller if place is None else place):
                    q.push(run(b))

    def step(self, x):
        self._push(lambda b: b.step(x), self._places(x))
        return self._emit()

    def flush(self):
        self._push(lambda b: b.flush(), [None] * len(self.branches))  # the last few samples: never spread
        return self._emit()


def layer_work(part) -> list:
    """Multiply-adds per output sample of each layer stream in a stream (``K * C_in * C_out / groups``).

    Pointwise functions and streams without a convolution count nothing.
    """
    if isinstance(part, Chain):
        return [w for p in part.parts for w in layer_work(p)]
    if isinstance(part, Residual):
        return layer_work(part.branch)
    if isinstance(part, Mean):
        return [w for b in part.branches for w in layer_work(b)]
    config = getattr(getattr(part, "layer", None), "config", None)
    if config is None or not hasattr(config, "kernel_size"):
        return []
    return [config.multiply_adds]
