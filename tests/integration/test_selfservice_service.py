"""Member self-service on SQLite and PostgreSQL: one-time-code login with its limits, the member
session, what a member sees (points with lots, tier progress, purchases, card, consents),
enrolment from the page, and that a member only ever reaches its own data."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from patron.db import UnitOfWork
from patron.errors import Forbidden, NotFound, TooManyAttempts, Unauthorized, ValidationFailed
from patron.loyalty import queries as loyalty_queries
from patron.loyalty import service as loyalty
from patron.loyalty.schemas import AdjustIn, ProgramSettings
from patron.loyalty.tables import loyalty_consents
from patron.messaging.tables import messages
from patron.org import service as org
from patron.security.model import SYSTEM
from patron.security.tables import audit_log
from patron.selfservice import service
from patron.selfservice.model import LoginLimits
from patron.selfservice.tables import (
    selfservice_card_keys,
    selfservice_codes,
    selfservice_sessions,
)
from tests.factories import T0, make_org
from tests.loyalty_factories import PHONE, buy, enrol, give_back, make_program
from tests.selfservice_helpers import last_code, sent_codes

NOW = T0 + dt.timedelta(days=2)
OTHER_PHONE = "13987654321"
STRANGER = "13700001111"
IP = "203.0.113.7"


@pytest.fixture
def shop(uow) -> dict[str, Any]:
    """Two members of the Bean Club (brand B1) with purchases; the first also shops at another
    brand (B2, its own program) where the self-service pages must not mix the two."""
    make_org(uow)
    b2 = org.create_brand(uow=uow, actor=SYSTEM, code="B2", name="Tea House")
    org.create_store(uow=uow, actor=SYSTEM, code="TH01", name="茶馆一店", brand_id=b2)
    make_program(uow)
    make_program(uow, code="TH", brand="B2")
    me = enrol(uow)
    other = enrol(uow, OTHER_PHONE)
    for i in range(12):
        buy(uow, f"ME-{i}", at=T0 - dt.timedelta(days=i, hours=1))
    buy(uow, "ME-TEA", store="TH01", at=T0 - dt.timedelta(hours=3))
    buy(uow, "OT-1", phone=OTHER_PHONE, at=T0 - dt.timedelta(hours=2))
    return {"me": me, "other": other}


def sign_in(uow: UnitOfWork, phone: str = PHONE, *,
            now: dt.datetime = NOW, ip: str = IP) -> service.MemberSession:
    sent = service.request_code(uow=uow, phone=phone, ip=ip, now=now)
    code = last_code(sent.masked_phone)
    _token, session = service.verify_code(uow=uow, phone=phone, code=code, ip=ip,
                                          now=now + dt.timedelta(seconds=30))
    return session


def audit_actions(uow: UnitOfWork, prefix: str) -> list[tuple[str, str, str]]:
    return [(r.action, r.actor_name, r.outcome) for r in uow.c.execute(
        select(audit_log.c.action, audit_log.c.actor_name, audit_log.c.outcome)
        .where(audit_log.c.action.startswith(prefix)).order_by(audit_log.c.id))]


# --- signing in ---------------------------------------------------------------------------------

def test_a_code_is_sent_alike_to_a_known_and_an_unknown_phone(uow, shop):
    known = service.request_code(uow=uow, phone=PHONE, ip=IP, now=NOW)
    unknown = service.request_code(uow=uow, phone=STRANGER, ip=IP, now=NOW)
    assert type(known) is type(unknown)
    assert (known.masked_phone, unknown.masked_phone) == ("138****5678", "137****1111")
    assert known.expires_at == unknown.expires_at == NOW + dt.timedelta(minutes=5)
    assert [p for p, _ in sent_codes()] == ["138****5678", "137****1111"]
    # Both are queued in the outbox as one-time-code SMS that expire with the code.
    queued = uow.c.execute(select(messages.c.customer_id, messages.c.to_address,
                                  messages.c.channel, messages.c.purpose, messages.c.expires_at,
                                  messages.c.template).order_by(messages.c.id)).all()
    assert [tuple(q) for q in queued] == [
        (shop["me"]["customer_id"], "+8613812345678", "sms", "otp", known.expires_at,
         "otp_login"),
        (None, "+8613700001111", "sms", "otp", unknown.expires_at, "otp_login")]
    # Both are audited; the entry (for staff eyes only) tells them apart.
    sent = uow.c.execute(select(audit_log.c.details, audit_log.c.entity_id).where(
        audit_log.c.action == "selfservice.code_sent").order_by(audit_log.c.id)).all()
    assert [d["known_customer"] for d, _ in sent] == [True, False]
    assert sent[0][1] == str(shop["me"]["customer_id"]) and sent[1][1] is None


def test_the_code_is_stored_only_as_a_salted_hash_and_the_phone_only_as_a_hash(uow, shop):
    service.request_code(uow=uow, phone=PHONE, ip=IP, now=NOW)
    code = last_code("138****5678")
    row = uow.c.execute(select(selfservice_codes)).mappings().one()
    assert code not in str(dict(row)) and "13812345678" not in str(dict(row))
    assert row["expires_at"] == NOW + dt.timedelta(minutes=5)


def test_a_code_signs_in_once_and_opens_a_short_session(uow, shop):
    sent = service.request_code(uow=uow, phone="138 1234 5678", ip=IP, now=NOW)
    code = last_code(sent.masked_phone)
    token, session = service.verify_code(uow=uow, phone="+86 138-1234-5678", code=code, ip=IP,
                                         now=NOW + dt.timedelta(minutes=1))
    assert session.customer_id == shop["me"]["customer_id"] and session.phone == "+8613812345678"
    assert session.expires_at == NOW + dt.timedelta(minutes=31)
    stored = uow.c.execute(select(selfservice_sessions.c.token_hash)).scalar_one()
    assert token not in stored
    found = service.session_for_token(uow.c, token, IP, now=NOW + dt.timedelta(minutes=30))
    assert found is not None and found.id == session.id
    assert service.session_for_token(uow.c, token, IP, now=NOW + dt.timedelta(minutes=31)) is None
    with pytest.raises(Unauthorized) as again:
        service.verify_code(uow=uow, phone=PHONE, code=code, ip=IP,
                            now=NOW + dt.timedelta(minutes=2))
    assert again.value.message == "selfservice.code_invalid_or_expired"
    assert [a for a, _, _ in audit_actions(uow, "selfservice.")] == [
        "selfservice.code_sent", "selfservice.login", "selfservice.login_failed"]


def test_a_code_expires_after_five_minutes(uow, shop):
    service.request_code(uow=uow, phone=PHONE, ip=IP, now=NOW)
    code = last_code("138****5678")
    with pytest.raises(Unauthorized) as err:
        service.verify_code(uow=uow, phone=PHONE, code=code, ip=IP,
                            now=NOW + dt.timedelta(minutes=5))
    assert err.value.message == "selfservice.code_invalid_or_expired"


def test_only_the_newest_code_counts(uow, shop):
    service.request_code(uow=uow, phone=PHONE, ip=IP, now=NOW)
    first = last_code("138****5678")
    service.request_code(uow=uow, phone=PHONE, ip=IP, now=NOW + dt.timedelta(minutes=2))
    second = last_code("138****5678")
    if first != second:
        with pytest.raises(Unauthorized):
            service.verify_code(uow=uow, phone=PHONE, code=first, ip=IP,
                                now=NOW + dt.timedelta(minutes=3))
    _token, session = service.verify_code(uow=uow, phone=PHONE, code=second, ip=IP,
                                          now=NOW + dt.timedelta(minutes=3))
    assert session.customer_id == shop["me"]["customer_id"]


def test_five_wrong_guesses_use_up_a_code_even_for_the_right_one_after(uow, shop):
    service.request_code(uow=uow, phone=PHONE, ip=IP, now=NOW)
    code = last_code("138****5678")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    lefts = []
    for i in range(4):
        with pytest.raises(Unauthorized) as err:
            service.verify_code(uow=uow, phone=PHONE, code=wrong, ip=IP,
                                now=NOW + dt.timedelta(seconds=i + 1))
        lefts.append(err.value.params["left"])
    assert lefts == [4, 3, 2, 1]
    with pytest.raises(TooManyAttempts) as fifth:
        service.verify_code(uow=uow, phone=PHONE, code=wrong, ip=IP,
                            now=NOW + dt.timedelta(seconds=10))
    assert fifth.value.message == "selfservice.code_attempts_used"
    with pytest.raises(TooManyAttempts):
        service.verify_code(uow=uow, phone=PHONE, code=code, ip=IP,
                            now=NOW + dt.timedelta(seconds=20))
    assert uow.c.execute(select(func.count()).select_from(selfservice_sessions)).scalar() == 0


def test_codes_to_one_phone_are_rate_limited_whether_or_not_it_is_known(uow, shop):
    for phone in (PHONE, STRANGER):
        service.request_code(uow=uow, phone=phone, ip=None, now=NOW)
        with pytest.raises(TooManyAttempts) as wait:
            service.request_code(uow=uow, phone=phone, ip=None,
                                 now=NOW + dt.timedelta(seconds=30))
        assert (wait.value.message, wait.value.params) == ("selfservice.code_resend_wait",
                                                           {"minutes": 1})
        for i in range(1, 5):
            service.request_code(uow=uow, phone=phone, ip=None,
                                 now=NOW + dt.timedelta(minutes=2 * i))
        with pytest.raises(TooManyAttempts) as hourly:
            service.request_code(uow=uow, phone=phone, ip=None,
                                 now=NOW + dt.timedelta(minutes=12))
        assert hourly.value.message == "selfservice.too_many_codes"
        assert hourly.value.params == {"minutes": 48}
        service.request_code(uow=uow, phone=phone, ip=None, now=NOW + dt.timedelta(minutes=61))
    refused = [r for r in audit_actions(uow, "selfservice.code_refused")]
    assert len(refused) == 4 and {o for _, _, o in refused} == {"denied"}


def test_one_client_address_cannot_send_codes_to_many_phones(uow, shop):
    limits = LoginLimits(codes_per_address_per_hour=3)
    for i in range(3):
        service.request_code(uow=uow, phone=f"1370000{i:04d}", ip=IP, now=NOW, limits=limits)
    with pytest.raises(TooManyAttempts):
        service.request_code(uow=uow, phone="13700009999", ip=IP, now=NOW, limits=limits)
    service.request_code(uow=uow, phone="13700009999", ip="198.51.100.1", now=NOW,
                         limits=limits)
    assert len(sent_codes()) == 4


def test_an_address_spraying_guesses_over_many_phones_is_stopped(uow, shop):
    limits = LoginLimits(failures_per_address_per_hour=3)
    service.request_code(uow=uow, phone=PHONE, ip="198.51.100.9", now=NOW)
    code = last_code("138****5678")
    for i in range(3):
        with pytest.raises(Unauthorized):
            service.verify_code(uow=uow, phone=f"1370000{i:04d}", code="000000", ip=IP,
                                now=NOW, limits=limits)
    with pytest.raises(TooManyAttempts) as err:
        service.verify_code(uow=uow, phone=PHONE, code=code, ip=IP, now=NOW, limits=limits)
    assert err.value.message == "selfservice.too_many_failures"
    # The owner of the phone, elsewhere, still signs in.
    service.verify_code(uow=uow, phone=PHONE, code=code, ip="198.51.100.9", now=NOW,
                        limits=limits)


def test_bad_phone_or_code_input_names_the_field(uow, shop):
    with pytest.raises(ValidationFailed) as phone:
        service.request_code(uow=uow, phone="12345", ip=IP, now=NOW)
    assert phone.value.fields[0].field == "phone"
    with pytest.raises(ValidationFailed) as code:
        service.verify_code(uow=uow, phone=PHONE, code="12ab56", ip=IP, now=NOW)
    assert (code.value.fields[0].field, code.value.fields[0].reason) == (
        "code", "selfservice.code_format")


def test_two_concurrent_verifications_of_one_code_open_one_session(engine, shop):
    with UnitOfWork(engine) as uow:
        service.request_code(uow=uow, phone=PHONE, ip=IP, now=NOW)
    code = last_code("138****5678")
    results: list[str] = []
    start = threading.Barrier(4)

    def attempt() -> None:
        start.wait()
        try:
            with UnitOfWork(engine) as uow:
                service.verify_code(uow=uow, phone=PHONE, code=code, ip=IP, now=NOW)
            results.append("ok")
        except (Unauthorized, TooManyAttempts):
            results.append("refused")
        except Exception as exc:  # anything else fails the test below, with its cause
            results.append(repr(exc))

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok", "refused", "refused", "refused"]
    with UnitOfWork(engine) as uow:
        assert uow.c.execute(select(func.count()).select_from(selfservice_sessions)).scalar() == 1


def test_logout_ends_the_session(uow, shop):
    sent = service.request_code(uow=uow, phone=PHONE, ip=IP, now=NOW)
    token, session = service.verify_code(uow=uow, phone=PHONE,
                                         code=last_code(sent.masked_phone), ip=IP,
                                         now=NOW)
    service.logout(uow=uow, session=session, now=NOW + dt.timedelta(minutes=1))
    assert service.session_for_token(uow.c, token, IP, now=NOW + dt.timedelta(minutes=2)) is None
    assert audit_actions(uow, "selfservice.logout") == [
        ("selfservice.logout", "member:138****5678", "ok")]


# --- what the member sees -----------------------------------------------------------------------

def test_the_member_sees_points_with_their_lots_expiry_dates_and_pending_points(uow, shop):
    loyalty.update_program(uow=uow, actor=SYSTEM, code="BB",
                           changes=ProgramSettings(pending_days=7), now=NOW)
    buy(uow, "ME-NEW", at=NOW - dt.timedelta(hours=1), now=NOW)
    session = sign_in(uow)
    view = service.overview(uow.c, session=session, now=NOW)
    assert view["member"]["id"] == shop["me"]["id"] and view["program"]["code"] == "BB"
    balance = view["balance"]
    assert balance["spendable"] == 12 * 71 and balance["pending"] == 71
    states = [lot["state"] for lot in balance["lots"]]
    assert states.count("available") == 12 and states.count("pending") == 1
    # Rolling 12 months after each purchase, in the program's time zone.
    first = min(balance["lots"], key=lambda lot: lot["earned_at"])
    assert first["expires_on"] == "2027-02-19"
    assert balance["expiring"][0] == {"on": "2027-02-19", "points": 71}
    assert str(balance["spendable_value"]) == "8.52"  # 852 points at 100 per yuan


def test_the_member_sees_its_tier_and_progress_to_the_next_by_the_programs_rules(uow, shop):
    session = sign_in(uow)
    view = service.overview(uow.c, session=session, now=NOW)
    # Growth value 71 per order (71.00 paid), 12 orders: 852 of GOLD's 1000.
    assert view["qualification"]["growth_value"] == 852
    assert view["member"]["tier"]["code"] == "SILVER" and view["next_tier"]["code"] == "GOLD"
    progress = view["progress"]
    assert (progress.percent, progress.remaining, progress.basis) == (85, 148, "growth")
    buy(uow, "ME-BIG", at=NOW - dt.timedelta(minutes=5), now=NOW, lines=[
        {"sku": "BEANS", "category": "coffee", "quantity": "3", "unit_price": "100.00"}])
    view = service.overview(uow.c, session=session, now=NOW)
    assert view["member"]["tier"]["code"] == "GOLD" and view["next_tier"]["code"] == "PLATINUM"
    assert view["progress"].remaining == 5000 - 1152


def test_purchases_are_the_members_own_in_the_programs_brand_paginated(uow, shop):
    session = sign_in(uow)
    page1 = service.purchases(uow.c, session=session, page=1)
    page2 = service.purchases(uow.c, session=session, page=2)
    assert len(page1["items"]) == 10 and page1["has_next"]
    assert len(page2["items"]) == 2 and not page2["has_next"]
    times = [o["purchased_at"] for o in page1["items"] + page2["items"]]
    assert times == sorted(times, reverse=True)
    assert {o["store"] for o in page1["items"] + page2["items"]} == {"上海人民广场店"}
    assert page1["items"][0]["points"] == 71
    assert [line["name"] for line in page1["items"][0]["lines"]] == ["LATTE", "CROISSANT"]
    tea = service.purchases(uow.c, session=session, member_id=_membership(uow, session, "TH"))
    assert [o["store"] for o in tea["items"]] == ["茶馆一店"]


def _membership(uow: UnitOfWork, session: service.MemberSession, program: str) -> int:
    mine = {m["program"]: m["id"] for m in service.memberships(uow.c, session)}
    if program not in mine:
        member = enrol(uow, program=program)
        return int(member["id"])
    return mine[program]


def test_a_refund_shows_on_the_purchase_with_the_points_taken_back(uow, shop):
    give_back(uow, "R-1", "ME-0", at=T0, full=True)
    session = sign_in(uow)
    newest = service.purchases(uow.c, session=session)["items"][0]
    assert newest["refunded"] > 0 and newest["points_clawed"] == newest["points"] == 71


def test_a_member_reaches_no_other_members_data_by_its_id(uow, shop):
    session = sign_in(uow)
    other = shop["other"]["id"]
    for attempt in (lambda: service.overview(uow.c, session=session, member_id=other, now=NOW),
                    lambda: service.purchases(uow.c, session=session, member_id=other),
                    lambda: service.member_card(uow=uow, session=session, member_id=other,
                                                now=NOW),
                    lambda: service.change_consent(uow=uow, session=session, member_id=other,
                                                   kind="sms", granted=False, now=NOW),
                    lambda: service.overview(uow.c, session=session, member_id=10**12,
                                             now=NOW)):
        with pytest.raises(NotFound) as err:
            attempt()
        assert err.value.message == "member_not_found"
    other_consents = uow.c.execute(select(func.count()).where(
        loyalty_consents.c.member_id == other)).scalar()
    assert other_consents == 5  # untouched: privacy + four channels at enrolment


def test_a_stranger_signed_in_by_code_has_no_memberships_and_sees_nobodys_data(uow, shop):
    session = sign_in(uow, STRANGER)
    assert session.customer_id is None and service.memberships(uow.c, session) == []
    with pytest.raises(NotFound):
        service.overview(uow.c, session=session, member_id=shop["me"]["id"], now=NOW)
    with pytest.raises(NotFound):
        service.purchases(uow.c, session=session)


# --- the QR member card -------------------------------------------------------------------------

def test_the_member_card_is_a_short_lived_signed_payload_the_till_can_check(uow, shop):
    session = sign_in(uow)
    card = service.member_card(uow=uow, session=session, now=NOW)
    assert card["member_code"] == shop["me"]["member_code"]
    assert card["payload"].startswith(f"PM1.{shop['me']['member_code']}.")
    assert card["svg"].startswith("<svg") and "member-qr" in card["svg"]
    assert card["expires_at"] == (NOW + dt.timedelta(minutes=5)).replace(microsecond=0)
    checked = service.check_member_card(uow.c, card["payload"], now=NOW + dt.timedelta(minutes=4))
    assert checked["member_id"] == shop["me"]["id"] and checked["program"] == "BB"
    with pytest.raises(ValidationFailed) as late:
        service.check_member_card(uow.c, card["payload"], now=NOW + dt.timedelta(minutes=6))
    assert (late.value.fields[0].field, late.value.fields[0].reason) == (
        "member_card", "member_card_expired")
    forged = card["payload"].replace(shop["me"]["member_code"], shop["other"]["member_code"])
    with pytest.raises(ValidationFailed) as bad:
        service.check_member_card(uow.c, forged, now=NOW)
    assert bad.value.fields[0].reason == "member_card_bad_signature"
    # One signing key, created once and audited.
    service.member_card(uow=uow, session=session, now=NOW)
    assert uow.c.execute(select(func.count()).select_from(selfservice_card_keys)).scalar() == 1
    assert len(audit_actions(uow, "selfservice.card_key_created")) == 1


# --- enrolment and consents ---------------------------------------------------------------------

def test_a_new_phone_verified_by_code_enrols_with_consent_on_the_page(uow, shop):
    session = sign_in(uow, STRANGER)
    assert [p["code"] for p in service.enrolable_programs(uow.c, session)] == ["BB", "TH"]
    with pytest.raises(ValidationFailed) as no_consent:
        service.enrol(uow=uow, session=session, program="BB", privacy_version="2026-01",
                      privacy_accepted=False, marketing={})
    assert no_consent.value.fields[0].field == "privacy"
    with pytest.raises(ValidationFailed) as old:
        service.enrol(uow=uow, session=session, program="BB", privacy_version="2025-01",
                      privacy_accepted=True, marketing={})
    assert old.value.fields[0].field == "privacy.version"
    member = service.enrol(uow=uow, session=session, program="BB", privacy_version="2026-01",
                           privacy_accepted=True, marketing={"sms": True, "email": False},
                           name="李雷", now=NOW)
    assert member["consents"]["privacy"]["version"] == "2026-01"
    assert member["consents"]["privacy"]["source"] == "self_service"
    assert member["consents"]["sms"]["granted"] and not member["consents"]["wechat"]["granted"]
    # The session's next request finds the new customer, and its membership, by the phone.
    token_row = uow.c.execute(select(selfservice_sessions.c.id)).scalar_one()
    assert token_row == session.id
    refreshed = service.MemberSession(session.id, session.phone,
                                      service.customer_for_phone(uow.c, session.phone),
                                      session.expires_at, session.ip)
    assert refreshed.customer_id == member["customer_id"]
    assert [m["program"] for m in service.memberships(uow.c, refreshed)] == ["BB"]
    assert ("loyalty.member_enrolled", "member:137****1111", "ok") in audit_actions(
        uow, "loyalty.member_enrolled")


def test_the_member_withdraws_and_grants_consents_with_the_history_kept(uow, shop):
    session = sign_in(uow)
    mid = shop["me"]["id"]
    out = service.change_consent(uow=uow, session=session, member_id=mid, kind="sms",
                                 granted=True, now=NOW)
    assert out["sms"]["granted"]
    out = service.change_consent(uow=uow, session=session, member_id=mid, kind="sms",
                                 granted=False, now=NOW + dt.timedelta(minutes=1))
    assert not out["sms"]["granted"]
    out = service.change_consent(uow=uow, session=session, member_id=mid, kind="privacy",
                                 granted=False, now=NOW + dt.timedelta(minutes=2))
    assert not out["privacy"]["granted"] and out["privacy"]["version"] == "2026-01"
    history = [(r.kind, r.granted, r.source) for r in uow.c.execute(
        select(loyalty_consents).where(loyalty_consents.c.member_id == mid,
                                       loyalty_consents.c.kind.in_(["sms", "privacy"]))
        .order_by(loyalty_consents.c.id))]
    assert history[-3:] == [("sms", True, "self_service"), ("sms", False, "self_service"),
                            ("privacy", False, "self_service")]
    actions = [a for a, who, _ in audit_actions(uow, "loyalty.consent_")
               if who == "member:138****5678"]
    assert actions == ["loyalty.consent_granted", "loyalty.consent_withdrawn",
                       "loyalty.consent_withdrawn"]
    with pytest.raises(ValidationFailed):
        service.change_consent(uow=uow, session=session, member_id=mid, kind="fax",
                               granted=False, now=NOW)


def test_a_member_actor_cannot_do_what_staff_do(uow, shop):
    actor = sign_in(uow).actor()
    assert actor.can("loyalty.enrol") and actor.can("loyalty.lookup")
    assert not any(actor.can(p) for p in ("loyalty.read", "loyalty.redeem", "loyalty.adjust",
                                          "customers.read", "orders.read", "export"))
    with pytest.raises(Forbidden):
        loyalty.adjust(uow=uow, actor=actor, member_id=shop["me"]["id"],
                       body=AdjustIn(idempotency_key="gift-1", points=500, reason="gift"))
    with pytest.raises(Forbidden):
        loyalty_queries.ledger(uow.c, actor=actor, member_id=shop["other"]["id"])


# --- coupons ------------------------------------------------------------------------------------

def test_the_member_sees_its_own_coupons_usable_first_with_what_each_gives(uow, shop):
    from tests.coupon_factories import give, make_template, redeem

    me, other = shop["me"]["id"], shop["other"]["id"]
    ten = make_template(uow, "TEN", now=NOW)
    pct = make_template(uow, "PCT", now=NOW, kind="percent", percent_off="15", cap="20",
                        amount_off=None)
    mj = make_template(uow, "MJ", now=NOW, kind="threshold", threshold="100",
                       reduction="20", repeat=True, amount_off=None, min_spend="50")
    mine_ten = give(uow, ten["id"], [me], "i-1", now=NOW)["coupons"][0]
    give(uow, pct["id"], [me], "i-2", now=NOW)
    give(uow, mj["id"], [me], "i-3", now=NOW)
    theirs = give(uow, ten["id"], [other], "i-4", now=NOW)["coupons"][0]
    used = give(uow, ten["id"], [me], "i-5", now=NOW)["coupons"][0]
    redeem(uow, me, [used["code"]], "r-1", now=NOW + dt.timedelta(minutes=1))
    session = sign_in(uow)
    shown = service.member_coupons(uow.c, session=session, now=NOW + dt.timedelta(minutes=2))
    assert [c["state"] for c in shown] == ["usable", "usable", "usable", "redeemed"]
    assert theirs["display_code"] not in {c["code"] for c in shown}
    assert mine_ten["display_code"] in {c["code"] for c in shown}
    offers = {c["name"]: (c["offer_key"], c["offer"], c["min_spend"]) for c in shown
              if c["state"] == "usable"}
    assert offers["coupon TEN"] == ("selfservice.coupon.amount", {"amount": Decimal("10.00")},
                                    Decimal("0.00"))
    assert offers["coupon PCT"][0] == "selfservice.coupon.percent_capped"
    assert offers["coupon PCT"][1] == {"percent": Decimal("15"), "zhe": Decimal("8.5"),
                                       "cap": Decimal("20.00")}
    assert offers["coupon MJ"] == ("selfservice.coupon.threshold_repeat",
                                   {"threshold": Decimal("100.00"),
                                    "reduction": Decimal("20.00")}, Decimal("50.00"))
    # 30 days later the unused ones have expired; 90 days after that they are no longer shown.
    later = service.member_coupons(uow.c, session=session, now=NOW + dt.timedelta(days=31))
    assert {c["state"] for c in later} == {"expired", "redeemed"}
    assert service.member_coupons(uow.c, session=session, now=NOW + dt.timedelta(days=121)) == []
    with pytest.raises(NotFound):
        service.member_coupons(uow.c, session=session, member_id=other, now=NOW)


def test_a_till_finds_the_member_by_the_scanned_card_until_the_card_expires(uow, shop):
    from patron.checkout import service as checkout
    from patron.checkout.schemas import QuoteIn
    from tests.checkout_factories import LINES

    card = service.member_card(uow=uow, session=sign_in(uow), now=NOW)

    def scan(payload: str, at: dt.datetime) -> dict[str, Any]:
        body = QuoteIn.model_validate({"store": "SH01", "lines": LINES,
                                       "member": {"qr": payload}})
        out = checkout.quote(uow.c, actor=SYSTEM, body=body, now=at)
        uow.rollback()
        return out

    found = scan(card["payload"], NOW + dt.timedelta(minutes=4))
    assert found["member"]["id"] == shop["me"]["id"]
    for payload, at, reason in (
            (card["payload"], NOW + dt.timedelta(minutes=6), "member_card_expired"),
            (card["payload"].replace(shop["me"]["member_code"], shop["other"]["member_code"]),
             NOW, "member_card_bad_signature"),
            (shop["me"]["member_code"], NOW, "member_card_malformed")):
        with pytest.raises(ValidationFailed) as refused:
            scan(payload, at)
        assert (refused.value.fields[0].field, refused.value.fields[0].reason) == (
            "member.qr", reason)


# --- stored value -------------------------------------------------------------------------------

def test_the_member_sees_its_stored_value_and_nobody_elses(uow, shop):
    from patron.storedvalue import service as storedvalue
    from patron.storedvalue.schemas import BonusRulesIn, SettingsIn
    from tests.storedvalue_factories import TIERS, topup

    storedvalue.configure(uow=uow, actor=SYSTEM, code="BB",
                          body=SettingsIn(spend_order="proportional", hold_minutes=15), now=NOW)
    storedvalue.add_bonus_rules(uow=uow, actor=SYSTEM, code="BB",
                                body=BonusRulesIn.model_validate({"tiers": TIERS}), now=NOW)
    session = sign_in(uow)
    empty = service.stored_value(uow.c, session=session, now=NOW)
    assert empty["spendable"] == 0 and empty["lots"] == []
    topup(uow, shop["me"]["id"], "500", "t-1", at=NOW + dt.timedelta(minutes=1))
    topup(uow, shop["other"]["id"], "1000", "t-2", at=NOW + dt.timedelta(minutes=1))
    mine = service.stored_value(uow.c, session=session, now=NOW + dt.timedelta(minutes=2))
    assert (mine["principal"], mine["bonus"], mine["spendable"]) == (
        Decimal("500.00"), Decimal("50.00"), Decimal("550.00"))
    assert len(mine["lots"]) == 1 and mine["member_id"] == shop["me"]["id"]
    with pytest.raises(NotFound):
        service.stored_value(uow.c, session=session, member_id=shop["other"]["id"], now=NOW)
