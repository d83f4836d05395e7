"""Birthday, anniversary and referral tables: each program's settings, the gifts granted (at
most once per member, kind and year: a unique key), members' invite codes, referrals, and the
phones and payment accounts that already earned a referral reward (unique per program)."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
)

from patron.db import IdType, Money, Quantity, UTCDateTime, metadata
from patron.protection.redact import Redacted

benefits_settings = Table(
    "benefits_settings",
    metadata,
    Column("program_id", ForeignKey("loyalty_programs.id"), primary_key=True,
           autoincrement=False),
    # none | points (a bonus during the birthday month) | multiplier (on the month's points)
    # | coupon (one coupon of a template, issued in the birthday month)
    Column("birthday_mode", String(10), nullable=False),
    Column("birthday_points", BigInteger, nullable=False, server_default="0"),
    Column("birthday_multiplier", Quantity, nullable=True),
    Column("birthday_coupon_template_id", ForeignKey("coupon_templates.id"), nullable=True,
           index=True),
    # When the birthday gift took its present form: a multiplier counts no month begun before.
    Column("birthday_since", UTCDateTime, nullable=True),
    # Points on each membership anniversary; 0: none.
    Column("anniversary_points", BigInteger, nullable=False, server_default="0"),
    Column("referral_referrer_points", BigInteger, nullable=False, server_default="0"),
    Column("referral_referee_points", BigInteger, nullable=False, server_default="0"),
    Column("referral_min_spend", Money, nullable=False),
    Column("referral_days", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("birthday_mode IN ('none', 'points', 'multiplier', 'coupon')",
                    name="birthday_mode"),
    CheckConstraint("birthday_mode <> 'coupon' OR birthday_coupon_template_id IS NOT NULL",
                    name="birthday_coupon"),
    CheckConstraint("birthday_mode <> 'points' OR birthday_points > 0", name="birthday_points"),
    # Quantity is stored in thousandths: a factor above 1 and at most 10.
    CheckConstraint("birthday_mode <> 'multiplier' OR (birthday_multiplier > 1000 "
                    "AND birthday_multiplier <= 10000)", name="birthday_multiplier"),
    CheckConstraint("birthday_points >= 0 AND birthday_points <= 1000000 AND "
                    "anniversary_points >= 0 AND anniversary_points <= 1000000 AND "
                    "referral_referrer_points >= 0 AND referral_referrer_points <= 1000000 AND "
                    "referral_referee_points >= 0 AND referral_referee_points <= 1000000",
                    name="points_bounds"),
    CheckConstraint("referral_min_spend >= 0", name="referral_min_spend"),
    CheckConstraint("referral_days BETWEEN 1 AND 365", name="referral_days"),
)

# A birthday or anniversary gift: at most one per member, kind and year, whatever runs the job.
benefits_grants = Table(
    "benefits_grants",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", IdType, nullable=False),
    Column("member_id", ForeignKey("loyalty_members.id"), nullable=False),
    Column("kind", String(12), nullable=False),  # birthday | anniversary
    Column("year", SmallInteger, nullable=False),
    Column("points", BigInteger, nullable=False),
    # The loyalty adjustment that credited the points (none when there was nothing to give).
    Column("operation_id", ForeignKey("loyalty_operations.id"), nullable=True, index=True),
    # The coupon issue of a birthday coupon.
    Column("coupon_issue_id", ForeignKey("coupon_issues.id"), nullable=True, index=True),
    Column("detail", Redacted(), nullable=True),
    Column("granted_at", UTCDateTime, nullable=False),
    UniqueConstraint("member_id", "kind", "year", name="uq_benefits_grants_once_a_year"),
    CheckConstraint("kind IN ('birthday', 'anniversary')", name="kind"),
    CheckConstraint("points >= 0", name="points"),
    CheckConstraint("year BETWEEN 2000 AND 2200", name="year"),
)

benefits_invites = Table(
    "benefits_invites",
    metadata,
    Column("member_id", ForeignKey("loyalty_members.id"), primary_key=True,
           autoincrement=False),
    Column("program_id", IdType, nullable=False),
    Column("code", String(16), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
)

# A new member linked to the member whose invite code it enrolled with. pending -> rewarded
# (both got their points), expired (no qualifying purchase in time) or refused (self-referral,
# a phone or payment account already rewarded).
benefits_referrals = Table(
    "benefits_referrals",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", IdType, nullable=False),
    Column("referrer_member_id", ForeignKey("loyalty_members.id"), nullable=False, index=True),
    # A member is referred at most once.
    Column("referee_member_id", ForeignKey("loyalty_members.id"), nullable=False, unique=True),
    Column("invite_code", String(16), nullable=False),
    Column("linked_at", UTCDateTime, nullable=False),
    Column("qualify_until", UTCDateTime, nullable=False),
    Column("status", String(10), nullable=False),
    Column("reason", String(40), nullable=True),
    Column("order_id", ForeignKey("orders.id"), nullable=True, index=True),
    Column("referrer_operation_id", IdType, nullable=True),
    Column("referee_operation_id", IdType, nullable=True),
    Column("referrer_points", BigInteger, nullable=True),
    Column("referee_points", BigInteger, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Index("ix_benefits_referrals_status", "status", "id"),
    CheckConstraint("status IN ('pending', 'rewarded', 'expired', 'refused')", name="status"),
    CheckConstraint("referrer_member_id <> referee_member_id", name="not_self"),
    CheckConstraint("qualify_until > linked_at", name="window"),
)

# What earned a referral reward: the new member's phone and payment accounts. Unique per
# program, so neither can earn a second one, even with two jobs running at once.
benefits_referral_claims = Table(
    "benefits_referral_claims",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", IdType, nullable=False),
    Column("kind", String(16), nullable=False),  # phone | payment_account
    Column("value", String(160), nullable=False),
    Column("referral_id", ForeignKey("benefits_referrals.id"), nullable=False, index=True),
    UniqueConstraint("program_id", "kind", "value", name="uq_benefits_referral_claims"),
    CheckConstraint("kind IN ('phone', 'payment_account')", name="kind"),
)
