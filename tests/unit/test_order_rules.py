import datetime as dt
from decimal import Decimal

from patron.orders.model import differences, keyed_digest, normalize_order
from patron.orders.schemas import OrderIn


def make(**kw):
    body = {"external_id": "1", "channel": "pos", "store": "S",
            "purchased_at": "2026-03-02T10:30:00", "lines": [
                {"sku": "A", "quantity": "3", "unit_price": "9.99", "discount": "0.97"}]}
    body.update(kw)
    return OrderIn.model_validate(body)


def test_amounts_are_exact_decimals_to_the_fen():
    o, errors = normalize_order(make())
    assert errors == []
    assert o.total == Decimal("29.00")
    assert o.gross == Decimal("29.97")


def test_naive_purchase_time_is_the_store_local_time():
    o, _ = normalize_order(make(), store_tz="Asia/Shanghai")
    assert o.purchased_at == dt.datetime(2026, 3, 2, 2, 30, tzinfo=dt.UTC)
    assert o.local_time.hour == 10
    o, _ = normalize_order(make(purchased_at="2026-03-02T10:30:00+00:00"))
    assert o.local_time.hour == 18


def test_total_that_does_not_add_up_is_refused_with_the_expected_value():
    _, errors = normalize_order(make(total="30.00"))
    assert [(e.field, e.reason, e.params) for e in errors] == [
        ("total", "total_mismatch", {"expected": "29.00"})]


def test_payments_must_add_up_to_the_total():
    _, errors = normalize_order(make(payments=[{"method": "wechat_pay", "amount": "20"}]))
    assert errors[0].reason == "payments_mismatch"


def test_order_without_lines_needs_a_total():
    _, errors = normalize_order(make(lines=[]))
    assert errors[0].field == "total"


def test_order_in_the_future_is_refused():
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat()
    _, errors = normalize_order(make(purchased_at=future))
    assert errors[0].reason == "in_future"


def test_a_time_at_the_edge_of_the_calendar_is_refused_not_a_crash():
    # Year 1 in Shanghai is before year 1 in UTC: converting it used to raise OverflowError.
    o, errors = normalize_order(make(purchased_at="0001-01-01T00:00:00"), store_tz="Asia/Shanghai")
    assert o is None
    assert [(e.field, e.reason) for e in errors] == [("purchased_at", "too_old")]
    o, errors = normalize_order(make(purchased_at="9999-12-31T23:59:59-05:00"))
    assert o is None
    assert [(e.field, e.reason) for e in errors] == [("purchased_at", "in_future")]


def test_same_content_has_same_hash_regardless_of_identifier_order():
    a, _ = normalize_order(make(identifiers={"phone": "13812341234", "wechat_openid": "o1"}))
    b, _ = normalize_order(make(identifiers={"wechat_openid": "o1", "phone": "138 1234 1234"}))
    assert a.content_hash == b.content_hash


def test_differences_name_the_fields():
    a, _ = normalize_order(make())
    b, _ = normalize_order(make(discount="1.00"))
    assert [d["field"] for d in differences(a.canonical(), b.canonical())] == ["discount",
                                                                               "total"]


def test_the_digest_of_an_order_does_not_change_between_versions():
    # Orders recorded earlier carry this digest: a retry is a duplicate only while the same
    # facts give the same digest (the key as the code of 2026-11-25 morning built it).
    body = {"external_id": "G1", "channel": "meituan", "store": "S",
            "purchased_at": "2026-03-02T10:30:00",
            "identifiers": {"phone": "13812341234", "platform_buyer_id": "mt9",
                            "member_code": "m1"},
            "lines": [{"sku": "A", "category": "coffee", "quantity": "0.35",
                       "unit_price": "12.80"},
                      {"sku": "B", "quantity": "3", "unit_price": "9.99", "discount": "0.97"}],
            "payments": [{"method": "wechat_pay", "amount": "20"},
                         {"method": "cash", "amount": "13.48"}],
            "discount": "0.00"}
    o, errors = normalize_order(OrderIn.model_validate(body), store_tz="Asia/Shanghai",
                                now=dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    assert errors == []
    key = ("G1", "meituan", "S", 1772418600,
           ("member_code:M1", "phone:+8613812341234", "platform_buyer_id:meituan:mt9"),
           (("A", "coffee", 350, 1280, 0, 448), ("B", None, 3000, 999, 97, 2900)),
           (("cash", 1348), ("wechat_pay", 2000)), 97, 3348)
    assert o.digest_key() == key
    assert o.content_hash == keyed_digest(repr(key))
