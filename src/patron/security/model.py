"""Who is acting, and what their role lets them do. Plain Python."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

ROLES = ("owner", "analyst", "manager", "cashier")

# What each role may do. Scope (which stores) is separate: managers and cashiers see only their
# stores' customers and orders.
PERMISSIONS: dict[str, frozenset[str]] = {
    "owner": frozenset({
        "orders.read", "orders.write", "customers.read", "customers.write", "customers.merge",
        "customers.undo_merge", "personal_data.reveal", "export", "import", "admin.org",
        "admin.users", "admin.api_keys", "admin.webhooks", "admin.custom_fields", "audit.read",
        "dashboard.read",
    }),
    "analyst": frozenset({"orders.read", "customers.read", "export", "dashboard.read"}),
    "manager": frozenset({
        "orders.read", "orders.write", "customers.read", "customers.write", "export", "import",
        "dashboard.read",
    }),
    "cashier": frozenset({"orders.write", "customers.lookup"}),
}
# A cashier looks a member up by exact identifier at the till; it does not browse or read lists.
for _role in ("owner", "analyst", "manager"):
    PERMISSIONS[_role] = PERMISSIONS[_role] | {"customers.lookup"}
# Loyalty (docs/loyalty.md): owners manage programs, rules and tiers; managers act within their
# stores; cashiers enrol, look up balances and redeem at the till; analysts read.
_LOYALTY: dict[str, set[str]] = {
    "owner": {"loyalty.read", "loyalty.lookup", "loyalty.enrol", "loyalty.redeem",
              "loyalty.adjust", "loyalty.manage"},
    "analyst": {"loyalty.read", "loyalty.lookup"},
    "manager": {"loyalty.read", "loyalty.lookup", "loyalty.enrol", "loyalty.redeem",
                "loyalty.adjust"},
    "cashier": {"loyalty.lookup", "loyalty.enrol", "loyalty.redeem"},
}
for _role, _perms in _LOYALTY.items():
    PERMISSIONS[_role] = PERMISSIONS[_role] | _perms
# Coupons (docs/coupons.md): owners manage templates; managers issue at their stores; cashiers
# look up, evaluate and redeem at the till; analysts and managers read templates and liability.
_COUPONS: dict[str, set[str]] = {
    "owner": {"coupons.read", "coupons.manage", "coupons.issue", "coupons.redeem"},
    "analyst": {"coupons.read"},
    "manager": {"coupons.read", "coupons.issue", "coupons.redeem"},
    "cashier": {"coupons.redeem"},
}
for _role, _perms in _COUPONS.items():
    PERMISSIONS[_role] = PERMISSIONS[_role] | _perms
# The POS checkout (docs/checkout.md): quote, commit, hold and sync offline sales ('sell'), and
# refund a checkout; cashiers and managers at their stores only.
_CHECKOUT: dict[str, set[str]] = {
    "owner": {"checkout.sell", "checkout.refund"},
    "manager": {"checkout.sell", "checkout.refund"},
    "cashier": {"checkout.sell", "checkout.refund"},
}
for _role, _perms in _CHECKOUT.items():
    PERMISSIONS[_role] = PERMISSIONS[_role] | _perms
# Stored value (docs/stored-value.md): owners set it up; cashiers and managers top up, look up,
# spend, hold and refund to the card at their stores; paying a top-up back in cash and manual
# adjustments need managers (their stores' members) or owners; analysts read the reports.
_STORED_VALUE: dict[str, set[str]] = {
    "owner": {"stored_value.read", "stored_value.lookup", "stored_value.topup",
              "stored_value.spend", "stored_value.cashout", "stored_value.adjust",
              "stored_value.manage"},
    "analyst": {"stored_value.read", "stored_value.lookup"},
    "manager": {"stored_value.read", "stored_value.lookup", "stored_value.topup",
                "stored_value.spend", "stored_value.cashout", "stored_value.adjust"},
    "cashier": {"stored_value.lookup", "stored_value.topup", "stored_value.spend"},
}
for _role, _perms in _STORED_VALUE.items():
    PERMISSIONS[_role] = PERMISSIONS[_role] | _perms
# Messages (docs/messaging.md): owners manage templates and retry failed messages; analysts
# read the outbox (addresses masked, one-time codes hidden).
PERMISSIONS["owner"] = PERMISSIONS["owner"] | {"messages.read", "messages.manage"}
PERMISSIONS["analyst"] = PERMISSIONS["analyst"] | {"messages.read"}
# Automations and campaigns (docs/automations.md, docs/campaigns.md): owners define, launch and
# approve; analysts read (and dry-run).
for _role, _perms in {
    "owner": {"automations.read", "automations.manage", "campaigns.read", "campaigns.manage",
              "campaigns.approve"},
    "analyst": {"automations.read", "campaigns.read"},
}.items():
    PERMISSIONS[_role] = PERMISSIONS[_role] | _perms
# Rewards catalog (docs/rewards.md): owners manage items; tills and managers redeem and hand
# rewards over; everyone reads the catalog.
_REWARDS: dict[str, set[str]] = {
    "owner": {"rewards.read", "rewards.redeem", "rewards.manage"},
    "analyst": {"rewards.read"},
    "manager": {"rewards.read", "rewards.redeem"},
    "cashier": {"rewards.read", "rewards.redeem"},
}
for _role, _perms in _REWARDS.items():
    PERMISSIONS[_role] = PERMISSIONS[_role] | _perms
# Birthday, anniversary and referral (docs/benefits.md): owners set the gifts; tills enrol
# referred friends and hand out invite codes; managers and analysts read.
_BENEFITS: dict[str, set[str]] = {
    "owner": {"benefits.read", "benefits.refer", "benefits.manage"},
    "analyst": {"benefits.read"},
    "manager": {"benefits.read", "benefits.refer"},
    "cashier": {"benefits.refer"},
}
for _role, _perms in _BENEFITS.items():
    PERMISSIONS[_role] = PERMISSIONS[_role] | _perms
# Tags and segments (docs/segments.md): owners and analysts build segments and tags for every
# customer; managers for their stores' customers (the store scope applies to every count, sample
# and export); cashiers do not browse lists.
_SEGMENTS: dict[str, set[str]] = {
    "owner": {"segments.read", "segments.manage", "tags.read", "tags.manage", "tags.apply"},
    "analyst": {"segments.read", "segments.manage", "tags.read", "tags.manage", "tags.apply"},
    "manager": {"segments.read", "tags.read", "tags.apply"},
}
for _role, _perms in _SEGMENTS.items():
    PERMISSIONS[_role] = PERMISSIONS[_role] | _perms
# Personal-information rights (docs/privacy.md): owners handle people's requests for a copy,
# correction or deletion of their data and run the retention job.
PERMISSIONS["owner"] = PERMISSIONS["owner"] | {"privacy.manage"}


# Deleting what staff created (import mappings, promotions, webhooks, templates, coupons):
# besides the area's own permission, a DELETE needs this one.
for _role in ("owner", "manager"):
    PERMISSIONS[_role] = PERMISSIONS[_role] | {"records.delete"}
# Owners approve exports over PATRON_EXPORT_APPROVAL_ROWS rows, and see the security alerts.
PERMISSIONS["owner"] = PERMISSIONS["owner"] | {"exports.approve"}

# The permissions an owner edits in the matrix (custom roles are built from these), each
# standing for the finer permissions the routes check. A route's permission must appear here
# (tests/e2e/test_route_guards.py), so a new area maps its permissions when it adds them.
COARSE: dict[str, frozenset[str]] = {
    "view": frozenset({
        "orders.read", "customers.read", "customers.lookup", "dashboard.read", "loyalty.read",
        "loyalty.lookup", "coupons.read", "stored_value.read", "stored_value.lookup",
        "rewards.read", "benefits.read", "messages.read", "segments.read",
        "automations.read", "campaigns.read", "tags.read"}),
    "create": frozenset({
        "orders.write", "import", "loyalty.enrol", "loyalty.redeem", "coupons.issue",
        "coupons.redeem", "checkout.sell", "stored_value.topup", "stored_value.spend",
        "rewards.redeem", "benefits.refer"}),
    "edit": frozenset({"customers.write", "customers.merge", "customers.undo_merge",
                       "checkout.refund", "stored_value.cashout", "tags.apply"}),
    "delete": frozenset({"records.delete"}),
    "export": frozenset({"export"}),
    "reveal": frozenset({"personal_data.reveal"}),
    "adjust_points": frozenset({"loyalty.adjust", "stored_value.adjust"}),
    "manage_rules": frozenset({
        "loyalty.manage", "coupons.manage", "stored_value.manage", "rewards.manage",
        "benefits.manage", "messages.manage", "admin.org", "admin.custom_fields",
        "admin.webhooks", "segments.manage", "automations.manage", "campaigns.manage",
        "campaigns.approve", "tags.manage"}),
    "manage_users": frozenset({"admin.users", "admin.api_keys", "audit.read",
                               "exports.approve", "privacy.manage"}),
}
COARSE_OF: dict[str, str] = {fine: coarse for coarse, fines in COARSE.items() for fine in fines}
# Data scopes of a custom role: every store, a brand's stores, a region's stores, or the
# stores assigned to the user.
SCOPES = ("all", "brand", "region", "own_stores")


def fine_permissions(coarse: set[str] | frozenset[str]) -> frozenset[str]:
    """The route-level permissions a custom role's editable permissions grant."""
    return frozenset().union(*(COARSE[c] for c in coarse if c in COARSE))


def coarse_summary(role: str) -> dict[str, str]:
    """For the matrix: per editable permission, 'all', 'some' or 'none' of its finer
    permissions held by a built-in role."""
    held = PERMISSIONS.get(role, frozenset())
    out = {}
    for coarse, fines in COARSE.items():
        n = len(fines & held)
        out[coarse] = "all" if n == len(fines) else ("some" if n else "none")
    return out


@dataclass(frozen=True)
class Actor:
    type: str  # user | api_key | system
    id: int | None
    name: str
    role: str = "owner"
    # None: every store. Otherwise the store ids this actor may see and write for.
    store_ids: frozenset[int] | None = None
    channel_codes: frozenset[str] | None = None
    ip: str | None = None
    language: str = "zh"
    session_id: int | None = field(default=None, compare=False)
    # A custom role's permissions (from the matrix); None: the built-in role's.
    permissions: frozenset[str] | None = None
    # When the user last typed their password in this session (sensitive actions need it
    # recent); None for keys and the system.
    authenticated_at: dt.datetime | None = field(default=None, compare=False)

    def can(self, permission: str) -> bool:
        if self.permissions is not None:
            return permission in self.permissions
        return permission in PERMISSIONS.get(self.role, frozenset())

    def sees_store(self, store_id: int | None) -> bool:
        return self.store_ids is None or (store_id is not None and store_id in self.store_ids)


SYSTEM = Actor(type="system", id=None, name="system", role="owner")
