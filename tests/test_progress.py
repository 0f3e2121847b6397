"""Progress tasks: a reporter sees totals and advances; without one nothing happens."""

from __future__ import annotations

import pytest

from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.core.progress import batched, reporting, task, track


class Recorder:
    def __init__(self):
        self.events = []

    def start(self, description, total):
        self.events.append(("start", description, total))
        return description

    def advance(self, handle, amount):
        self.events.append(("advance", handle, amount))

    def stop(self, handle):
        self.events.append(("stop", handle))


def test_batched_yields_slices_and_counts_finished_items():
    recorder = Recorder()
    seen = []
    with reporting(recorder):
        for batch in batched(list(range(7)), 3, "demo: items"):
            seen.append((list(batch), [e for e in recorder.events if e[0] == "advance"][-1:]))
    assert [b for b, _ in seen] == [[0, 1, 2], [3, 4, 5], [6]]
    # the bar advances after the caller processed a batch, not before
    assert seen[0][1] == [] and seen[1][1] == [("advance", "demo: items", 3)]
    assert recorder.events[0] == ("start", "demo: items", 7)
    assert recorder.events[-2:] == [("advance", "demo: items", 1), ("stop", "demo: items")]


def test_batched_rejects_a_zero_batch_size_with_the_plugin_name():
    with pytest.raises(PlaceDeMarcheError, match="bert: batch size must be at least 1, got 0"):
        list(batched(["a"], 0, "bert: texts"))


def test_without_a_reporter_tasks_are_silent_and_track_passes_items_through():
    assert list(track(iter("abc"), "letters", total=3)) == ["a", "b", "c"]
    with task("nothing") as t:
        t.advance(5)  # no reporter installed: a no-op, no error
    recorder = Recorder()
    with reporting(recorder):
        assert list(track(["x", "y"], "pair")) == ["x", "y"]
    assert recorder.events == [("start", "pair", 2), ("advance", "pair", 1), ("advance", "pair", 1),
                               ("stop", "pair")]
