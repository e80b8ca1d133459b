"""Record ids: stable across reruns, unique per key, duplicates flagged, collisions resolved, small index."""

from __future__ import annotations

import re
import tracemalloc

import pytest

from bedrock_batch import record_ids
from bedrock_batch.record_ids import (
    ID_SPACE,
    RecordIdIndex,
    RecordIdSpaceError,
    encode_id,
    record_id_for,
)

RECORD_ID = re.compile(r"^[0-9A-Za-z]{11}$")


def keys(count: int, prefix: str = "call") -> list[str]:
    return [f"{prefix}-{i:07d}" for i in range(count)]


class TestEncodeId:
    def test_bounds_use_eleven_characters(self):
        assert encode_id(0) == "00000000000"
        assert RECORD_ID.match(encode_id(ID_SPACE - 1))
        assert encode_id(62**11 - 1) == "z" * 11

    def test_values_outside_eleven_digits_are_refused(self):
        with pytest.raises(ValueError, match="outside"):
            encode_id(62**11)


class TestRecordIdIndex:
    def test_ids_are_eleven_alphanumerics_and_unique(self):
        assignment = RecordIdIndex().assign_batch(keys(5000))
        assert all(RECORD_ID.match(rid) for rid in assignment.record_ids)
        assert len(set(assignment.record_ids)) == 5000
        assert not any(assignment.duplicates)

    def test_rerun_gives_the_same_ids(self):
        first = RecordIdIndex().assign_batch(keys(1000)).record_ids
        second = RecordIdIndex().assign_batch(keys(1000)).record_ids
        assert first == second
        assert first[7] == record_id_for("call-0000007")

    def test_batch_boundaries_do_not_change_ids(self):
        whole = RecordIdIndex().assign_batch(keys(300)).record_ids
        index = RecordIdIndex()
        pieces = [index.assign_batch(keys(300)[i : i + 7]).record_ids for i in range(0, 300, 7)]
        assert [rid for piece in pieces for rid in piece] == whole

    def test_duplicate_key_is_flagged_and_shares_the_first_id(self):
        index = RecordIdIndex()
        first = index.assign_batch(["a", "b"])
        later = index.assign_batch(["c", "a", "a"])
        assert later.duplicates == [False, True, True]
        assert later.record_ids[1] == first.record_ids[0]
        assert len(index) == 3

    def test_duplicate_within_one_batch_keeps_the_first(self):
        assignment = RecordIdIndex().assign_batch(["x", "y", "x"])
        assert assignment.duplicates == [False, False, True]
        assert assignment.record_ids[2] == assignment.record_ids[0]

    def test_duplicates_are_found_after_ids_move_to_sorted_runs(self, monkeypatch):
        monkeypatch.setattr(record_ids, "_PENDING_LIMIT", 16)
        index = RecordIdIndex()
        for start in range(0, 1000, 50):
            index.assign_batch(keys(1000)[start : start + 50])
        again = index.assign_batch(keys(1000)[::97])
        assert all(again.duplicates)
        assert len(index) == 1000

    def test_colliding_keys_get_different_ids_and_neither_is_a_duplicate(self):
        # With 97 possible ids, 60 keys collide many times over; every key must still get its own id.
        index = RecordIdIndex(id_space=97)
        assignment = index.assign_batch(keys(60))
        assert not any(assignment.duplicates)
        assert len(set(assignment.record_ids)) == 60
        assert index.collisions > 0

    def test_collision_resolution_is_deterministic_and_batch_independent(self, monkeypatch):
        monkeypatch.setattr(record_ids, "_PENDING_LIMIT", 8)
        whole = RecordIdIndex(id_space=101).assign_batch(keys(80)).record_ids
        index = RecordIdIndex(id_space=101)
        one_by_one = [index.assign(key)[0] for key in keys(80)]
        assert one_by_one == whole

    def test_a_key_that_collided_is_still_recognised_as_duplicate(self):
        index = RecordIdIndex(id_space=13)
        first = index.assign_batch(keys(10))
        again = index.assign_batch(keys(10))
        assert all(again.duplicates)
        assert again.record_ids == first.record_ids

    def test_exhausted_id_space_raises_instead_of_looping(self):
        index = RecordIdIndex(id_space=4)
        with pytest.raises(RecordIdSpaceError, match="id space"):
            index.assign_batch(keys(5))

    def test_invalid_id_space_is_refused(self):
        with pytest.raises(Exception, match="id_space"):
            RecordIdIndex(id_space=0)

    def test_memory_is_a_compact_array_not_the_keys(self, monkeypatch):
        monkeypatch.setattr(record_ids, "_PENDING_LIMIT", 4096)
        count = 200_000
        index = RecordIdIndex()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for start in range(0, count, 1000):
                index.assign_batch([f"a-rather-long-source-key-{i:012d}" for i in range(start, start + 1000)])
            retained = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(index) == count
        assert index.nbytes <= 16 * count
        # 16 bytes per id in the runs plus a dict of at most 4,096 recent ids; the keys alone would be 7 MB.
        assert retained < 20 * count + 1_000_000
