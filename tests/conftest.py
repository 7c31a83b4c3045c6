import atexit
import os
import shutil
import sys
import tempfile

# The suite times nothing and writes no user cache: a user's autotuning setting stays out of it,
# and whatever a test tunes goes to a private folder of this run.
os.environ.pop("MLX_DECONV_AUTOTUNE", None)
# A failure of the package on a call patch_mlx() routed is raised here, not handed to MLX with a warning.
os.environ["MLX_DECONV_PATCH_STRICT"] = "1"
os.environ["MLX_DECONV_CACHE_DIR"] = tempfile.mkdtemp(prefix="mlx_deconv_tests_")
atexit.register(shutil.rmtree, os.environ["MLX_DECONV_CACHE_DIR"], ignore_errors=True)

import mlx_deconv  # noqa: F401  (first: on Linux it puts an optimized BLAS under MLX before mlx.core loads)

from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

settings.register_profile(
    "default",
    max_examples=int(os.environ.get("MLX_DECONV_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("default")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "packaging: builds the wheel and installs it into a fresh venv (about 30 s; deselect with -m 'not packaging')")
