"""Data-parallel training of the upsampling autoencoder with MLX's own distributed layer.

Every process builds the same model (same seed), takes its own slice of each
global batch, and averages gradients with ``mx.distributed.all_sum`` before
the optimizer step, so all ranks keep identical parameters and the run
equals one process training on the whole batch.

Run on this machine with two processes (ring backend over localhost):

    .venv/bin/mlx.launch -n 2 --backend ring --python .venv/bin/python examples/train_distributed.py

On several Macs, list them in a hosts file (``mlx.distributed_config`` helps
write one) and pass ``--hostfile hosts.json`` instead of ``-n 2``. Run without
``mlx.launch`` it trains in one process on the whole batch.
"""

from __future__ import annotations

import argparse
import json

import mlx_deconv  # noqa: F401  (before mlx: on Linux it puts an optimized BLAS under MLX's matmul)
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map

from common import output_dir
from upsampling_decoder import Autoencoder, reconstruction_error, synthetic_signals


def train(steps: int, global_batch: int, length: int, seed: int = 0):
    group = mx.distributed.init()
    rank, size = group.rank(), group.size()
    if global_batch % size:
        raise SystemExit(f"--batch {global_batch} must be divisible by the number of processes ({size})")
    mx.random.seed(seed)  # identical initial parameters on every rank
    model = Autoencoder()
    mx.eval(model.parameters())
    optimizer = optim.Adam(learning_rate=3e-3)
    loss_and_grad = nn.value_and_grad(model, reconstruction_error)
    rng = np.random.default_rng(seed)  # identical global batches on every rank
    per_rank = global_batch // size
    losses = []
    for _ in range(steps):
        batch = synthetic_signals(global_batch, length, rng)
        mine = mx.array(batch[rank * per_rank : (rank + 1) * per_rank])
        loss, grads = loss_and_grad(model, mine)
        if size > 1:
            # The mean over the global batch is the mean of the ranks' means (equal slices).
            grads = tree_map(lambda g: mx.distributed.all_sum(g) / size, grads)
            loss = mx.distributed.all_sum(loss) / size
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state, loss)
        losses.append(float(loss))
    return model, losses, rank, size


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16, help="global batch, split across processes")
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--out", default="out/train_distributed")
    args = parser.parse_args(argv)
    out = output_dir(args.out)
    model, losses, rank, size = train(args.steps, args.batch, args.length)
    params = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    np.savez(out / f"params_rank{rank}_of{size}.npz", **params)
    summary = dict(rank=rank, size=size, losses=losses)
    if rank == 0:
        (out / f"summary_of{size}.json").write_text(json.dumps(summary))
        print(f"{size} process(es), global batch {args.batch}: loss {losses[0]:.4f} -> {losses[-1]:.5f} "
              f"after {args.steps} steps; parameters in {out}/params_rank*_of{size}.npz")
    return summary


if __name__ == "__main__":
    main()
