"""Progress a person can read, on a terminal and in a log file.

On a terminal a long command redraws one tqdm bar. Written to a file (`sigma train ... > log 2>&1`) a bar's
carriage-return redraws become one endless line, so there it prints one plain line every `every_s` seconds and at
the end instead: `train 400/1200 (33%) | loss 0.412 | lr 4.8e-04 | 2.1 step/s | ETA 6m20s`. Messages that matter on
their own (a validation loss, a finished stage) go through `note`, which never breaks a bar. Lines go to stderr,
as tqdm's do, so a command's stdout stays its result (docs/architecture.md, "Logs").
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

PLAIN_EVERY_S = 30.0  # a line every half minute: a 20-minute training logs about 40 lines


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or odd stream
        return False


def duration(seconds: float) -> str:
    """90 -> '1m30s', 4000 -> '1h06m', 12 -> '12s'."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def plain_line(desc: str, done: int, total: int | None, unit: str, elapsed: float, fields: dict[str, str],
               start: int = 0) -> str:
    """One progress line (pure: the rate and ETA count only the work done in this invocation, from `start`)."""
    parts = [f"{desc} {done}/{total} ({100 * done / total:.0f}%)" if total else f"{desc} {done}"]
    parts += [f"{k} {v}" for k, v in fields.items()]
    rate = (done - start) / elapsed if elapsed > 0 else 0.0
    if rate > 0:
        parts.append(f"{rate:.2f} {unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{unit}")
        if total and done < total:
            parts.append(f"ETA {duration((total - done) / rate)}")
    parts.append(f"elapsed {duration(elapsed)}")
    return " | ".join(parts)


class Progress:
    """A tqdm-like bar: update / set_postfix / note / close, and iteration over `iterable` when given."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, enabled: bool = True, stream: TextIO | None = None,
                 every_s: float = PLAIN_EVERY_S, leave: bool = True):
        self.iterable, self.desc, self.unit, self.enabled = iterable, desc, unit, enabled
        self.total = total if total is not None else _len(iterable)
        self.stream = stream or sys.stderr
        self.n = self.start = initial
        self.fields: dict[str, str] = {}
        self.every_s = every_s
        self.t0 = self.last = time.perf_counter()
        self.bar, self.leave = None, leave
        if enabled and is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=initial, desc=desc, unit=unit, file=self.stream, leave=leave)

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and self.last is not None and time.perf_counter() - self.last >= self.every_s:
            self._print_line()

    def set_postfix(self, **fields: Any) -> None:
        self.fields.update({k: str(v) for k, v in fields.items()})
        if self.bar is not None:
            self.bar.set_postfix(self.fields, refresh=False)

    def note(self, message: str) -> None:
        """A line of its own (shown even with the bar off: what it says matters without the bar)."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self.leave and self.n > self.start and self.last is not None:
            self._print_line()
        self.last = None  # closed: later updates print nothing more

    def _print_line(self) -> None:
        now = time.perf_counter()
        print(plain_line(self.desc, self.n, self.total, self.unit, now - self.t0, self.fields, self.start),
              file=self.stream, flush=True)
        self.last = now


def _len(iterable: Iterable[Any] | None) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None
