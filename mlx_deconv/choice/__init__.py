"""The third step of a call's way (call -> geometry -> choice -> backend -> array): which backend runs it.

:mod:`.chooser` holds the one function that chooses (:func:`~.chooser.choose`), for every op; :mod:`.rule`
holds the ``"auto"`` rule and its measured thresholds. The autotuner (:mod:`mlx_deconv.tuning`) sits
below: it only times the candidates the chooser hands it.
"""

from .chooser import candidates, choose, tuned_entry  # noqa: F401
