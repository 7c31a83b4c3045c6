"""A command's refusal of its arguments: one line on stderr and exit status 2, as argparse's own errors."""

from __future__ import annotations


class UsageError(Exception):
    """An argument the command cannot use; the message names the flag and the value."""


def stream_argument(value):
    """``--stream``'s value as a stream.

    Raises:
        UsageError: naming the flag and the value.
    """
    from ..runtime.devices import resolve_stream

    try:
        return resolve_stream(value)
    except (ValueError, TypeError) as err:
        raise UsageError(f"--stream: {err}") from None
