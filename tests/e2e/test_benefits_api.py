"""Birthday, anniversary and referral over HTTP: the role table, a friend enrolling with an
invite code at the till, bad input with field and reason in Chinese or English, audit."""

from __future__ import annotations

from tests.e2e.conftest import login
from tests.e2e.test_loyalty_api import ENROL, PROGRAM

SETTINGS = {"birthday_mode": "points", "birthday_points": 200, "anniversary_points": 100,
            "referral_referrer_points": 300, "referral_referee_points": 100,
            "referral_min_spend": "50", "referral_days": 30}
FRIEND = {**ENROL, "phone": "13912345678"}


def start(client):
    login(client, "owner")
    assert client.post("/api/v1/loyalty/programs", json=PROGRAM).status_code == 201
    r = client.put("/api/v1/benefits/programs/BB/settings", json=SETTINGS)
    assert r.status_code == 200, r.text
    m = client.post("/api/v1/loyalty/programs/BB/members", json=ENROL)
    assert m.status_code == 201, m.text
    return m.json()


def test_roles_owners_set_benefits_tills_refer_analysts_read(client, users):
    referrer = start(client)
    for role, put, invite, read in (("owner", 200, 201, 200), ("analyst", 403, 403, 200),
                                    ("manager", 403, 200, 200), ("cashier", 403, 200, 403)):
        login(client, role)
        r = client.put("/api/v1/benefits/programs/BB/settings", json=SETTINGS)
        assert r.status_code == put, (role, r.text)
        r = client.post(f"/api/v1/benefits/members/{referrer['id']}/invite-code")
        assert r.status_code == invite, (role, r.text)
        r = client.get(f"/api/v1/benefits/members/{referrer['id']}")
        assert r.status_code == read, (role, r.text)


def test_a_friend_enrols_at_the_till_with_an_invite_code(client, users):
    referrer = start(client)
    code = client.post(f"/api/v1/benefits/members/{referrer['id']}/invite-code").json()["code"]
    login(client, "cashier")
    r = client.post("/api/v1/benefits/programs/BB/referred-enrolments",
                    json={**FRIEND, "invite_code": code})
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["member"]["phone"] == "139****5678"
    assert out["referral"]["status"] == "pending"
    assert out["referral"]["referrer_member_id"] == referrer["id"]
    again = client.post("/api/v1/benefits/programs/BB/referred-enrolments?lang=en",
                        json={**FRIEND, "invite_code": code})
    assert again.status_code == 409
    assert again.json()["error"]["message"] == (
        "Already a member: only new members can be referred.")
    login(client, "owner")
    mine = client.get(f"/api/v1/benefits/members/{referrer['id']}").json()
    assert mine["invite_code"] == code and len(mine["referrals"]) == 1
    theirs = client.get(f"/api/v1/benefits/members/{out['member']['id']}").json()
    assert theirs["referred_by"]["id"] == out["referral"]["id"]
    actions = [e["action"] for e in client.get("/api/v1/audit").json()["items"]]
    for action in ("benefits.settings_changed", "benefits.invite_created",
                   "benefits.referral_linked", "loyalty.member_enrolled"):
        assert action in actions, action


def test_bad_invite_codes_and_settings_name_the_field_in_the_callers_language(client, users):
    start(client)
    r = client.post("/api/v1/benefits/programs/BB/referred-enrolments",
                    json={**FRIEND, "invite_code": "ZZZZ2222"},
                    headers={"Accept-Language": "zh-CN"})
    assert r.status_code == 422
    (f,) = r.json()["error"]["fields"]
    assert (f["field"], f["reason"], f["message"]) == ("invite_code", "invite_code_unknown",
                                                       "没有会员使用此邀请码。")
    # Nothing was enrolled by the refused request.
    look = client.get("/api/v1/loyalty/programs/BB/lookup", params={"phone": FRIEND["phone"]})
    assert look.status_code == 404
    r = client.put("/api/v1/benefits/programs/BB/settings?lang=en",
                   json={**SETTINGS, "birthday_mode": "multiplier"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["reason"] == "birthday_multiplier_required"
    r = client.put("/api/v1/benefits/programs/BB/settings?lang=en",
                   json={**SETTINGS, "birthday_mode": "coupon"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["message"] == "A birthday coupon needs its template."
    r = client.put("/api/v1/benefits/programs/BB/settings?lang=en",
                   json={**SETTINGS, "birthday_mode": "coupon",
                         "birthday_coupon_template_id": 77})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "birthday_coupon_template_id"
    r = client.put("/api/v1/benefits/programs/BB/settings?lang=en",
                   json={**SETTINGS, "referral_days": 0})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "referral_days"
    assert client.get("/api/v1/benefits/programs/NOPE/settings").status_code == 404
    assert client.get("/api/v1/benefits/members/424242").status_code == 404
