"""How every `sigma` command's help reads (docs/architecture.md, Deliberate choices, "Help that reads like a tool's").

One command class for every command and the group, so no option can forget it: no `<int>`-style type tags (a
value option names its value with an upper-case metavar, `--steps N`; a flag shows none), arguments in upper case
the way click writes them (`SHARDS`, `[ROOT]`), and help texts that come from the code they describe (the
experiments of training/registry.py): a help text's `{experiments}` (one line per experiment) and `{default:FIELD}`
(that TrainConfig field per experiment) are filled in only when help is shown, so `sigma --help` never imports
torch and the registry is their one source.
"""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

DEFAULT_CONFIG = "demo"  # `--config`'s default in `sigma train` and `sigma experiment`
_PLACEHOLDER = re.compile(r"\{(experiments|default:(\w+))\}")


class _Argument(TyperArgument):
    """A positional argument shown by its upper-case name alone: SHARDS, [ROOT], PATHS... (no type tag)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return [name if self.required else f"[{name}]"]


def plain(param: Any) -> Any:
    """The parameter without a type tag: arguments by their upper-case name, options by their metavar or none."""
    if isinstance(param, TyperArgument):
        param.__class__ = _Argument
        param.metavar = param.metavar or param.name.upper()
    elif isinstance(param, TyperOption) and param.metavar is None:
        param.metavar = ""  # typer shows the metavar in place of the type; empty: nothing
    return param


class _PlainParams:
    """Options and arguments (the help option included) shown without type tags, arguments in upper case."""

    def __init__(self, *args: Any, params: list[Any] | None = None, **kwargs: Any):
        super().__init__(*args, params=[plain(p) for p in params or []], **kwargs)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        return plain(option) if option is not None else None


class SigmaCommand(_PlainParams, TyperCommand):
    """Every `sigma` sub-command (registered in cli/main.py)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.get_params(ctx):
            if param.help and _PLACEHOLDER.search(param.help):  # the registry (torch) only where it is needed
                param.help = expand(param.help)
        super().format_help(ctx, formatter)


class SigmaGroup(_PlainParams, TyperGroup):
    """`sigma` itself: its own options (--version, --help) read like the commands'."""


# ---- texts from the registry (filled in lazily: training/ imports torch) ---------------------------------------


def expand(text: str) -> str:
    """A help text with its placeholders filled in from training/registry.py."""
    from sigma_vla.training.registry import EXPERIMENTS

    def fill(match: re.Match) -> str:
        if match.group(2) is None:  # one paragraph per experiment: rich help prints each on its own line
            return "".join(f"\n\n{name} = {e.description}" for name, e in EXPERIMENTS.items())
        return per_config_default({name: getattr(e.train, match.group(2)) for name, e in EXPERIMENTS.items()})

    return _PLACEHOLDER.sub(fill, text)


def _value(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def per_config_default(values: dict[str, object]) -> str:
    """"default: 1200 for demo, 20 for tiny, 3000 for pi05": the default experiment first, then the registry's
    order; one value when every experiment agrees."""
    if len(set(values.values())) == 1:
        return f"default: {_value(next(iter(values.values())))}"
    order = sorted(values, key=lambda name: name != DEFAULT_CONFIG)  # stable sort: the rest keep their order
    return "default: " + ", ".join(f"{_value(values[name])} for {name}" for name in order)
