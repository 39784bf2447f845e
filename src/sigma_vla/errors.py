"""One exception type for bad input: the CLI prints it as one line (file, field, what is wrong) and exits non-zero."""

from __future__ import annotations

from pathlib import Path


class SigmaError(Exception):
    """Bad input a user can fix. `file` and `field` name where; the message says what and, if known, how to fix."""

    def __init__(self, message: str, file: str | Path | None = None, field: str | None = None):
        self.file = str(file) if file is not None else None
        self.field = field
        self.message = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.field:
            where.append(f"field '{self.field}'")
        prefix = ": ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class ConfigError(SigmaError, ValueError):
    """A configuration value that cannot work (any typed config: model, training, inference, server); the message
    names the bad value and `field` the setting. A ValueError too, for callers that validate generically."""


def first_line(err: BaseException, with_type: bool = False) -> str:
    """The first line of a third-party exception's message (ours are one line; theirs often are not)."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else ""
    if with_type or not line:
        return f"{type(err).__name__}: {line}" if line else type(err).__name__
    return line


# ---- worker pools --------------------------------------------------------------------------------------------
_START_FAILURE: list[str] = []  # per process: why this pool worker could not start


def start_worker(init, *args) -> None:
    """Pool initializer wrapper. A worker whose start-up raises would die and be respawned by the pool forever;
    instead it records the one-line reason and its first task raises it (`check_worker`), so the pool fails fast
    with the first worker's message (docs/reliability.md, "Worker pools")."""
    try:
        init(*args)
    except Exception as err:  # noqa: BLE001 - any start-up failure, reported once, in one line
        _START_FAILURE.append(err.one_line() if isinstance(err, SigmaError) else first_line(err, with_type=True))


def check_worker() -> None:
    """Called at the start of every pool task: raise the start-up failure of this worker, if any."""
    if _START_FAILURE:
        raise SigmaError(f"a worker process could not start: {_START_FAILURE[0]}")
