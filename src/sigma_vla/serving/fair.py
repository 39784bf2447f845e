"""The model thread, shared fairly between connections (docs/reliability.md, "Serving").

Every policy call runs in one dedicated thread (the lock around the model). Which waiting call goes next is the
fairness rule: the one whose connection has used the least model time recently (an exponentially decayed sum,
half-life `half_life` seconds), first come first served among equals. Why: a FIFO queue lets N clients that send
back-to-back make every other client wait N model calls; with this rule a client that uses less than its share of
the model, as a robot's control loop does, waits at most for the call already running, and clients that all want
more than their share get equal shares. With no contention the order is the arrival order, so a single robot
never sees the rule.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable


@dataclass
class _Usage:
    value: float = 0.0  # decayed model seconds
    at: float = 0.0  # monotonic time of `value`

    def now(self, t: float, half_life: float) -> float:
        return self.value * math.exp(-math.log(2) * (t - self.at) / half_life)


@dataclass(order=True)
class _Job:
    seq: int
    client: Hashable = field(compare=False)
    call: Callable[[], Any] = field(compare=False)
    future: asyncio.Future = field(compare=False)


class FairModelThread:
    """`await run(client, fn, *args)` -> (fn's result, milliseconds inside fn), one call at a time."""

    def __init__(self, half_life: float = 2.0, thread_name: str = "sigma-model"):
        self.half_life = half_life
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._waiting: list[_Job] = []
        self._usage: dict[Hashable, _Usage] = {}
        self._seq = itertools.count()
        self._busy = False

    async def run(self, client: Hashable, fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Job(next(self._seq), client, lambda: fn(*args), future))
        self._next()
        return await future

    def forget(self, client: Hashable) -> None:
        """A closed connection's usage record goes (its waiting calls were cancelled with it)."""
        self._usage.pop(client, None)

    def shutdown(self) -> None:
        """Let the running call finish, drop the waiting ones, free the thread."""
        for job in self._waiting:
            job.future.cancel()
        self._waiting.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _next(self) -> None:
        """Start the waiting call of the least-served client, if the thread is free."""
        self._waiting = [j for j in self._waiting if not j.future.done()]  # cancelled: the client left
        if self._busy or not self._waiting or self._executor is None:
            return
        t = time.monotonic()
        job = min(self._waiting, key=lambda j: (self._usage.get(j.client, _Usage()).now(t, self.half_life), j.seq))
        self._waiting.remove(job)
        self._busy = True
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, _timed, job.call)
        done.add_done_callback(lambda f: self._finished(job, f))

    def _finished(self, job: _Job, done: asyncio.Future) -> None:
        self._busy = False
        if done.cancelled():
            job.future.cancel()
        else:
            error, result, ms = done.result()
            t = time.monotonic()  # a failed call used the model too: it is charged like any other
            usage = self._usage.setdefault(job.client, _Usage(at=t))
            usage.value, usage.at = usage.now(t, self.half_life) + ms / 1e3, t
            if job.future.done():
                pass  # the client left while its call ran
            elif error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result((result, ms))
        self._next()


def _timed(call: Callable[[], Any]) -> tuple[BaseException | None, Any, float]:
    """(exception or None, result, milliseconds inside the call)."""
    start = time.perf_counter()
    try:
        out, error = call(), None
    except Exception as err:  # noqa: BLE001  (handed to the awaiting coroutine, which reports it)
        out, error = None, err
    return error, out, (time.perf_counter() - start) * 1e3
