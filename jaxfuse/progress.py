"""Progress bars on stderr, for the command line only.

Off unless `enable()` is called (the CLI calls it when stderr is a terminal); then a bar
appears once a task has run for about two seconds (tqdm's `delay`), so quick commands
and anything writing to a pipe or file print nothing extra.
"""
from __future__ import annotations

import contextlib
import sys

DELAY_S = 2.0
_enabled = False


def enable(on: bool = True) -> None:
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


class Silent:
    """A bar that draws nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_description_str(self, text: str) -> None:
        pass


@contextlib.contextmanager
def bar(total: int | None, description: str, unit: str = "it"):
    """A tqdm bar on stderr while enabled, else an object whose update does nothing."""
    if not _enabled:
        yield Silent()
        return
    try:
        from tqdm import tqdm
    except ImportError:  # a broken install: work on without bars
        yield Silent()
        return
    with tqdm(total=total, desc=description, unit=unit, delay=DELAY_S, file=sys.stderr, leave=False,
              dynamic_ncols=True) as progress_bar:
        yield progress_bar
