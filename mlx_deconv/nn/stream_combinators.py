"""Streams of compositions: layer streams and pointwise functions chained, residual sums and means of branches.

Each holds, along the length axis (1), the samples one branch has produced until the others have
produced theirs, so a composition of exact layer streams (:mod:`mlx_deconv.nn.streaming`) is exact too.
Shared by the models' own streams and by :func:`mlx_deconv.stream`'s streams of module trees.
"""

from __future__ import annotations

from typing import Optional

import mlx.core as mx

__all__ = ["Queue", "Chain", "Residual", "Mean"]


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
    """The mean of several branches' outputs, emitted as far as all of them have come."""

    def __init__(self, branches):
        self.branches = branches
        self.queues = [Queue() for _ in branches]

    def _emit(self):
        n = min(len(q) for q in self.queues)
        total = self.queues[0].pop(n)
        for q in self.queues[1:]:
            total = total + q.pop(n)
        return total / len(self.queues)

    def step(self, x):
        for b, q in zip(self.branches, self.queues):
            q.push(b.step(x))
        return self._emit()

    def flush(self):
        for b, q in zip(self.branches, self.queues):
            q.push(b.flush())
        return self._emit()
