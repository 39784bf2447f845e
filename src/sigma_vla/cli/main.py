"""The `sigma` command line. Each sub-command lives in its own module; this file only registers them and turns
SigmaError into a one-line message with a non-zero exit (no traceback for bad input)."""

from __future__ import annotations

import sys

import typer

from sigma_vla.errors import SigmaError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Sigma VLA toolkit: record, inspect, prep, train and evaluate Sigma over a frozen VLA base.")

# Sub-command registration, in pipeline order (each module imports its heavy dependencies lazily).
from sigma_vla.cli import base, data, demo, evaluate, record, serve, train  # noqa: E402

for name, command in [("record", record.record), ("inspect", data.inspect), ("prep", data.prep),
                      ("train-base", base.train_base), ("base-actions", base.base_actions), ("train", train.train),
                      ("plot-losses", train.plot_losses), ("eval", evaluate.evaluate), ("rollout", evaluate.rollout),
                      ("report", evaluate.report), ("serve", serve.serve), ("demo", demo.demo)]:
    app.command(name)(command)


def main() -> None:
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit codes instead of exiting
        if isinstance(code, int) and code:
            sys.exit(code)
    except SigmaError as err:
        print(f"error: {err.one_line()}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
