"""collecting_less, which send and serve run under: fewer collections, all as it was after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from leadrelay.collecting import YOUNG_COLLECTION_EVERY, collecting_less


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_what_lives_on_entry_is_left_out_of_collections_until_exit() -> None:
    before = gc.get_threshold()
    with collecting_less():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, *before[1:])
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_objects_a_host_program_froze_stay_frozen() -> None:
    kept = [{"n": i} for i in range(100)]
    gc.freeze()
    frozen = gc.get_freeze_count()
    with collecting_less():
        assert gc.get_threshold()[0] == YOUNG_COLLECTION_EVERY
    assert gc.get_freeze_count() == frozen
    assert kept[99] == {"n": 99}
