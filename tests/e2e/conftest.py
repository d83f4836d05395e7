from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from patron.app import create_app
from patron.db import UnitOfWork, get_engine
from patron.security import service as security
from patron.security.model import SYSTEM
from tests.factories import make_org

PASSWORD = "correct-horse-9"


@pytest.fixture
def org(db_url: str) -> dict[str, int]:
    with UnitOfWork(get_engine(db_url)) as uow:
        return make_org(uow)


@pytest.fixture
def users(db_url: str, org: dict[str, int]) -> dict[str, int]:
    out = {}
    with UnitOfWork(get_engine(db_url)) as uow:
        for name, role, stores in (("owner", "owner", []), ("analyst", "analyst", []),
                                   ("manager", "manager", [org["SH01"]]),
                                   ("cashier", "cashier", [org["SH01"]])):
            out[name] = security.create_user(uow=uow, actor=SYSTEM, username=name,
                                             password=PASSWORD, role=role, store_ids=stores)
    return out


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def login(client: TestClient, username: str) -> TestClient:
    r = client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return client


@pytest.fixture
def owner(client: TestClient, users: dict[str, int]) -> TestClient:
    return login(client, "owner")


@pytest.fixture
def pos_key(db_url: str, org: dict[str, int]) -> str:
    with UnitOfWork(get_engine(db_url)) as uow:
        _id, key = security.create_api_key(uow=uow, actor=SYSTEM, name="till 1",
                                           store_ids=[org["SH01"]], channel_codes=["pos"])
    return key
