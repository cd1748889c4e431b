"""`RecentIds`: how the controller recognises the echo of its own task publishes."""

from __future__ import annotations

from controller.recent_ids import RecentIds


def test_an_id_is_taken_once_and_the_oldest_is_forgotten_first() -> None:
    recent = RecentIds(3)
    for item in ("a", "b", "c", "d"):
        recent.add(item)
    assert [recent.take(item) for item in ("a", "b", "b", "c", "d", "e")] == [False, True, False, True, True, False]
    recent.add("x")
    recent.add("y")
    recent.add("x")  # added again: now the newest
    recent.add("z")
    recent.add("w")  # forgets y, the oldest
    assert (recent.take("y"), recent.take("x")) == (False, True)
