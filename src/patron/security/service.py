"""Users, sessions, API keys: authentication and who may do what."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from dataclasses import replace
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, insert, select, update

from patron.config import get_settings
from patron.db import UnitOfWork, utcnow
from patron.errors import Conflict, NotFound, TooManyAttempts, Unauthorized, ValidationFailed
from patron.security import audit
from patron.security.model import ROLES, Actor
from patron.security.tables import api_keys, sessions, user_stores, users


def _make_hasher() -> PasswordHasher:
    settings = get_settings()
    return PasswordHasher(time_cost=settings.argon2_time_cost,
                          memory_cost=settings.argon2_memory_kib)


_hasher = _make_hasher()
API_KEY_PREFIX = "ptn_"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _check_password_strength(password: str) -> None:
    if len(password) < 8:
        raise ValidationFailed("password_too_short", fields=[])


def create_user(*, uow: UnitOfWork, actor: Actor, username: str, password: str, role: str,
                display_name: str | None = None, store_ids: list[int] | None = None,
                language: str = "zh") -> int:
    from patron.errors import FieldError

    if role not in ROLES:
        raise ValidationFailed("invalid_role", fields=[FieldError("role", "invalid_role")])
    if len(password) < 8:
        raise ValidationFailed("password_too_short",
                               fields=[FieldError("password", "password_too_short")])
    conn = uow.c
    if conn.execute(select(users.c.id).where(users.c.username == username)).first():
        raise Conflict("already_exists", params={"username": username})
    user_id = conn.execute(insert(users).values(
        username=username, display_name=display_name or username,
        password_hash=hash_password(password), role=role, language=language,
        created_at=utcnow()).returning(users.c.id)).scalar_one()
    if store_ids:
        conn.execute(insert(user_stores), [{"user_id": user_id, "store_id": s}
                                           for s in sorted(set(store_ids))])
    audit.record(conn, actor, "user.created", entity="user", entity_id=user_id,
                 details={"username": username, "role": role, "stores": store_ids or []})
    uow.commit()
    return int(user_id)


def _user_actor(conn: Connection, user: Any, ip: str | None, session_id: int | None = None
                ) -> Actor:
    store_ids: frozenset[int] | None = None
    if user.role in ("manager", "cashier"):
        store_ids = frozenset(int(s) for s in conn.execute(
            select(user_stores.c.store_id).where(user_stores.c.user_id == user.id)).scalars())
    return Actor(type="user", id=int(user.id), name=user.username, role=user.role,
                 store_ids=store_ids, ip=ip, language=user.language, session_id=session_id)


def login(*, uow: UnitOfWork, username: str, password: str, ip: str | None
          ) -> tuple[str, Actor]:
    """Check a password and open a session. Failures slow down, then lock the account."""
    settings = get_settings()
    conn = uow.c
    user = conn.execute(select(users).where(users.c.username == username)).first()
    now = utcnow()
    anon = Actor(type="user", id=None, name=username, ip=ip)
    if user is None:
        _hasher.hash(password)  # same work as a real check, so timing does not reveal names
        audit.record(conn, anon, "auth.login_failed", outcome="denied",
                     details={"reason": "unknown_user"})
        uow.commit()
        raise Unauthorized("invalid_credentials")
    if user.locked_until is not None and user.locked_until > now:
        audit.record(conn, anon, "auth.login_failed", entity="user", entity_id=user.id,
                     outcome="denied", details={"reason": "locked"})
        uow.commit()
        raise TooManyAttempts("account_locked",
                              params={"until": user.locked_until.isoformat(timespec="minutes")})
    try:
        ok = _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or not user.active:
        failures = user.failed_logins + 1
        values: dict[str, Any] = {"failed_logins": failures}
        if failures >= settings.login_lock_after:
            values["locked_until"] = now + dt.timedelta(minutes=settings.login_lock_minutes)
            values["failed_logins"] = 0
        conn.execute(update(users).where(users.c.id == user.id).values(**values))
        audit.record(conn, anon, "auth.login_failed", entity="user", entity_id=user.id,
                     outcome="denied",
                     details={"reason": "inactive" if ok else "bad_password",
                              "failures": failures})
        uow.commit()
        if failures > settings.login_slowdown_after:
            # Each further failure costs the guesser more time.
            time.sleep(min(0.25 * (failures - settings.login_slowdown_after), 2.0))
        if "locked_until" in values:
            raise TooManyAttempts("account_locked", params={
                "until": values["locked_until"].isoformat(timespec="minutes")})
        raise Unauthorized("invalid_credentials")
    token = secrets.token_urlsafe(32)
    session_id = conn.execute(insert(sessions).values(
        token_hash=sha256(token), user_id=user.id, created_at=now, ip=ip,
        expires_at=now + dt.timedelta(hours=settings.session_hours)
    ).returning(sessions.c.id)).scalar_one()
    conn.execute(update(users).where(users.c.id == user.id)
                 .values(failed_logins=0, locked_until=None))
    actor = _user_actor(conn, user, ip, int(session_id))
    audit.record(conn, actor, "auth.login", entity="user", entity_id=user.id)
    uow.commit()
    return token, actor


def actor_for_session(conn: Connection, token: str, ip: str | None) -> Actor | None:
    now = utcnow()
    row = conn.execute(
        select(users, sessions.c.id.label("session_id"))
        .join(sessions, sessions.c.user_id == users.c.id)
        .where(sessions.c.token_hash == sha256(token), sessions.c.revoked_at.is_(None),
               sessions.c.expires_at > now, users.c.active.is_(True))).first()
    if row is None:
        return None
    return _user_actor(conn, row, ip, int(row.session_id))


def logout(*, uow: UnitOfWork, actor: Actor) -> None:
    if actor.session_id is None:
        return
    uow.c.execute(update(sessions).where(sessions.c.id == actor.session_id)
                  .values(revoked_at=utcnow()))
    audit.record(uow.c, actor, "auth.logout", entity="user", entity_id=actor.id)
    uow.commit()


def create_api_key(*, uow: UnitOfWork, actor: Actor, name: str, store_ids: list[int],
                   channel_codes: list[str], role: str = "cashier") -> tuple[int, str]:
    """A key for a till or an integration. The secret is returned once and stored hashed."""
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(24)
    key = f"{API_KEY_PREFIX}{prefix}_{secret}"
    key_id = uow.c.execute(insert(api_keys).values(
        name=name, prefix=prefix, key_hash=sha256(key), role=role,
        store_ids=sorted(set(store_ids)), channel_codes=sorted(set(channel_codes)),
        created_by=actor.id, created_at=utcnow()).returning(api_keys.c.id)).scalar_one()
    audit.record(uow.c, actor, "api_key.created", entity="api_key", entity_id=key_id,
                 details={"name": name, "stores": store_ids, "channels": channel_codes,
                          "role": role})
    uow.commit()
    return int(key_id), key


def revoke_api_key(*, uow: UnitOfWork, actor: Actor, key_id: int) -> None:
    result = uow.c.execute(update(api_keys).where(api_keys.c.id == key_id,
                                                  api_keys.c.revoked_at.is_(None))
                           .values(revoked_at=utcnow()))
    if result.rowcount == 0:
        raise NotFound("api_key")
    audit.record(uow.c, actor, "api_key.revoked", entity="api_key", entity_id=key_id)
    uow.commit()
    forget_cached_keys()  # other processes notice within KEY_CACHE_SECONDS


# Key lookups are on the hot path of every till request: remember recent good keys briefly.
_key_cache: dict[str, tuple[float, Actor | None]] = {}
KEY_CACHE_SECONDS = 5.0


def cached_api_key_actor(key: str, ip: str | None) -> tuple[bool, Actor | None]:
    """(True, actor or None for a refused key) when the key was checked in the last few
    seconds; (False, None) when the database must be asked."""
    if not key.startswith(API_KEY_PREFIX) or key.count("_") < 2:
        return True, None
    hit = _key_cache.get(sha256(key))
    if hit and hit[0] > time.monotonic():
        actor = hit[1]
        return True, (None if actor is None else replace(actor, ip=ip))
    return False, None


def actor_for_api_key(conn: Connection, key: str, ip: str | None) -> Actor | None:
    known, cached = cached_api_key_actor(key, ip)
    if known:
        return cached
    digest = sha256(key)
    prefix = key[len(API_KEY_PREFIX):].split("_", 1)[0]
    row = conn.execute(select(api_keys).where(api_keys.c.prefix == prefix)).first()
    actor = None
    if row is not None and row.revoked_at is None and secrets.compare_digest(row.key_hash,
                                                                             digest):
        actor = Actor(type="api_key", id=int(row.id), name=f"key:{row.name}", role=row.role,
                      store_ids=frozenset(row.store_ids) if row.store_ids else None,
                      channel_codes=frozenset(row.channel_codes) if row.channel_codes else None,
                      ip=ip, language="zh")
    _key_cache[digest] = (time.monotonic() + KEY_CACHE_SECONDS, actor)
    return actor


def forget_cached_keys() -> None:
    _key_cache.clear()
