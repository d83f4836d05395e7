"""The fast check of plain order payloads against Pydantic: whatever it accepts, Pydantic
accepts with the same values, and recording normalises it to the same order; whatever it
leaves alone goes to Pydantic, which reports the reasons as before. The one-pass check and
normalisation gives exactly what the two steps give, or nothing."""

import datetime as dt
from decimal import Decimal

import annotated_types
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from patron.orders import fast_validation as fv
from patron.orders.fast_validation import normalized_plain_order, plain_order
from patron.orders.model import normalize_order
from patron.orders.schemas import CustomerHint, OrderIn, OrderLineIn, PaymentIn

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)

numbers = st.one_of(
    st.sampled_from(["0", "1", "2", "0.35", "28.00", "28.5", "16.50", "1.5", "0.01", "0.001",
                     "999999999.999", "999999999999.99", "1000000000", "1000000000000",
                     "0.0", "0.00", "00.5", "01", "1.", ".5", "1.2345", "1.234", "-1", "+1",
                     " 1", "1 ", "1e3", "1E-2", "NaN", "Infinity", "１", "1_000", "",
                     "12345678901234", "1234567890123.45", "0.000"]),
    st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False).map(str),
    st.integers(min_value=-5, max_value=10**13),
    st.floats(min_value=0, max_value=1000, allow_nan=False),
    st.booleans(), st.none())
texts = st.one_of(
    st.sampled_from(["LATTE", " LATTE ", "", " ", "咖啡", "x" * 64, "x" * 65, "y" * 200,
                     "y" * 201, "\tTAB\n", "a" * 120, "a" * 121, "\x1fX\x1f",
                     "\u3000X\u3000", "\x85X", "\u200bX"]),
    st.text(max_size=70), st.integers(), st.none())
times = st.one_of(
    st.sampled_from(["2026-03-02T10:30:00+08:00", "2026-03-02 10:30:00", "2026-03-02T10:30:00Z",
                     "2026-03-02T10:30:00.5+08:00", "2026-03-02T10:30:00.123456-05:30",
                     "2026-03-02T10:30:00.1234567+08:00", "2026-03-02", "2026-03-02T10:30",
                     "2026-03-02T10:30:00+0800", "2026-02-30T10:00:00", "2026-03-02T24:00:00",
                     "2026-03-02T10:30:60", "20260302T103000", "2026-03-02T10:30:00+24:00",
                     "2026-03-02T10:30:00+23:59", " 2026-03-02T10:30:00", "1999-12-31T23:59:59Z",
                     "0001-01-01T00:00:00"]),
    st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2030, 1, 1),
                 timezones=st.one_of(st.none(), st.just(dt.UTC),
                                     st.just(dt.timezone(dt.timedelta(hours=8))))),
    st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2030, 1, 1)
                 ).map(lambda d: d.isoformat()),
    st.dates().map(lambda d: d.isoformat()), st.integers(0, 2 * 10**9), st.none())
methods = st.one_of(st.sampled_from(["cash", "wechat_pay", "alipay", "bank_card", "points",
                                     "coupon", "stored_value", "other", "Cash", " cash",
                                     "visa"]), st.integers())


good_money = st.one_of(st.decimals(min_value=0, max_value=10**6, places=2).map(str),
                       st.integers(0, 10**6), st.sampled_from(["0", "28.00", "16.5", "0.01"]))
good_quantity = st.one_of(st.decimals(min_value=Decimal("0.001"), max_value=1000,
                                      places=3).map(str),
                          st.integers(1, 20), st.sampled_from(["1", "0.35", "2.000"]))
good_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1,
                    max_size=20).filter(lambda t: t.strip())


@st.composite
def near_valid(draw, good, bad):
    """A payload built from good values, with now and then one value swapped for a doubtful
    one (so that both paths, and the border between them, are exercised)."""
    out = {}
    for key, (required, strategy) in good.items():
        if required or draw(st.booleans()):
            out[key] = draw(strategy)
    if draw(st.integers(0, 3)) == 0:
        key = draw(st.sampled_from(sorted(bad)))
        value = draw(st.one_of(st.just(MISSING), bad[key]))
        if value is MISSING:
            out.pop(key, None)
        else:
            out[key] = value
    if draw(st.integers(0, 30)) == 0:
        out["extra"] = "x"
    return out


MISSING = object()
lines = near_valid(
    {"sku": (True, good_text), "name": (False, st.one_of(good_text, st.none())),
     "category": (False, st.one_of(good_text, st.none())), "quantity": (True, good_quantity),
     "unit_price": (True, good_money), "discount": (False, good_money),
     "amount": (False, st.one_of(good_money, st.none()))},
    {"sku": texts, "name": texts, "category": texts, "quantity": numbers,
     "unit_price": numbers, "discount": numbers, "amount": numbers})
payments = near_valid({"method": (True, methods.filter(lambda m: m in fv.METHODS)),
                       "amount": (True, good_money)},
                      {"method": methods, "amount": numbers})
customers = st.one_of(st.none(), near_valid(
    {"name": (False, good_text), "gender": (False, st.sampled_from(["F", "M", "U"])),
     "birthday": (False, st.dates())},
    {"name": texts, "gender": st.sampled_from(["F", "M", "U", "f", " F", "女", None, 1]),
     "birthday": st.one_of(st.dates(), st.datetimes(), st.just("1990-01-02"), st.none())}))
good_identifiers = st.dictionaries(
    st.sampled_from(["phone", "member_code", "wechat_openid", "email"]),
    st.sampled_from(["13812341234", " 13812341234 ", "M001", "a@b.cn", "oWX00012"]),
    max_size=3)
identifiers = st.one_of(
    st.dictionaries(st.sampled_from(["phone", "member_code", "wechat_openid", " phone", "email",
                                     "unknown_kind"]),
                    st.one_of(st.sampled_from(["13812341234", " 13812341234 ", "", "M001",
                                               "a@b.cn", "bad value"]), st.integers()),
                    max_size=3),
    st.none(), st.lists(st.text(), max_size=1))
good_times = st.one_of(
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2026, 5, 1),
                 timezones=st.one_of(st.none(), st.just(dt.UTC),
                                     st.just(dt.timezone(dt.timedelta(hours=8))))),
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2026, 5, 1),
                 timezones=st.one_of(st.none(), st.just(dt.timezone(dt.timedelta(hours=-3))))
                 ).map(lambda d: d.isoformat(sep=draw_sep(d))))
orders = near_valid({
    "external_id": (True, good_text), "channel": (True, st.sampled_from(["pos", "meituan"])),
    "store": (False, st.sampled_from(["SH01", " SH01 ", "NY01", "", None])),
    "purchased_at": (True, good_times), "identifiers": (False, good_identifiers),
    "customer": (False, customers), "lines": (False, st.lists(lines, max_size=3)),
    "payments": (False, st.lists(payments, max_size=2)), "discount": (False, good_money),
    "total": (False, st.one_of(good_money, st.none()))}, {
    "external_id": texts, "channel": texts, "store": texts, "purchased_at": times,
    "identifiers": identifiers, "customer": st.one_of(st.integers(), customers),
    "lines": st.one_of(st.lists(lines, max_size=3), st.none(), st.just("x")),
    "payments": st.one_of(st.lists(payments, max_size=2), st.none()),
    "discount": numbers, "total": numbers})


def draw_sep(d: dt.datetime) -> str:
    return "T" if d.microsecond % 2 else " "


def _same(a, b) -> bool:
    """Equal, and for decimals and datetimes equal in form too (repr, offset)."""
    if isinstance(a, Decimal) or isinstance(b, Decimal):
        return type(a) is type(b) and repr(a) == repr(b)
    if isinstance(a, dt.datetime) or isinstance(b, dt.datetime):
        return type(a) is type(b) and a == b and a.utcoffset() == b.utcoffset() and (
            a.tzinfo is None) == (b.tzinfo is None)
    return type(a) is type(b) and a == b


ZONES = {None: "Asia/Shanghai", "SH01": "Asia/Shanghai", "NY01": "America/New_York"}


def _check_one_pass(payload, fast):
    """normalized_plain_order equals normalize_order(plain_order(...)) whenever it gives an
    order, and gives one whenever the two steps do without errors."""
    for zones in (ZONES, {**ZONES, "SH01": "America/New_York"}):
        one = normalized_plain_order(payload, store_tz=zones.get, now=NOW)
        if fast is None:
            assert one is None, payload
            continue
        two, errors = normalize_order(fast, store_tz=zones.get(fast.store or None), now=NOW)
        if two is None:
            assert one is None and errors, payload
            continue
        assert one is not None, payload
        assert repr(one) == repr(two), payload
        assert one.content_hash == two.content_hash


def _check(payload):
    fast = plain_order(payload)
    _check_one_pass(payload, fast)
    try:
        slow = OrderIn.model_validate(payload)
    except ValidationError:
        assert fast is None, payload
        return
    if fast is None:
        return  # left to Pydantic, which accepts it: allowed
    for name in ("external_id", "channel", "store", "purchased_at", "identifiers", "discount",
                 "total"):
        assert _same(getattr(fast, name), getattr(slow, name)), (name, payload)
    assert fast.customer == (slow.customer.model_dump(exclude_none=True)
                             if slow.customer else None) or (not fast.customer
                                                             and not slow.customer), payload
    assert len(fast.lines) == len(slow.lines)
    for f, s in zip(fast.lines, slow.lines, strict=True):
        for name in ("sku", "name", "category", "quantity", "unit_price", "discount", "amount"):
            assert _same(getattr(f, name), getattr(s, name)), (name, payload)
    assert [(p.method, repr(p.amount)) for p in fast.payments] == [
        (p.method, repr(p.amount)) for p in slow.payments]
    for tz in ("Asia/Shanghai", "America/New_York"):
        nf, ef = normalize_order(fast, store_tz=tz, now=NOW)
        ns, es = normalize_order(slow, store_tz=tz, now=NOW)
        assert ef == es
        assert repr(nf) == repr(ns), payload
        if nf is not None:
            assert nf.content_hash == ns.content_hash


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=orders)
def test_what_the_fast_check_accepts_pydantic_accepts_with_the_same_values(payload):
    _check(payload)


def test_the_generator_and_file_import_shapes_take_the_fast_path():
    from benchmarks.data import OrderStream

    stream = OrderStream.for_orders(1000, ["S000", "S001"])
    bodies = [stream.order(n) for n in range(300)]
    assert all(plain_order(b) is not None for b in bodies)
    assert all(normalized_plain_order(b, store_tz=lambda _s: "Asia/Shanghai",
                                      now=dt.datetime.now(dt.UTC)) is not None for b in bodies)
    for b in bodies:
        _check(b)
    file_row = {"external_id": "F1", "channel": "pos", "store": "S000",
                "purchased_at": dt.datetime(2026, 3, 1, 10, 0),
                "identifiers": {"phone": "13812341234"},
                "customer": {"name": "王芳", "gender": "F", "birthday": dt.date(1990, 1, 2)},
                "lines": [{"sku": "LATTE", "quantity": "2", "unit_price": "28.00"}],
                "payments": [{"method": "cash", "amount": "56.00"}]}
    assert plain_order(file_row) is not None
    assert normalized_plain_order(file_row, store_tz=ZONES.get, now=NOW) is not None
    _check(file_row)


def test_bad_payloads_are_left_to_pydantic():
    good = {"external_id": "A1", "channel": "pos", "purchased_at": "2026-03-02T10:30:00+08:00",
            "lines": [{"sku": "X", "quantity": "1", "unit_price": "2.00"}]}
    assert plain_order(good) is not None
    for bad in ({**good, "surprise": 1}, {**good, "external_id": ""},
                {**good, "lines": [{"sku": "X", "quantity": "0", "unit_price": "2"}]},
                {**good, "lines": [{"sku": "X", "quantity": "1.2345", "unit_price": "2"}]},
                {**good, "lines": [{"sku": "X", "quantity": "1", "unit_price": "-2"}]},
                {**good, "purchased_at": "yesterday"}, {**good, "total": 1.5},
                {**good, "payments": [{"method": "visa", "amount": "2"}]},
                {k: v for k, v in good.items() if k != "channel"}, [good], "order"):
        assert plain_order(bad) is None, bad


def _limits(model, field):
    meta = model.model_fields[field].metadata
    return {type(m).__name__: m for m in meta}


def test_the_limits_are_the_schema_s():
    def max_len(model, field):
        return next(m.max_length for m in model.model_fields[field].metadata
                    if isinstance(m, annotated_types.MaxLen))

    assert max_len(OrderIn, "external_id") == fv.EXTERNAL_ID_MAX
    assert max_len(OrderIn, "channel") == fv.CHANNEL_MAX
    assert max_len(OrderIn, "store") == fv.STORE_MAX
    assert max_len(OrderIn, "lines") == fv.MAX_LINES
    assert max_len(OrderIn, "payments") == fv.MAX_PAYMENTS
    assert max_len(OrderLineIn, "sku") == fv.SKU_MAX
    assert max_len(OrderLineIn, "name") == fv.LINE_NAME_MAX
    assert max_len(OrderLineIn, "category") == fv.CATEGORY_MAX
    assert max_len(CustomerHint, "name") == fv.CUSTOMER_NAME_MAX
    assert set(OrderIn.model_fields) == fv.ORDER_KEYS
    assert set(OrderLineIn.model_fields) == fv.LINE_KEYS
    assert set(PaymentIn.model_fields) == fv.PAYMENT_KEYS
    assert set(CustomerHint.model_fields) == fv.CUSTOMER_KEYS
    # The decimal patterns stay inside max_digits / decimal_places of the schema.
    for model, field, digits, places in ((OrderLineIn, "quantity", 12, 3),
                                         (OrderLineIn, "unit_price", 14, 2),
                                         (OrderIn, "total", 14, 2), (PaymentIn, "amount", 14, 2)):
        meta = model.model_fields[field].metadata
        assert any(getattr(m, "max_digits", None) == digits for m in meta), (model, field)
        assert any(getattr(m, "decimal_places", None) == places for m in meta), (model, field)


def test_repeated_line_amounts_give_the_same_order_as_the_first_time():
    fv._amounts_cache.clear()
    body = {"external_id": "A1", "channel": "pos", "purchased_at": "2026-03-02T10:30:00+08:00",
            "lines": [{"sku": "X", "quantity": "1.5", "unit_price": "2.35", "discount": "0.50"},
                      {"sku": "Y", "quantity": "1", "unit_price": "2"}]}
    first = normalized_plain_order(body, store_tz=ZONES.get, now=NOW)
    assert len(fv._amounts_cache) == 2
    again = normalized_plain_order(body, store_tz=ZONES.get, now=NOW)  # from the cache
    assert first is not None and repr(again) == repr(first)
    _check(body)
    # The same numbers as other types are checked afresh, never answered from the texts' entry.
    for other in ({"sku": "Y", "quantity": 1, "unit_price": "2"},
                  {"sku": "Y", "quantity": 1.0, "unit_price": "2"},
                  {"sku": "Y", "quantity": True, "unit_price": "2"},
                  {"sku": "Y", "quantity": "1", "unit_price": "2", "discount": None}):
        _check({**body, "lines": [other]})
    # A refused line is not kept: it is refused again.
    bad = {**body, "lines": [{"sku": "X", "quantity": "1", "unit_price": "2", "discount": "3"}]}
    assert normalized_plain_order(bad, store_tz=ZONES.get, now=NOW) is None
    assert normalized_plain_order(bad, store_tz=ZONES.get, now=NOW) is None
    assert len(fv._amounts_cache) == 2


def test_repeated_line_texts_are_checked_like_the_first_time():
    fv._texts_cache.clear()
    line = {"sku": " X ", "name": "Latte ", "category": None, "quantity": "1", "unit_price": "2"}
    body = {"external_id": "A1", "channel": "pos", "purchased_at": "2026-03-02T10:30:00+08:00",
            "lines": [line, dict(line)]}
    first = normalized_plain_order(body, store_tz=ZONES.get, now=NOW)
    assert first is not None and first.lines[1].sku == "X" and first.lines[1].name == "Latte"
    assert len(fv._texts_cache) == 1
    _check(body)

    class Text(str):
        pass

    for other in ({**line, "sku": Text(" X ")}, {**line, "name": ["Latte "]},
                  {**line, "sku": ""}, {**line, "name": 5}):
        _check({**body, "lines": [other]})
        assert normalized_plain_order({**body, "lines": [other]}, store_tz=ZONES.get,
                                      now=NOW) is None
