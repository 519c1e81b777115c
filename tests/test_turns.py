"""Turns at one shared model: one pass at a time, and a waiting query pass goes before waiting document passes,
so a search is not starved by a bulk encode in another thread (a 40-document POST /documents held a dense
GET /search for 15.8 s behind a plain lock)."""

from __future__ import annotations

import threading
import time

from htp.turns import Turns


def test_a_waiting_query_goes_before_waiting_documents_and_passes_never_overlap():
    turns, order, inside = Turns(), [], []
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with turns.turn(urgent=False):
            holding.set()
            release.wait(10)

    def take(name: str, urgent: bool) -> None:
        with turns.turn(urgent):
            inside.append(name)
            assert len(inside) == 1, "two passes at once"
            order.append(name)
            time.sleep(0.01)
            inside.remove(name)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    waiters = [threading.Thread(target=take, args=(f"documents {i}", False)) for i in range(3)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.2)  # the document passes wait first
    query = threading.Thread(target=take, args=("query", True))
    query.start()
    time.sleep(0.2)
    release.set()
    for thread in [holder, query, *waiters]:
        thread.join(10)
    assert order[0] == "query" and sorted(order[1:]) == ["documents 0", "documents 1", "documents 2"]


def test_a_turn_is_given_back_when_its_pass_raises():
    turns = Turns()
    try:
        with turns.turn(urgent=False):
            raise RuntimeError("a pass that fails")
    except RuntimeError:
        pass
    done = threading.Event()

    def take() -> None:
        with turns.turn(urgent=True):
            done.set()

    threading.Thread(target=take).start()
    assert done.wait(5)
