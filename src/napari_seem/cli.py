"""The ``napari-seem`` command line (click).

Sub-commands live in their own modules and are imported only when used, so ``napari-seem --help``
stays fast (no torch import). To add one, write a ``click.Command`` in its module and add a line
to :data:`COMMANDS`: ``"name": "package.module:attribute"``.
"""
from __future__ import annotations

import importlib
from typing import Sequence

import click

#: sub-command name -> ``"module:attribute"`` of its ``click.Command``
COMMANDS: dict[str, str] = {
    "segment": "napari_seem.batch.command:segment",
    "demo": "napari_seem.demo:demo",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported from :data:`COMMANDS` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module_name, attribute = COMMANDS[name].split(":")
            return getattr(importlib.import_module(module_name), attribute)
        return super().get_command(ctx, name)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("napari-seem")
    except Exception:  # not installed (source checkout)
        return "unknown"


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="napari-seem")
def cli() -> None:
    """SEEM segmentation from the command line (the napari plugin's engine, without napari)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (0 ok, 1 some items failed, 2 bad arguments)."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="napari-seem", standalone_mode=True)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
