"""``patron keys ...``: data key status, rotation, a fresh key (docs/data-protection.md#keys)."""

from __future__ import annotations

from typing import Annotated

import typer

keys_app = typer.Typer(help="Keys of personal data: status, rotation.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


@keys_app.command("status")
def status_cmd() -> None:
    """How many protected values each data key id encrypts, per column; and the keyring."""
    from patron.cli import print_json
    from patron.db import get_engine
    from patron.protection.keys import data_keyring
    from patron.protection.rotation import status

    ring = data_keyring()
    print_json({"current": ring.current_id, "keyring": list(ring.keys),
                "columns": status(get_engine())})


@keys_app.command("rotate")
def rotate_cmd(
    batch: Annotated[int, typer.Option(help="Values re-encrypted per transaction",
                                       min=1, max=10000)] = 500,
) -> None:
    """Re-encrypt every value still under an older key with the current (first) key of
    PATRON_DATA_KEYS, in small transactions while Patron keeps running. Keep the old key in the
    keyring until this finishes and `patron keys status` shows it unused."""
    from patron.cli import _cli_actor, console, print_json
    from patron.db import UnitOfWork, get_engine
    from patron.protection.keys import data_keyring
    from patron.protection.rotation import rotate
    from patron.security import audit

    engine = get_engine()
    ring = data_keyring()
    done = rotate(engine, batch=batch,
                  on_batch=lambda column, n: console.print(f"{column}: {n} re-encrypted"))
    with UnitOfWork(engine) as uow:
        audit.record(uow.c, _cli_actor(), "keys.rotated", details={
            "key_id": ring.current_id, "values": sum(done.values()), "columns": done})
        uow.commit()
    print_json({"current": ring.current_id, "re_encrypted": done})


@keys_app.command("new")
def new_cmd(key_id: Annotated[str, typer.Argument(help="The new key's id")] = "k2") -> None:
    """Print a fresh random key as 'id:key', to put first in a keyring."""
    from patron.cli import console
    from patron.protection.keys import KEY_ID, new_key

    if not KEY_ID.match(key_id):
        raise typer.BadParameter("1-16 letters, digits, '_' or '-'")
    console.print(f"{key_id}:{new_key()}")
