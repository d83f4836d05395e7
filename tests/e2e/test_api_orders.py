from tests.factories import order


def test_post_order_is_idempotent(client, pos_key):
    h = {"Authorization": f"Bearer {pos_key}"}
    body = order("T-1", identifiers={"phone": "13800138000"})
    r1 = client.post("/api/v1/orders", json=body, headers=h)
    assert r1.status_code == 201, r1.text
    r2 = client.post("/api/v1/orders", json=body, headers=h)
    assert r2.status_code == 200
    assert r2.json()["order_id"] == r1.json()["order_id"]
    assert r2.json()["status"] == "duplicate"


def test_same_id_other_content_is_409_listing_differences(client, pos_key):
    h = {"Authorization": f"Bearer {pos_key}"}
    client.post("/api/v1/orders", json=order("T-1"), headers=h)
    r = client.post("/api/v1/orders", json=order("T-1", discount="1.00"), headers=h)
    assert r.status_code == 409
    fields = [d["field"] for d in r.json()["error"]["differences"]]
    assert "discount" in fields and "total" in fields


def test_bad_order_gets_field_and_reason_in_language(client, pos_key):
    h = {"Authorization": f"Bearer {pos_key}", "Accept-Language": "en"}
    body = order("T-2", identifiers={"phone": "12345"})
    r = client.post("/api/v1/orders", json=body, headers=h)
    assert r.status_code == 422
    err = r.json()["error"]["fields"][0]
    assert err["field"] == "identifiers.phone"
    assert err["message"] == "Not a valid phone number."
    r = client.post("/api/v1/orders", json={"external_id": 5}, headers={**h,
                                                                       "Accept-Language": "zh"})
    assert r.status_code == 422
    assert any(f["field"] == "channel" and f["message"] == "此字段必填。"
               for f in r.json()["error"]["fields"])


def test_key_scoped_to_store_cannot_write_other_store(client, pos_key):
    h = {"Authorization": f"Bearer {pos_key}"}
    r = client.post("/api/v1/orders", json=order("T-3", store="BJ01"), headers=h)
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["reason"] == "store_out_of_scope"


def test_batch_reports_each_order(client, pos_key):
    h = {"Authorization": f"Bearer {pos_key}"}
    batch = {"orders": [order("B-1"), order("B-1"), {"external_id": "B-2"},
                        order("B-3", lines=[], total="12.00")]}
    r = client.post("/api/v1/orders/batch", json=batch, headers=h)
    assert r.status_code == 200, r.text
    assert [x["status"] for x in r.json()["results"]] == ["created", "duplicate", "rejected",
                                                         "created"]


def test_unauthenticated_is_401(client, db_url):
    r = client.post("/api/v1/orders", json=order("X"))
    assert r.status_code == 401
    r = client.post("/api/v1/orders", json=order("X"), headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
