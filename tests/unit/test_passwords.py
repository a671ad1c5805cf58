"""The generated-password provider: what it creates and when it replaces."""

from components.passwords import ALPHABET, LENGTH, PasswordProvider


def test_create_draws_an_alphanumeric_password_of_the_length() -> None:
    created = PasswordProvider().create({"length": LENGTH, "result": None})
    assert created.outs is not None
    value = created.outs["result"]
    assert len(value) == LENGTH
    assert set(value) <= set(ALPHABET)
    assert created.id
    other = PasswordProvider().create({"length": LENGTH, "result": None})
    assert other.outs is not None and other.outs["result"] != value and other.id != created.id


def test_same_length_is_no_change_and_keeps_the_value() -> None:
    diff = PasswordProvider().diff("id", {"length": 32, "result": "x" * 32}, {"length": 32, "result": None})
    assert not diff.changes
    assert not diff.replaces


def test_new_length_replaces() -> None:
    diff = PasswordProvider().diff("id", {"length": 32, "result": "x" * 32}, {"length": 40, "result": None})
    assert diff.changes
    assert diff.replaces == ["length"]
