"""The group insert's pure part: which POST of a statement created its row, which replays."""

from __future__ import annotations

from payflow.app.writer import assign


def _row(key: str, n: int) -> dict[str, object]:
    return {"idempotency_key": key, "n": n}


def test_each_post_gets_its_own_row_in_order() -> None:
    created = {"a": _row("a", 1), "b": _row("b", 2)}
    assert assign(["a", "b"], created, {}) == [(created["a"], True), (created["b"], True)]


def test_the_first_post_of_a_key_creates_it_and_the_others_replay_it() -> None:
    created = {"a": _row("a", 1)}
    assert assign(["a", "a", "a"], created, {}) == [
        (created["a"], True),
        (created["a"], False),
        (created["a"], False),
    ]


def test_a_key_taken_before_the_statement_replays_the_existing_row() -> None:
    existing = {"old": _row("old", 0)}
    created = {"new": _row("new", 1)}
    assert assign(["old", "new", "old"], created, existing) == [
        (existing["old"], False),
        (created["new"], True),
        (existing["old"], False),
    ]


def test_a_key_no_row_holds_has_no_outcome() -> None:
    assert assign(["gone"], {}, {}) == [None]
