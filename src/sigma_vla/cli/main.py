"""The `sigma` command line. Each sub-command lives in its own module; this file only registers them (every one with
the help of cli/help.py), answers `sigma --version`, and turns SigmaError into a one-line message with a non-zero
exit (no traceback for bad input), and usage errors into the usage line plus the message, exit 2
(docs/reliability.md, "Bad input")."""

from __future__ import annotations

import errno
import os
import sys

import typer

from sigma_vla.cli.help import SigmaCommand, SigmaGroup
from sigma_vla.errors import SigmaError

# typer >= 0.29 carries its own copy of click, whose exceptions are not `click.ClickException`: take the class
# from typer's public BadParameter, and also accept the real click's in case a typer without the copy is installed.
_CLICK_ERRORS: tuple[type[BaseException], ...] = tuple(
    {c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"})

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk or quota: the user's to fix, in one line

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=SigmaGroup,
                  help="Sigma VLA toolkit: record, inspect, prep, train and evaluate Sigma over a frozen VLA base.")


def version() -> str:
    """The version of the code that runs (sigma_vla.__version__, which tests/cli/test_help.py holds equal to
    pyproject.toml's), also under PYTHONPATH from a source tree another install shadows."""
    import sigma_vla

    return sigma_vla.__version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sigma-vla {version()}")
        raise typer.Exit()


@app.callback()
def _sigma(show_version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                             help="Print the version and exit.")) -> None:
    """The group's own options; every command is below."""


# Sub-command registration, in pipeline order (each module imports its heavy dependencies lazily).
from sigma_vla.cli import base, data, demo, evaluate, experiment, record, serve, train  # noqa: E402

for name, command in [("record", record.record), ("inspect", data.inspect), ("prep", data.prep),
                      ("train-base", base.train_base), ("base-actions", base.base_actions), ("train", train.train),
                      ("plot-losses", train.plot_losses), ("calibrate", evaluate.calibrate),
                      ("eval", evaluate.evaluate), ("rollout", evaluate.rollout), ("report", evaluate.report),
                      ("experiment", experiment.experiment), ("serve", serve.serve), ("demo", demo.demo)]:
    app.command(name, cls=SigmaCommand)(command)


def main() -> None:
    try:
        # prog_name: usage lines say `sigma`, also under `python -m` or `accelerate launch -m`
        code = app(standalone_mode=False, prog_name="sigma")  # click returns typer.Exit codes instead of exiting
        if isinstance(code, int) and code:
            sys.exit(code)
    except SigmaError as err:
        print(f"error: {err.one_line()}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if err.errno not in _DISK_FULL:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{os.strerror(err.errno).lower()}; free some space and rerun (finished work is kept: "
              "every file is written whole or not at all)", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # click usage errors arrive here in non-standalone mode
        if isinstance(err, _click_errors()):
            err.show()  # "Usage: sigma CMD ...", a hint line, then "Error: <message>"
            sys.exit(err.exit_code)
        raise


def _click_errors() -> tuple[type[BaseException], ...]:
    try:
        import click
    except ImportError:
        return _CLICK_ERRORS
    return (*_CLICK_ERRORS, click.ClickException)


if __name__ == "__main__":
    main()
