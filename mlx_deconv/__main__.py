"""``python -m mlx_deconv``: the command line of :mod:`mlx_deconv.cli`."""

from .cli import main

if __name__ == "__main__":
    main()
