"""Batch progress on stderr: a live ``rich`` display on a terminal, plain lines elsewhere.

``--progress=auto`` (the default) picks ``rich`` when stderr is a terminal and
the ``rich`` package (extra ``cli``) is installed, else ``plain``: a line every
few seconds that a log file or CI output can keep. ``NO_COLOR`` turns colour
off. Both receive :class:`~alikassa_async._batch.BatchProgress` after each result.
"""

from __future__ import annotations

import os
import time
from typing import Literal, Protocol, TextIO

from .._batch import BatchProgress

__all__ = ["PROGRESS_MODES", "ProgressBar", "ProgressDisplay", "RichProgress", "make_progress"]

ProgressMode = Literal["auto", "rich", "plain", "none"]
PROGRESS_MODES: tuple[ProgressMode, ...] = ("auto", "rich", "plain", "none")

#: colour of each outcome in the rich display
_STYLES = {
    "created": "green",
    "paid": "green",
    "rejected": "red",
    "not_sent": "yellow",
    "unknown": "magenta",
    "cancel": "yellow",
    "fail": "red",
}


class ProgressDisplay(Protocol):
    def __call__(self, progress: BatchProgress) -> None: ...

    def close(self) -> None: ...


class ProgressBar:
    """A one-line progress bar on a terminal; periodic lines when not a terminal."""

    def __init__(self, stream: TextIO, *, width: int = 30, every: float = 0.1) -> None:
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self.every = every if self.tty else 5.0
        self._last = 0.0
        self._shown = False

    def __call__(self, progress: BatchProgress) -> None:
        now = time.monotonic()
        finished = progress.total is not None and progress.done >= progress.total
        if not finished and now - self._last < self.every:
            return
        self._last = now
        line = self.render(progress)
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self._shown = True
        self.stream.flush()

    def render(self, progress: BatchProgress) -> str:
        counts = " ".join(f"{k}={v}" for k, v in sorted(progress.counts.items()))
        if progress.total:
            share = min(progress.done / progress.total, 1.0)
            filled = int(share * self.width)
            bar = "#" * filled + "." * (self.width - filled)
            left = progress.total - progress.done
            eta = f" ETA {left / progress.rate:,.0f}s" if progress.rate > 0 and left else ""
            return (
                f"[{bar}] {progress.done:,}/{progress.total:,} {share:4.0%} "
                f"{progress.rate:,.0f}/s {counts}{eta}"
            )
        return f"{progress.done:,} done {progress.rate:,.0f}/s {counts}"

    def close(self) -> None:
        if self._shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()


class RichProgress:
    """done/total, rate, ETA, counts by outcome in colour and what is in flight, live."""

    def __init__(self, stream: TextIO, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        console = Console(file=stream, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)
        self._progress = Progress(
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[in_flight]}"),
            console=console,
            refresh_per_second=8,
            transient=False,
        )
        self._task = self._progress.add_task(
            "payouts", total=total, rate="", counts="", in_flight=""
        )
        self._progress.start()

    def __call__(self, progress: BatchProgress) -> None:
        counts = " ".join(
            f"[{_STYLES.get(k, 'white')}]{k} {v:,}[/]" for k, v in sorted(progress.counts.items())
        )
        self._progress.update(
            self._task,
            completed=progress.done,
            total=progress.total,
            rate=f"{progress.rate:,.0f}/s",
            counts=counts,
            in_flight=f"in flight {progress.in_flight:,}",
        )

    def close(self) -> None:
        self._progress.stop()


def make_progress(mode: str, stream: TextIO, total: int | None) -> ProgressDisplay | None:
    """The display ``--progress=mode`` asks for (``auto``: rich on a terminal if installed)."""
    if mode == "none":
        return None
    if mode == "auto":
        mode = "rich" if stream.isatty() and _has_rich() else "plain"
    if mode == "rich":
        if not _has_rich():
            from .._errors import ConfigurationError

            raise ConfigurationError(
                "--progress=rich needs rich: pip install 'alikassa-async[cli]'"
            )
        return RichProgress(stream, total)
    return ProgressBar(stream)


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True
