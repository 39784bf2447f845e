"""The `sigma` command line. Each sub-command lives in its own module; this file only registers them and turns
SigmaError into a one-line message with a non-zero exit (no traceback for bad input)."""

from __future__ import annotations

import sys

import typer

from sigma_vla.errors import SigmaError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Sigma VLA toolkit: record, inspect, prep, train and evaluate Sigma over a frozen VLA base.")

# Sub-command registration: one line per command module.
from sigma_vla.cli import record as _record; app.command("record")(_record.record)  # noqa: E402, E702
from sigma_vla.cli import data as _data  # noqa: E402

app.command("inspect")(_data.inspect)
app.command("prep")(_data.prep)
from sigma_vla.cli import demo as _demo; app.command("demo")(_demo.demo)  # noqa: E402, E702
from sigma_vla.cli import evaluate as _eval; app.command("eval")(_eval.evaluate)  # noqa: E402, E702
app.command("rollout")(_eval.rollout)
app.command("report")(_eval.report)
from sigma_vla.cli import serve as _serve; app.command("serve")(_serve.serve)  # noqa: E402, E702
from sigma_vla.cli import train as _train; app.command("train")(_train.train)  # noqa: E402, E702
from sigma_vla.cli import train as _train; app.command("plot-losses")(_train.plot_losses)  # noqa: E402, E702
from sigma_vla.cli import base as _base; app.command("train-base")(_base.train_base); app.command("base-actions")(_base.base_actions)  # noqa: E402, E702, E501


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
