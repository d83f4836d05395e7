"""The verification snippet in docs/webhooks.md accepts what Patron signs, refuses the rest."""

import datetime as dt
import re
import time
from pathlib import Path

from patron.webhooks import model

DOC = Path(__file__).parents[2] / "docs" / "webhooks.md"


def receiver_snippet():
    [code] = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102 - our own documentation
    return scope["verify_patron_webhook"]


def signed_request(secret: str, sent: dt.datetime) -> tuple[dict[str, str], bytes]:
    body = model.body_bytes(delivery_id=3, event="order.recorded", created_at=sent,
                            payload={"order_id": 1, "total": "71.00"})
    ts = str(int(sent.timestamp()))
    return {"X-Patron-Timestamp": ts, "X-Patron-Signature": model.signature(secret, ts, body),
            "X-Patron-Delivery": "3", "X-Patron-Event": "order.recorded"}, body


def test_documented_check_accepts_a_request_patron_signed():
    verify = receiver_snippet()
    headers, body = signed_request("whsec_abc", dt.datetime.fromtimestamp(time.time(), dt.UTC))
    assert verify("whsec_abc", headers, body)


def test_documented_check_refuses_wrong_secret_changed_body_and_old_requests():
    verify = receiver_snippet()
    headers, body = signed_request("whsec_abc", dt.datetime.fromtimestamp(time.time(), dt.UTC))
    assert not verify("whsec_other", headers, body)
    assert not verify("whsec_abc", headers, body.replace(b"71.00", b"1.00"))
    assert not verify("whsec_abc", {}, body)
    old_headers, old_body = signed_request("whsec_abc", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert not verify("whsec_abc", old_headers, old_body)


def test_every_event_and_the_worker_command_are_documented():
    text = DOC.read_text(encoding="utf-8")
    for event in model.EVENTS:
        assert f"`{event}`" in text
    assert "patron webhooks deliver" in text
    assert f"after the {model.MAX_ATTEMPTS}th failed attempt" in text.lower().replace("\n", " ")
