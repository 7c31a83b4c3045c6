"""A decoder built on the main thread and served by a ThreadPoolExecutor: the process exits with status 0.

The abort it guards against (docs/threads-exit.md): ``mlx.nn.leaky_relu`` and MLX's other activations
are compiled functions shared by every thread; each pool thread that called one kept an entry holding
a Python object in its compile cache, freed by a C++ thread-local destructor after the thread's Python
state was gone. When that ran while the interpreter was shutting down, taking the GIL ended the thread
inside the destructor: "terminate called without an active exception", SIGABRT (status -6). It was a
race, most runs and not all, so the script runs several times, in both import orders.
"""

import os
import subprocess
import sys
import textwrap

import mlx_deconv

RUNS = 6
REQUESTS = 200

SCRIPT = textwrap.dedent(
    """
    import sys
    if sys.argv[1] == "mlx-first":
        import mlx.core as mx
    import warnings
    warnings.simplefilter("ignore", RuntimeWarning)  # mlx-first: the BLAS note of runtime/blas.py
    from concurrent.futures import ThreadPoolExecutor

    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np

    import mlx_deconv as md
    from mlx_deconv import hifigan

    class Decoder(nn.Module):
        # HiFi-GAN's generator (leaky ReLUs between the convolutions), then layers with named activations.
        def __init__(self):
            super().__init__()
            config = hifigan.HiFiGANConfig(resblock="1", upsample_rates=[4, 2], upsample_kernel_sizes=[8, 4],
                                           upsample_initial_channel=16, resblock_kernel_sizes=[3, 5],
                                           resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]], num_mels=8)
            self.vocoder = hifigan.HiFiGAN(config)
            self.up = md.ConvTranspose1d(1, 4, 4, stride=2, padding=1, activation="gelu")
            self.post = md.Conv1d(4, 1, 3, padding=1, activation="leaky_relu")

        def __call__(self, mel):
            return self.post(self.up(self.vocoder(mel)[..., None]))

    mx.random.seed(0)
    decoder = Decoder()  # built on the main thread
    mx.eval(decoder.parameters())
    mel = mx.array(np.random.default_rng(0).standard_normal((1, 20, 8)), mx.float32)
    expected = np.array(decoder(mel))

    def serve(i):
        y = decoder(mel)
        mx.eval(y)
        return np.array_equal(np.array(y), expected)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(serve, range({requests})))
    print("answers", len(answers), "exact", sum(answers))
    """
)


def test_pool_served_decoder_exits_cleanly(tmp_path):
    """A decoder of this package's layers, built on the main thread, serves 200 requests from 4 pool
    threads; the process exits with status 0 in every run (before the fix: most runs aborted)."""
    script = tmp_path / "pool_exit.py"
    script.write_text(SCRIPT.format(requests=REQUESTS))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(mlx_deconv.__file__))))
    for run in range(RUNS):
        order = ("mlx-deconv-first", "mlx-first")[run % 2]
        proc = subprocess.run([sys.executable, str(script), order], capture_output=True, text=True, timeout=120,
                              env=env)
        assert f"answers {REQUESTS} exact {REQUESTS}" in proc.stdout, (run, order, proc.stdout, proc.stderr[-2000:])
        assert proc.returncode == 0, (run, order, proc.returncode, proc.stderr[-2000:])
        assert "terminate called" not in proc.stderr, (run, order, proc.stderr[-2000:])
