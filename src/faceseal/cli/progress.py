"""A progress bar on stderr for long work (many photos), silent for one item or with --json."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from faceseal.cli.output import Output


@contextmanager
def progress_bar(description: str, output: Output,
                 unit: str = "file") -> Iterator[Callable[[int, int], None]]:
    """Yields a ``progress(done, total)`` callback that draws a tqdm bar when worthwhile."""
    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if total < 2 or output.json:
            return
        if bar is None:
            from tqdm import tqdm  # noqa: PLC0415 - imported only when a bar is drawn

            bar = tqdm(total=total, desc=description, unit=unit, file=sys.stderr,
                       disable=None, leave=False)
        if bar.total != total:  # a new stage (purge goes tenant by tenant)
            bar.reset(total=total)
        bar.n = done
        bar.refresh()

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()
