"""Keyrings from configuration: their form, clear refusals, development keys on first use."""

import stat

import pytest

from patron.protection import keys
from patron.protection.keys import KeyUnavailable, parse_keyring

K1 = "Y7YvJ4Sg0n8nV0gMmd3cNq3bJ1JY5jJqk9mX3e0mQ4A"
K2 = "2p3dDq5V4Jq8kQ9b7yVw6o0Yxg1rJ1m6vT2lZ8cH0sE"


def test_the_first_key_of_a_keyring_encrypts_and_every_key_decrypts():
    ring = parse_keyring("data", f"new:{K2}, old:{K1}")
    assert ring.current_id == "new" and set(ring.keys) == {"new", "old"}
    assert len(ring.key("old")) == 32


@pytest.mark.parametrize("text, reason", [
    ("", "key_not_configured"),
    (K1, "key_malformed"),  # no id
    ("a:tooshort", "key_malformed"),
    (f"bad id:{K1}", "key_malformed"),
    (f"a:{K1},a:{K2}", "key_malformed"),  # the same id twice
])
def test_a_malformed_keyring_is_refused_with_its_reason(text, reason):
    with pytest.raises(KeyUnavailable) as err:
        parse_keyring("data", text)
    assert err.value.message == reason


def test_an_unknown_key_id_is_a_clear_error():
    with pytest.raises(KeyUnavailable) as err:
        parse_keyring("data", f"a:{K1}").key("b")
    assert err.value.message == "key_missing"
    assert err.value.params == {"purpose": "data", "key_id": "b"}


def test_development_keys_are_generated_once_into_a_private_file(tmp_path, monkeypatch):
    from patron.config import get_settings

    for name in ("PATRON_DATA_KEYS", "PATRON_INDEX_KEY", "PATRON_BACKUP_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        first = keys.data_keyring()
        path = tmp_path / keys.DEV_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert keys.data_keyring() == first  # read back, not generated again
        assert len(keys.index_key()) == 32 and keys.backup_keyring().current_id == "bk1"
    finally:
        get_settings.cache_clear()


def test_values_sealed_together_open_as_sealed_one_by_one():
    from patron.protection.fields import decrypt, encrypt, encrypt_many

    plains = ["[]", '[["phone","","+8613800000000"]]', "名字", ""]
    bindings = ["1", "2", "3", "4"]
    tokens = encrypt_many(plains, where="orders.identifiers", bindings=bindings)
    assert [decrypt(t, where="orders.identifiers", binding=b)
            for t, b in zip(tokens, bindings, strict=True)] == plains
    # Each bound to its own row and column, each with its own nonce.
    with pytest.raises(KeyUnavailable):
        decrypt(tokens[1], where="orders.identifiers", binding="1")
    with pytest.raises(KeyUnavailable):
        decrypt(tokens[1], where="customers.phone", binding="2")
    nonces = {t.partition("$")[2][:16] for t in tokens}
    assert len(nonces) == len(tokens)
    assert encrypt_many(["x"], where="w", bindings=["1"])[0].partition("$")[0] == \
        encrypt("x", where="w", binding="1").partition("$")[0]
