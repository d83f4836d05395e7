"""The README documents every CLI command and every setting."""

from pathlib import Path

import click
from typer.main import get_command

from patron.cli import app
from patron.config import Settings

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def commands():
    root = get_command(app)

    def walk(cmd, prefix, ctx):
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                yield from walk(sub, [*prefix, name], click.Context(sub, parent=ctx))
        else:
            yield " ".join(prefix)

    return list(walk(root, ["patron"], click.Context(root)))


def test_every_cli_command_is_in_the_readme():
    found = commands()
    assert len(found) > 10
    missing = [c for c in found if f"`{c}" not in README]
    assert missing == []


def test_every_setting_is_in_the_readme():
    missing = [f"PATRON_{name.upper()}" for name in Settings.model_fields
               if f"PATRON_{name.upper()}" not in README]
    assert missing == []
