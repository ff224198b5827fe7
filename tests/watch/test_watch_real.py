"""Watched folders with the real embedding model and real stores: edits become searchable by meaning with their
new text, a deleted file's chunks go, a renamed file is found once, under its new name, and an unchanged
re-save costs no embedding. (How fast: ``python -m pirag.stress.watch_bench`` measures and prints it.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import merge, wait_until

from .conftest import FAST_WATCH
from .helpers import the_watch, wait_idle, wait_sources, write

TOPICS = [
    ("The sourdough starter needs feeding with rye flour every twelve hours.", "how often do I feed the bread starter"),
    ("Rotate the backup disks on the first Monday of each month.", "when are the backup drives swapped"),
    ("The greenhouse tomatoes want watering at dawn in the summer.", "when should the tomato plants get water"),
    ("Our cat Miso is allergic to chicken-based food.", "what food must the pet avoid"),
    ("The VPN certificate expires in March and must be renewed.", "when does the vpn cert run out"),
]


@pytest.fixture(scope="module")
def real_watch(daemon_factory: Any, short_tmp: Path) -> tuple[Any, Path]:
    tree = short_tmp / "real-tree"
    tree.mkdir()
    handle = daemon_factory("watchreal", merge({"ingest": {"allowed_roots": [str(tree)]}}, {"watch": FAST_WATCH}))
    return handle, tree


def top_source(client: Any, query: str, project: str) -> tuple[str, str] | None:
    hits = client.search(query, project, k=1, use_cache=False).hits
    return (hits[0].source, hits[0].text) if hits else None


@pytest.mark.slow
def test_edits_are_searchable_with_their_new_text(real_watch: tuple[Any, Path]) -> None:
    handle, tree = real_watch
    base = tree / "notes"
    for index in range(4):
        write(base / f"filler{index}.md", f"# Filler {index}\nA note about nothing in particular, number {index}.\n")
    note = write(base / "note.md", "# Note\nNothing yet.\n")
    with handle.client() as client:
        client.watch_add("real", [str(base)], wait=True)
        for sentence, question in TOPICS:
            note.write_text(f"# Note\n{sentence}\n")
            found = wait_until(lambda q=question, s=sentence: (lambda hit: hit if hit and s in hit[1] else None)(
                top_source(client, q, "real")), timeout=30)
            assert found[0] == str(note)
        # only the new text: the first topic is no longer in the note
        assert TOPICS[0][0] not in (top_source(client, TOPICS[0][1], "real") or ("", ""))[1]
        wait_idle(client, base)
        syncs, texts = the_watch(client, base).syncs, client.status().components["embed"]["texts"]
        os.utime(note)                                   # a re-save without a change: a sync, no embedding
        wait_until(lambda: the_watch(client, base).syncs > syncs, timeout=30)
        assert client.status().components["embed"]["texts"] == texts


@pytest.mark.slow
def test_delete_and_rename_with_the_real_model(real_watch: tuple[Any, Path]) -> None:
    handle, tree = real_watch
    base = tree / "moves"
    recipe = write(base / "recipe.md", "# Pancakes\nWhisk two eggs with milk and flour, rest the batter.\n")
    write(base / "other.md", "# Garden\nPrune the apple tree in late winter.\n")
    with handle.client() as client:
        client.watch_add("moves", [str(base)], wait=True)
        assert top_source(client, "how do I make pancake batter", "moves")[0] == str(recipe)
        renamed = base / "breakfast.md"
        os.rename(recipe, renamed)
        wait_sources(client, "moves", {str(renamed), str(base / "other.md")}, timeout=30)
        hits = client.search("how do I make pancake batter", "moves", k=5, use_cache=False).hits
        assert [h.source for h in hits if "Whisk" in h.text] == [str(renamed)]   # one copy, the new name
        renamed.unlink()
        wait_sources(client, "moves", {str(base / "other.md")}, timeout=30)
        hits = client.search("how do I make pancake batter", "moves", k=5, use_cache=False).hits
        assert not [h for h in hits if "Whisk" in h.text]
        assert the_watch(client, base).errors == 0
