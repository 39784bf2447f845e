"""`sigma serve RUN`: answer a robot's observations with Sigma's action chunks over websockets."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable

import typer

from sigma_vla.errors import SigmaError


def load_policy_factory(run: Path) -> Callable[[], object]:
    """The run's policy factory (inference.load_sigma_policy_factory), imported lazily: it pulls torch and the
    model, which the serving layer itself never imports (docs/architecture.md, Layers)."""
    from sigma_vla.inference import load_sigma_policy_factory

    return load_sigma_policy_factory(run)


def _config(host: str, port: int, token: str | None, max_message_mb: float, allow_extra_keys: bool):
    from sigma_vla.serving.server import ServerConfig

    if max_message_mb <= 0:
        raise SigmaError(f"must be > 0, got {max_message_mb}", field="--max-message-mb")
    return ServerConfig(host=host, port=port, token=token, max_message_bytes=int(max_message_mb * 2**20),
                        allow_extra_keys=allow_extra_keys)  # a bad value is a ConfigError naming the field


def serve(
    run: Path = typer.Argument(..., help="Run directory of a trained Sigma (what `sigma train` wrote)."),
    host: str = typer.Option("127.0.0.1", metavar="HOST", help="Interface to bind; loopback unless you mean to expose it."),
    port: int = typer.Option(8000, metavar="PORT", help="TCP port (0: any free port)."),
    token: str = typer.Option(None, "--token", metavar="TOKEN", envvar="SIGMA_SERVE_TOKEN",
                              help="Require this token (header 'Authorization: Bearer T' or ?token=T)."),
    max_message_mb: float = typer.Option(8.0, "--max-message-mb", metavar="MB", help="Largest observation message accepted."),
    allow_extra_keys: bool = typer.Option(False, "--allow-extra-keys",
                                          help="Drop observation keys the policy does not declare instead of "
                                               "rejecting the message."),
) -> None:
    """Serve a policy over websockets (msgpack, no pickle); GET /healthz answers "ok". Ctrl-C stops it."""
    from sigma_vla.serving.server import PolicyServer, is_loopback

    if not run.is_dir():
        raise SigmaError("run directory not found", file=run)
    config = _config(host, port, token, max_message_mb, allow_extra_keys)  # before the slow model load
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    if not is_loopback(host) and token is None:
        typer.echo(f"warning: binding {host} without --token: anyone who reaches this port drives the robot",
                   err=True)
    server = PolicyServer(load_policy_factory(run), config)

    def ready(bound: int) -> None:
        typer.echo(f"serving {run} on ws://{host}:{bound}/ (health: http://{host}:{bound}/healthz"
                   f"{', token required' if token else ''}); Ctrl-C to stop")
        sys.stdout.flush()

    try:
        server.run(on_ready=ready)
    except OSError as err:
        raise SigmaError(f"cannot listen on {host}:{port}: {err.strerror or err}", field="--port") from None
    typer.echo("server stopped")
