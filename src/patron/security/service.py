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
from patron.protection.fields import Sealed
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
    _check_stores(conn, store_ids)
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


def _check_stores(conn: Connection, store_ids: list[int] | None) -> None:
    from patron.errors import FieldError
    from patron.org.tables import stores

    wanted = set(store_ids or [])
    if not wanted:
        return
    valid = {s for s in wanted if isinstance(s, int) and 0 < s < 2**63}
    known = set(conn.execute(select(stores.c.id).where(stores.c.id.in_(sorted(valid))))
                .scalars()) if valid else set()
    if wanted - known:
        raise ValidationFailed("validation_failed",
                               fields=[FieldError("store_ids", "unknown_reference")])


def _own_stores(conn: Connection, user_id: int) -> frozenset[int]:
    return frozenset(int(s) for s in conn.execute(
        select(user_stores.c.store_id).where(user_stores.c.user_id == user_id)).scalars())


def role_scope_stores(conn: Connection, role: Any, user_id: int) -> frozenset[int] | None:
    """The stores a custom role's scope reaches for a user: None for every store."""
    from patron.org.tables import stores

    if role.scope == "all":
        return None
    if role.scope == "brand":
        return frozenset(int(s) for s in conn.execute(
            select(stores.c.id).where(stores.c.brand_id == role.brand_id)).scalars())
    if role.scope == "region":
        return frozenset(int(s) for s in conn.execute(
            select(stores.c.id).where(stores.c.region_id == role.region_id)).scalars())
    return _own_stores(conn, user_id)


def _user_actor(conn: Connection, user: Any, ip: str | None, session_id: int | None = None,
                authenticated_at: dt.datetime | None = None) -> Actor:
    from patron.security.model import fine_permissions
    from patron.security.tables import roles

    store_ids: frozenset[int] | None = None
    permissions = None
    role_name = user.role
    if user.role_id is not None:
        role = conn.execute(select(roles).where(roles.c.id == user.role_id)).first()
        if role is None:  # a role removed under a user: nothing
            permissions, store_ids = frozenset(), frozenset()
        else:
            role_name = role.name
            permissions = fine_permissions(frozenset(role.permissions))
            store_ids = role_scope_stores(conn, role, int(user.id))
    elif user.role in ("manager", "cashier"):
        store_ids = _own_stores(conn, int(user.id))
    return Actor(type="user", id=int(user.id), name=user.username, role=role_name,
                 store_ids=store_ids, ip=ip, language=user.language, session_id=session_id,
                 permissions=permissions, authenticated_at=authenticated_at)


def login(*, uow: UnitOfWork, username: str, password: str, ip: str | None,
          totp: str | None = None) -> tuple[str, Actor]:
    """Check a password (and the second factor when the user set one up) and open a session.
    Failures slow down, then lock the account; repeated failures, a disabled user trying and
    sign-ins from a new address or at quiet hours alert the owners."""
    from patron.security import alerts

    settings = get_settings()
    conn = uow.c
    user = conn.execute(select(users).where(users.c.username == username)).first()
    now = utcnow()
    anon = Actor(type="user", id=None, name=username, ip=ip)
    if user is None:
        _hasher.hash(password)  # same work as a real check, so timing does not reveal names
        audit.record(conn, anon, "auth.login_failed", outcome="denied",
                     details={"reason": "unknown_user"})
        _failures_from_address(conn, ip, now)
        uow.commit()
        raise Unauthorized("invalid_credentials")
    if user.locked_until is not None and user.locked_until > now:
        audit.record(conn, anon, "auth.login_failed", entity="user", entity_id=user.id,
                     outcome="denied", details={"reason": "locked"})
        alerts.raise_alert(conn, kind="failed_logins", subject=username,
                           details={"reason": "locked", "ip": ip or "?"}, now=now)
        uow.commit()
        raise TooManyAttempts("account_locked",
                              params={"until": user.locked_until.isoformat(timespec="minutes")})
    try:
        ok = _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        ok = False
    second_factor_missing = False
    if ok and user.active and user.totp_secret:
        if not totp:
            second_factor_missing = True
        elif not totp_ok(user.totp_secret, totp):
            ok = False
    if second_factor_missing:
        # The password was right: ask for the code without counting a failure.
        raise Unauthorized("totp_required")
    if not ok or not user.active:
        failures = user.failed_logins + 1
        values: dict[str, Any] = {"failed_logins": failures}
        if failures >= settings.login_lock_after:
            values["locked_until"] = now + dt.timedelta(minutes=settings.login_lock_minutes)
            values["failed_logins"] = 0
        conn.execute(update(users).where(users.c.id == user.id).values(**values))
        reason = "inactive" if not user.active else ("bad_totp" if totp else "bad_password")
        audit.record(conn, anon, "auth.login_failed", entity="user", entity_id=user.id,
                     outcome="denied", details={"reason": reason, "failures": failures})
        if not user.active:
            alerts.raise_alert(conn, kind="disabled_user", subject=username,
                               details={"ip": ip or "?"}, now=now)
        if "locked_until" in values:
            alerts.raise_alert(conn, kind="failed_logins", subject=username,
                               details={"failures": failures, "ip": ip or "?",
                                        "reason": "locked"}, now=now)
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
        authenticated_at=now, expires_at=now + dt.timedelta(hours=settings.session_hours)
    ).returning(sessions.c.id)).scalar_one()
    conn.execute(update(users).where(users.c.id == user.id)
                 .values(failed_logins=0, locked_until=None))
    actor = _user_actor(conn, user, ip, int(session_id), now)
    alerts.after_login(conn, user_id=int(user.id), username=username, ip=ip, now=now)
    audit.record(conn, actor, "auth.login", entity="user", entity_id=user.id)
    uow.commit()
    return token, actor


def _failures_from_address(conn: Connection, ip: str | None, now: dt.datetime) -> None:
    """Sign-ins with unknown names from one address: a guesser trying names."""
    from sqlalchemy import func

    from patron.security import alerts
    from patron.security.tables import audit_log

    settings = get_settings()
    if ip is None:
        return
    since = now - dt.timedelta(minutes=settings.alert_window_minutes)
    n = conn.execute(select(func.count()).select_from(audit_log).where(
        audit_log.c.action == "auth.login_failed", audit_log.c.ip == ip,
        audit_log.c.at >= since)).scalar_one()
    if n >= settings.login_lock_after:
        alerts.raise_alert(conn, kind="failed_logins", subject=ip,
                           details={"failures": int(n), "reason": "many_names"}, now=now)


# --- second factor, re-authentication, passwords and sessions ----------------------------------

def totp_ok(secret: str, code: str) -> bool:
    import pyotp

    code = "".join(ch for ch in str(code) if ch.isdigit())
    return len(code) == 6 and pyotp.TOTP(secret).verify(code, valid_window=1)


def _check_password(conn: Connection, actor: Actor, password: str) -> Any:
    user = conn.execute(select(users).where(users.c.id == actor.id)).first()
    if user is None:
        raise Unauthorized("unauthorized")
    try:
        ok = _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        raise Unauthorized("invalid_credentials")
    return user


def reauthenticate(*, uow: UnitOfWork, actor: Actor, password: str,
                   totp: str | None = None) -> dt.datetime:
    """The user types their password (and code) again: sensitive actions are allowed for
    PATRON_REAUTH_MINUTES from now in this session."""
    if actor.type != "user" or actor.session_id is None:
        raise Unauthorized("unauthorized")
    user = _check_password(uow.c, actor, password)
    if user.totp_secret and not (totp and totp_ok(user.totp_secret, totp)):
        audit.record(uow.c, actor, "auth.reauth_failed", entity="user", entity_id=actor.id,
                     outcome="denied", details={"reason": "totp"})
        uow.commit()
        raise Unauthorized("totp_required")
    now = utcnow()
    uow.c.execute(update(sessions).where(sessions.c.id == actor.session_id)
                  .values(authenticated_at=now))
    audit.record(uow.c, actor, "auth.reauthenticated", entity="user", entity_id=actor.id)
    uow.commit()
    return now


def recently_authenticated(actor: Actor, now: dt.datetime | None = None) -> bool:
    """API keys and the system never type a password; a user must have, recently."""
    if actor.type != "user":
        return True
    if actor.authenticated_at is None:
        return False
    limit = dt.timedelta(minutes=get_settings().reauth_minutes)
    return (now or utcnow()) - actor.authenticated_at <= limit


def change_password(*, uow: UnitOfWork, actor: Actor, current: str, new: str
                    ) -> tuple[str, Actor]:
    """A new password ends every session of the user (a thief's too); the caller gets a new
    one."""
    from patron.errors import FieldError

    conn = uow.c
    user = _check_password(conn, actor, current)
    if len(new) < 8:
        raise ValidationFailed("password_too_short",
                               fields=[FieldError("new_password", "password_too_short")])
    now = utcnow()
    conn.execute(update(users).where(users.c.id == user.id)
                 .values(password_hash=hash_password(new), password_changed_at=now))
    ended = _end_sessions(conn, int(user.id), now)
    token = secrets.token_urlsafe(32)
    session_id = conn.execute(insert(sessions).values(
        token_hash=sha256(token), user_id=user.id, created_at=now, ip=actor.ip,
        authenticated_at=now, expires_at=now + dt.timedelta(hours=get_settings().session_hours)
    ).returning(sessions.c.id)).scalar_one()
    audit.record(conn, actor, "user.password_changed", entity="user", entity_id=user.id,
                 details={"sessions_ended": ended})
    fresh = _user_actor(conn, user, actor.ip, int(session_id), now)
    uow.commit()
    return token, fresh


def _end_sessions(conn: Connection, user_id: int, now: dt.datetime) -> int:
    result = conn.execute(update(sessions).where(sessions.c.user_id == user_id,
                                                 sessions.c.revoked_at.is_(None))
                          .values(revoked_at=now))
    return int(result.rowcount or 0)


def end_user_sessions(*, uow: UnitOfWork, actor: Actor, user_id: int) -> int:
    """An owner signs a user out everywhere."""
    if uow.c.execute(select(users.c.id).where(users.c.id == user_id)).first() is None:
        raise NotFound("not_found")
    ended = _end_sessions(uow.c, user_id, utcnow())
    audit.record(uow.c, actor, "user.sessions_ended", entity="user", entity_id=user_id,
                 details={"sessions_ended": ended})
    uow.commit()
    return ended


def update_user(*, uow: UnitOfWork, actor: Actor, user_id: int, active: bool | None = None,
                role: str | None = None, role_id: int | None = None,
                store_ids: list[int] | None = None) -> None:
    """Disable or enable a user (disabling ends their sessions), or change their role: a
    built-in one (``role``) or a custom one (``role_id``), and their own stores."""
    from patron.errors import FieldError
    from patron.security.tables import roles

    conn = uow.c
    user = conn.execute(select(users).where(users.c.id == user_id)).first()
    if user is None:
        raise NotFound("not_found")
    if actor.id == user_id and (active is False or role is not None or role_id is not None):
        raise Conflict("cannot_change_own_access")
    values: dict[str, Any] = {}
    details: dict[str, Any] = {}
    if active is not None and active != user.active:
        values["active"] = active
        details["active"] = active
    if role is not None or role_id is not None:
        if role_id is not None:
            if conn.execute(select(roles.c.id).where(roles.c.id == role_id)).first() is None:
                raise ValidationFailed("validation_failed",
                                       fields=[FieldError("role_id", "unknown_reference")])
            values.update(role="custom", role_id=role_id)
        else:
            if role not in ROLES:
                raise ValidationFailed("invalid_role", fields=[FieldError("role",
                                                                          "invalid_role")])
            values.update(role=role, role_id=None)
        details.update(role=values["role"], role_id=values["role_id"])
    if values:
        conn.execute(update(users).where(users.c.id == user_id).values(**values))
    if store_ids is not None:
        _check_stores(conn, store_ids)
        conn.execute(user_stores.delete().where(user_stores.c.user_id == user_id))
        if store_ids:
            conn.execute(insert(user_stores), [{"user_id": user_id, "store_id": s}
                                               for s in sorted(set(store_ids))])
        details["stores"] = sorted(set(store_ids))
    if not details:
        return
    if values.get("active") is False or "role" in details:
        details["sessions_ended"] = _end_sessions(conn, user_id, utcnow())
    audit.record(conn, actor, "user.updated", entity="user", entity_id=user_id,
                 details=details)
    uow.commit()


def start_totp(*, uow: UnitOfWork, actor: Actor) -> dict[str, str]:
    """A new secret for the user's authenticator app, active once a code from it is
    confirmed. Owners only (the permission to manage users)."""
    import pyotp

    secret = pyotp.random_base32()
    uow.c.execute(update(users).where(users.c.id == actor.id).values(
        totp_pending=Sealed((actor.id,), secret)))
    audit.record(uow.c, actor, "auth.totp_started", entity="user", entity_id=actor.id)
    uow.commit()
    uri = pyotp.TOTP(secret).provisioning_uri(name=actor.name, issuer_name="Patron")
    return {"secret": secret, "uri": uri}


def confirm_totp(*, uow: UnitOfWork, actor: Actor, code: str) -> None:
    from patron.errors import FieldError

    user = uow.c.execute(select(users).where(users.c.id == actor.id)).first()
    if user is None or not user.totp_pending:
        raise Conflict("totp_not_started")
    if not totp_ok(user.totp_pending, code):
        raise ValidationFailed("validation_failed", fields=[FieldError("code", "totp_invalid")])
    uow.c.execute(update(users).where(users.c.id == actor.id)
                  .values(totp_secret=Sealed((actor.id,), user.totp_pending), totp_pending=None))
    audit.record(uow.c, actor, "auth.totp_enabled", entity="user", entity_id=actor.id)
    uow.commit()


def disable_totp(*, uow: UnitOfWork, actor: Actor, user_id: int) -> None:
    result = uow.c.execute(update(users).where(users.c.id == user_id)
                           .values(totp_secret=None, totp_pending=None))
    if result.rowcount == 0:
        raise NotFound("not_found")
    audit.record(uow.c, actor, "auth.totp_disabled", entity="user", entity_id=user_id)
    uow.commit()


def actor_for_session(conn: Connection, token: str, ip: str | None) -> Actor | None:
    now = utcnow()
    row = conn.execute(
        select(users, sessions.c.id.label("session_id"),
               sessions.c.authenticated_at.label("session_authenticated_at"))
        .join(sessions, sessions.c.user_id == users.c.id)
        .where(sessions.c.token_hash == sha256(token), sessions.c.revoked_at.is_(None),
               sessions.c.expires_at > now, users.c.active.is_(True))).first()
    if row is None:
        return None
    return _user_actor(conn, row, ip, int(row.session_id), row.session_authenticated_at)


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
    _check_stores(uow.c, store_ids)
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


def note_refused_key(key: str, ip: str | None) -> None:
    """A refused bearer key: when it is a revoked key (not a typo), alert the owners."""
    from patron.db import get_engine
    from patron.security import alerts

    if not key.startswith(API_KEY_PREFIX) or key.count("_") < 2:
        return
    prefix = key[len(API_KEY_PREFIX):].split("_", 1)[0]
    with UnitOfWork(get_engine()) as uow:
        row = uow.c.execute(select(api_keys).where(api_keys.c.prefix == prefix)).first()
        if row is None or row.revoked_at is None or not secrets.compare_digest(
                row.key_hash, sha256(key)):
            return
        alerts.raise_alert(uow.c, kind="api_key_misuse", subject=f"key:{row.name}",
                           details={"reason": "revoked_key_used", "key_id": int(row.id),
                                    "ip": ip or "?"},
                           dedupe=f"revoked:{alerts.window(utcnow())}")
        uow.commit()
