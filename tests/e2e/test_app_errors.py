import pytest


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_unknown_page_is_an_html_404_for_browsers_and_json_for_the_api(client):
    r = client.get("/no-such-page", headers={"Accept": "text/html"})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    r = client.get("/api/v1/no-such-thing", headers={"Accept": "text/html"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_malformed_json_body_is_a_422_not_a_500(client, pos_key):
    r = client.post("/api/v1/orders", content=b"{not json",
                    headers={"Authorization": f"Bearer {pos_key}",
                             "Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"]
