"""The `sigma` command line. Each sub-command lives in its own module and registers itself here."""

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Sigma VLA toolkit.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
