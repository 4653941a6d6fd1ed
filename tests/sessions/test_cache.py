"""The per-process cache of session states: one version, bounded, expiring, droppable."""

from __future__ import annotations

import uuid

from app.sessions.cache import DetailCache
from app.sessions.schemas import SessionDetail


def _detail(session_id: uuid.UUID, version: int) -> SessionDetail:
    label = {"label": "A", "probability": 1.0, "p_value": None, "in_set": True}
    differential = {
        "labels": [label],
        "all_labels": [label],
        "set_size": 1,
        "top": "A",
        "alpha": 0.1,
        "coverage_target": 0.9,
        "step": 0,
        "calibrated": False,
        "calibration_id": None,
        "calibration_n": None,
        "threshold": None,
        "entropy": 0.0,
        "guarantee": "none",
    }
    return SessionDetail.model_validate(
        {
            "id": str(session_id),
            "status": "active",
            "step": 0,
            "version": version,
            "next_question": None,
            "should_stop": False,
            "stop_reason": None,
            "differential": differential,
            "model": "m",
            "prompt_version": "p",
            "policy": "cip",
            "calibration_id": None,
            "patient": {"summary": "s"},
            "inquiry": "q",
            "candidates": ["A"],
            "transcript": [],
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_serves_only_its_own_version() -> None:
    cache = DetailCache(maxsize=4, ttl_s=60)
    sid = uuid.uuid4()
    cache.put(sid, _detail(sid, 3))
    hit = cache.get(sid, 3)
    assert hit is not None and hit.version == 3
    assert cache.get(sid, 4) is None  # the session changed: stale, and dropped
    assert cache.get(sid, 3) is None and len(cache) == 0


def test_entries_expire_and_the_least_recently_used_goes_first() -> None:
    clock = Clock()
    cache = DetailCache(maxsize=2, ttl_s=60, clock=clock)
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.put(a, _detail(a, 1))
    cache.put(b, _detail(b, 1))
    assert cache.get(a, 1) is not None  # a is now the most recent
    cache.put(c, _detail(c, 1))
    assert cache.get(b, 1) is None and cache.get(a, 1) is not None and len(cache) == 2
    clock.now = 59.9
    assert cache.get(c, 1) is not None
    clock.now = 60.0
    assert cache.get(c, 1) is None and cache.get(a, 1) is None and len(cache) == 0


def test_drop_and_a_disabled_cache() -> None:
    sid = uuid.uuid4()
    cache = DetailCache(maxsize=4, ttl_s=60)
    cache.put(sid, _detail(sid, 1))
    cache.drop(sid)
    cache.drop(uuid.uuid4())  # unknown ids are fine
    assert cache.get(sid, 1) is None
    disabled = DetailCache(maxsize=0, ttl_s=60)
    disabled.put(sid, _detail(sid, 1))
    assert disabled.get(sid, 1) is None and len(disabled) == 0
