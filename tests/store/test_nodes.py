"""The edge processes sharing a store (both backends): what each reports
enforcing, and which ones a write's 2xx still waits for."""

from __future__ import annotations

import time


def behind(store, revision: int, fresh: float, exclude: str = "") -> list[str]:
    """The ids nodes_behind names; each with a last-heard time of just now."""
    rows = store.nodes_behind(revision, fresh, exclude=exclude)
    assert all(time.time() - 15 < seen <= time.time() + 1 for _, seen in rows), rows
    return [node for node, _ in rows]


def test_nodes_behind_a_revision_are_the_live_ones_not_there_yet(store):
    revision = store.revision()
    assert behind(store, 5, 10.0) == []
    store.report_node("edge-a:1", 4)
    store.report_node("edge-b:2", 5)
    store.report_node("edge-c:3", 3)
    store.report_node("edge-a:10", 1)
    store.report_node("edge_a:1", 1)  # ("_" is no wildcard here)
    assert behind(store, 5, 10.0) == ["edge-a:1", "edge-a:10", "edge-c:3", "edge_a:1"]
    store.forget_node("edge-a:10")
    store.forget_node("edge_a:1")
    assert behind(store, 5, 10.0) == ["edge-a:1", "edge-c:3"]
    # A node leaves out its own processes, by id prefix.
    assert behind(store, 5, 10.0, exclude="edge-a:") == ["edge-c:3"]
    assert behind(store, 5, 10.0, exclude="edge-") == []
    assert behind(store, 4, 10.0) == ["edge-c:3"]
    # A report never moves a node back (a late heartbeat from before a patch).
    store.report_node("edge-a:1", 6)
    store.report_node("edge-a:1", 2)
    assert behind(store, 6, 10.0) == ["edge-b:2", "edge-c:3"]
    # Silent for longer than ``fresh``: not waited for.
    time.sleep(1.2)
    store.report_node("edge-c:3", 3)
    assert behind(store, 6, 1.0) == ["edge-c:3"]
    store.forget_node("edge-c:3")
    assert behind(store, 6, 10.0) == ["edge-b:2"]
    # The time last heard from is the latest report's.
    before = dict(store.nodes_behind(6, 10.0))["edge-b:2"]
    time.sleep(0.05)
    store.report_node("edge-b:2", 5)
    assert dict(store.nodes_behind(6, 10.0))["edge-b:2"] > before
    # None of this is a change of the store's state.
    assert store.revision() == revision
