"""The caches are bounded in bytes, not only in entries (``daemon/lru.py``), and still never serve stale data."""

from __future__ import annotations

import numpy as np

from pirag.client.protocol.documents import SearchHit, SearchResult
from pirag.daemon.embed.cache import EmbeddingCache
from pirag.daemon.lru import BoundedLRU, approx_size
from pirag.daemon.services.query_cache import QueryCache
from pirag.daemon.services.recall import RecallCache


def _result(text_chars: int, hits: int = 8) -> SearchResult:
    return SearchResult(hits=[SearchHit(project="p", source=f"doc-{n}.md", text=f"{n} " + "x" * text_chars,
                                        line_start=1, line_end=9, heading="", file_type="md", score=0.5)
                              for n in range(hits)], took_ms=1.0)


def test_approx_size_follows_the_text_held() -> None:
    small, large = approx_size(_result(20)), approx_size(_result(2000))
    assert large - small >= 8 * 1900, (small, large)
    array = np.ones(384, np.float32)
    assert approx_size(array) >= array.nbytes
    assert approx_size(array[:100]) >= 100 * 4  # a view: the buffer it pins is counted


def test_lru_evicts_by_bytes_before_entries() -> None:
    cache = BoundedLRU(max_entries=1000, max_bytes=50_000)
    for n in range(200):
        cache.put(n, "y" * 1000)
    assert cache.bytes <= 50_000 and 30 <= len(cache) < 60, (cache.bytes, len(cache))
    assert cache.get(199) is not None and cache.get(0) is None   # least recently used went first
    assert cache.stats()["evicted"] == 200 - len(cache)
    cache.put("huge", "z" * 100_000)                             # larger than the cache: not stored
    assert cache.get("huge") is None and cache.bytes <= 50_000
    cache.clear()
    assert cache.bytes == 0 and len(cache) == 0


def test_lru_bytes_stay_exact_through_replacement_and_discard() -> None:
    cache = BoundedLRU(max_entries=10, max_bytes=1 << 20)
    cache.put("a", "x" * 100)
    cache.put("a", "x" * 5000)       # a replaced entry releases its old size
    cache.put("b", "x" * 100)
    assert cache.bytes == approx_size("x" * 5000) + approx_size("x" * 100) + 2 * 200
    assert cache.discard_where(lambda key, _: key == "a") == 1
    assert cache.bytes == approx_size("x" * 100) + 200


def test_query_cache_bounded_in_bytes_and_forgets_projects() -> None:
    cache = QueryCache(entries=500, ttl_s=300.0, max_bytes=200_000)
    for n in range(100):
        cache.put(("q", n), frozenset({"p1" if n % 2 else "p2"}), _result(2000))
    stats = cache.stats()
    assert stats["bytes"] <= 200_000 and stats["entries"] < 100, stats
    kept = stats["entries"]
    dropped = cache.forget_project("p1")
    assert dropped and len(cache) == kept - dropped
    assert all(cache.get(("q", n)) is None for n in range(1, 100, 2))
    assert QueryCache(entries=0, ttl_s=1.0, max_bytes=1 << 20).get("k") is None


def test_embedding_cache_bounded_in_bytes() -> None:
    cache = EmbeddingCache(capacity=10_000, max_bytes=1 << 20)
    for n in range(2000):
        cache.put("model", n.to_bytes(16, "big"), np.full(384, n, np.float32))
    stats = cache.stats()
    assert stats["bytes"] <= 1 << 20 and 400 <= stats["entries"] < 700, stats
    assert float(cache.get("model", (1999).to_bytes(16, "big"))[0]) == 1999.0
    assert cache.get("model", (0).to_bytes(16, "big")) is None


def test_recall_cache_bounded_in_bytes_and_generations() -> None:
    cache = RecallCache(entries=256, ttl_s=300.0, max_bytes=100_000)
    for n in range(100):
        cache.put(("recall", n, cache.generation(["p"])), ["fact text " * 200])
    assert cache.bytes <= 100_000 and len(cache) < 100
    key = ("recall", 99, cache.generation(["p"]))
    assert cache.get(key) is not None
    cache.bump("p")
    assert cache.get(("recall", 99, cache.generation(["p"]))) is None  # a write makes the old key unreachable
