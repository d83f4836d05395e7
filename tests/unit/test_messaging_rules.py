"""Message rules without a database: templates checked when saved, rendering, backoff, when a
resend after a crash is safe, unsubscribe tokens and STOP replies."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from patron.messaging import model
from patron.messaging.builtin import BUILTIN
from patron.messaging.model import Template


def tpl(body_zh: str, variables: tuple[str, ...] = ("name",), **extra) -> Template:
    return Template(code="welcome", variables=variables, body={"zh": body_zh, **extra.pop(
        "body", {})}, **extra)


def reasons(t: Template) -> list[tuple[str, str]]:
    return [(e.field, e.reason) for e in model.template_errors(t)]


def test_a_template_using_a_variable_it_does_not_declare_is_refused_when_saved():
    t = tpl("你好 {{ name }}，您的积分 {{ points }}",
            subject={"en": "Hi {{ nickname }}"}, wechat_fields={"thing1": "{{ tier }}"})
    errors = model.template_errors(t)
    assert [(e.field, e.reason, e.params["value"]) for e in errors] == [
        ("body_zh", "message_variable_unknown", "points"),
        ("subject_en", "message_variable_unknown", "nickname"),
        ("wechat_fields.thing1", "message_variable_unknown", "tier"),
    ]


def test_declared_and_builtin_variables_are_accepted_and_loops_bind_their_own_names():
    t = tpl("{{ name }} {% for x in items %}{{ x }}{% endfor %} {{ unsubscribe_url }}",
            variables=("name", "items"))
    assert model.template_errors(t) == []


def test_a_template_that_does_not_parse_is_refused_with_its_line():
    (err,) = model.template_errors(tpl("你好\n{{ name "))
    assert (err.field, err.reason, err.params["line"]) == ("body_zh", "message_template_syntax", 2)


def test_a_template_needs_chinese_text_a_valid_code_and_plain_variable_names():
    t = Template(code="Bad Code", variables=("ok", "not-ok", "unsubscribe_url"),
                 body={"zh": "", "en": "hi"})
    assert sorted(reasons(t)) == [("body_zh", "message_body_required"),
                                  ("code", "message_template_code"),
                                  ("variables.1", "message_variable_name"),
                                  ("variables.2", "message_variable_name")]


def test_the_builtin_templates_are_valid_in_both_languages():
    for t in BUILTIN.values():
        assert model.template_errors(t) == [], t.code
        assert t.body.get("zh") and t.body.get("en")


def test_the_sandbox_refuses_reaching_into_python_objects():
    t = tpl("{{ name.__class__.__mro__ }}")
    with pytest.raises(model.RenderError):
        model.render(t, channel="sms", lang="zh", purpose="otp", variables={"name": "x"},
                     unsubscribe_url=None)


def test_rendering_picks_the_language_and_marketing_ends_with_how_to_unsubscribe():
    t = Template(code="promo", variables=("name",),
                 body={"zh": "你好 {{ name }}", "en": "Hello {{ name }}"},
                 subject={"zh": "优惠"})
    sms = model.render(t, channel="sms", lang="en", purpose="marketing",
                       variables={"name": "Li"}, unsubscribe_url="https://p/u/1.x")
    assert sms.body == "Hello Li Reply STOP to unsubscribe" and sms.subject == "优惠"
    email = model.render(t, channel="email", lang="zh", purpose="marketing",
                         variables={"name": "李"}, unsubscribe_url="https://p/u/1.x")
    assert email.body == "你好 李\n退订：https://p/u/1.x"
    service = model.render(t, channel="sms", lang="zh", purpose="transactional",
                           variables={"name": "李"}, unsubscribe_url=None)
    assert service.body == "你好 李"
    # No English text: Chinese is used.
    zh_only = Template(code="z", variables=(), body={"zh": "只有中文"})
    assert model.render(zh_only, channel="sms", lang="en", purpose="otp", variables={},
                        unsubscribe_url=None).body == "只有中文"


def test_variables_passed_must_be_exactly_the_declared_plain_values():
    t = tpl("{{ name }}", variables=("name", "points"))
    errs = model.variable_errors(t, {"name": {"nested": 1}, "extra": 1})
    assert sorted((e.field, e.reason) for e in errs) == [
        ("variables.extra", "message_variable_unknown"),
        ("variables.name", "message_variable_type"),
        ("variables.points", "message_variable_missing")]


def test_backoff_grows_with_jitter_and_ends_after_the_last_attempt():
    now = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    rng = random.Random(1)
    waits = [model.after_failure(n, now, rng)[1] - now for n in range(1, model.MAX_ATTEMPTS)]
    bases = [30, 120, 600, 3600, 21600]
    assert all(0.8 * b <= w.total_seconds() <= 1.2 * b for w, b in zip(waits, bases, strict=True))
    assert model.after_failure(model.MAX_ATTEMPTS, now) == ("failed", now)


def test_a_resend_after_a_crash_is_safe_only_inside_the_providers_idempotency_window():
    now = dt.datetime(2026, 11, 25, 1, 0, tzinfo=dt.UTC)
    started = now - dt.timedelta(minutes=6)
    assert model.resend_is_safe(started_at=started, now=now,
                                idempotency_window=dt.timedelta(minutes=10))
    assert not model.resend_is_safe(started_at=started, now=now,
                                    idempotency_window=dt.timedelta(minutes=5))
    assert not model.resend_is_safe(started_at=started, now=now, idempotency_window=None)


def test_unsubscribe_tokens_name_their_message_and_cannot_be_forged():
    token = model.unsubscribe_token("k1", 42)
    assert model.read_unsubscribe_token("k1", token) == 42
    assert model.read_unsubscribe_token("k2", token) is None
    forged = "43." + token.split(".", 1)[1]
    assert model.read_unsubscribe_token("k1", forged) is None
    assert model.read_unsubscribe_token("k1", "x.y") is None


def test_stop_replies_in_chinese_and_english_are_recognised():
    for text in ("STOP", " td ", "退订", "T", "Unsubscribe!"):
        assert model.is_stop_reply(text), text
    for text in ("stop sending me the wrong size", "好的", ""):
        assert not model.is_stop_reply(text), text


def test_one_time_codes_and_addresses_are_masked_in_lists():
    assert model.masked_variables("otp", {"code": "123456"}) == {"code": "***"}
    assert model.masked_variables("marketing", {"points": 1}) == {"points": 1}
    assert model.mask_address("sms", "+8613812345678") == "+86138****5678"
    assert model.mask_address("email", "li.wei@example.cn") == "l***@example.cn"


def test_gateway_signatures_are_checked_in_constant_time_within_five_minutes():
    now = dt.datetime(2026, 11, 25, 1, 0, tzinfo=dt.UTC)
    ts = str(int(now.timestamp()))
    sig = model.gateway_signature("s3cret", ts, b"{}")
    assert model.signature_ok("s3cret", ts, b"{}", sig, now=now)
    assert not model.signature_ok("s3cret", ts, b"{ }", sig, now=now)
    assert not model.signature_ok("other", ts, b"{}", sig, now=now)
    assert not model.signature_ok("s3cret", ts, b"{}", sig, now=now + dt.timedelta(minutes=6))
    assert not model.signature_ok("", ts, b"{}", sig, now=now)


def test_the_language_used_is_the_wanted_one_else_the_default_else_what_the_template_has():
    both = Template(code="b", variables=(), body={"zh": "中文", "en": "English"},
                    subject={"zh": "主题"})
    zh_only = Template(code="z", variables=(), body={"zh": "只有中文"})
    en_only = Template(code="e", variables=(), body={"en": "English only"})
    assert model.language_for(both, "en", "zh") == "en"
    assert model.language_for(zh_only, "en", "zh") == "zh"
    assert model.language_for(en_only, "zh", "en") == "en"
    assert model.language_for(en_only, "zh", "zh") == "en"  # the default lacks it too
    out = model.render(zh_only, channel="sms", lang="en", fallback="zh", purpose="otp",
                       variables={}, unsubscribe_url=None)
    assert (out.lang, out.body) == ("zh", "只有中文")
    # a subject missing in the language written falls back with the body's rule
    assert model.render(both, channel="email", lang="en", fallback="zh", purpose="otp",
                        variables={}, unsubscribe_url=None).subject == "主题"
