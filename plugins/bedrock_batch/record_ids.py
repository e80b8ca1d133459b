"""Stable record ids: 11 alphanumeric characters derived from each source row's key.

A rerun over the same rows gives the same ids; a compact index tells duplicate keys from id collisions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from bedrock_batch.errors import ConfigError, RecordIdSpaceError

RECORD_ID_LENGTH = 11
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# 62**11 (about 5.2e19) exceeds 2**64, so every 64-bit hash value has its own 11-character id.
ID_SPACE = 2**64

# With 2**64 ids a second attempt is already a one-in-billions event; the bound only matters when a test
# shrinks the id space, and turns an endless search into an error.
MAX_ATTEMPTS = 64

# Ids registered since the last merge wait in a dict; this many at most, so the dict stays a few MB.
_PENDING_LIMIT = 65_536

_ALPHABET_BYTES = np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)
_BASE = np.uint64(len(ALPHABET))

U64Array = npt.NDArray[np.uint64]


class IdAssignment(NamedTuple):
    """Record ids for a batch of keys, in the order of the keys.

    :param record_ids: the id of each key; a duplicate key gets the id of its first occurrence.
    :param duplicates: ``True`` where the key already appeared earlier (that row must be quarantined).
    """

    record_ids: list[str]
    duplicates: list[bool]


def encode_id(value: int) -> str:
    """The 11-character base-62 form of an id value below ``62**11``.

    :param value: a non-negative integer below ``62**11``.
    """
    if not 0 <= value < len(ALPHABET) ** RECORD_ID_LENGTH:
        raise ValueError(f"id value {value} is outside 0..62**{RECORD_ID_LENGTH}")
    digits = []
    for _ in range(RECORD_ID_LENGTH):
        value, digit = divmod(value, len(ALPHABET))
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def encode_ids(values: U64Array) -> list[str]:
    """The 11-character ids of id values (already reduced to the id space).

    :param values: id values.
    """
    # Vectorised base-62: eleven divisions over the whole batch instead of eleven per key.
    digits = np.empty((len(values), RECORD_ID_LENGTH), dtype=np.uint8)
    rest = values.copy()
    for position in range(RECORD_ID_LENGTH - 1, -1, -1):
        digits[:, position] = _ALPHABET_BYTES[rest % _BASE]
        rest //= _BASE
    return digits.view(f"S{RECORD_ID_LENGTH}").ravel().astype(f"U{RECORD_ID_LENGTH}").tolist()


def _key_bytes(key: str) -> bytes:
    # surrogateescape keeps keys read from files with undecodable bytes hashable and distinct.
    return key.encode("utf-8", "surrogateescape")


def _attempt_value(key: bytes, attempt: int, id_space: int) -> int:
    # Attempt 0 is the first half of the 16-byte digest (see key_digests); later attempts salt the hash.
    digest = hashlib.blake2b(key, digest_size=8, salt=attempt.to_bytes(16, "little")).digest()
    return int.from_bytes(digest, "little") % id_space


def key_digests(keys: Sequence[str]) -> tuple[U64Array, U64Array]:
    """First-attempt id values (before reduction to the id space) and key fingerprints: the two halves of
    one 16-byte blake2b digest each; the input of :meth:`RecordIdIndex.assign_digests`.

    :param keys: source row keys.
    """
    joined = b"".join(hashlib.blake2b(_key_bytes(key), digest_size=16).digest() for key in keys)
    halves = np.frombuffer(joined, dtype="<u8").reshape(-1, 2).astype(np.uint64, copy=False)
    return halves[:, 0], halves[:, 1]


def record_id_for(key: str, *, id_space: int = ID_SPACE) -> str:
    """The first-choice record id of ``key``; :class:`RecordIdIndex` only departs from it on a collision.

    :param key: the source row's key (id column value or file name).
    :param id_space: number of distinct id values; tests shrink it to force collisions.
    """
    values, _ = key_digests([key])
    return encode_id(int(values[0]) % id_space)


class RecordIdIndex:
    """Assigns record ids in source order and remembers them in about 16 bytes per record.

    Each key hashes to an id value and to an independent 64-bit fingerprint. A key whose id is taken by a
    key with a *different* fingerprint (a collision) derives its next candidate from a salted hash, so the
    two rows keep different ids; a key whose id is taken with the *same* fingerprint is a duplicate. The
    outcome depends only on the keys and their order, so a rerun over the same rows gives the same ids.

    Only the id values and fingerprints are kept, never the keys: sorted numpy runs that are merged like a
    binary counter, plus a small dict of the most recent ids.

    :param id_space: number of distinct id values (default ``2**64``); tests pass a small one so that the
        collision path really runs.
    """

    def __init__(self, *, id_space: int = ID_SPACE) -> None:
        if not 1 <= id_space <= ID_SPACE:
            raise ConfigError(f"id_space must be between 1 and 2**64, got {id_space}")
        self._id_space = id_space
        self._runs: list[tuple[U64Array, U64Array]] = []
        self._pending: dict[int, int] = {}
        self._count = 0
        self.collisions = 0

    def __len__(self) -> int:
        return self._count

    @property
    def id_space(self) -> int:
        """The number of distinct id values."""
        return self._id_space

    @property
    def nbytes(self) -> int:
        """Bytes held by the sorted runs (the dict of recent ids adds at most a few MB)."""
        return sum(values.nbytes + fingerprints.nbytes for values, fingerprints in self._runs)

    def assign(self, key: str) -> tuple[str, bool]:
        """Record id of one key and whether the key is a duplicate; see :meth:`assign_batch`.

        :param key: the source row's key.
        """
        assignment = self.assign_batch([key])
        return assignment.record_ids[0], assignment.duplicates[0]

    def assign_batch(self, keys: Sequence[str]) -> IdAssignment:
        """Record ids for ``keys``, registered in order; same result as assigning them one by one.

        :param keys: source row keys in source order.
        :raises RecordIdSpaceError: when a key finds no free id in :data:`MAX_ATTEMPTS` derivations (only
            possible with a shrunken ``id_space``).
        """
        if not keys:
            return IdAssignment([], [])
        values, fingerprints = key_digests(keys)
        resolved, duplicates = self.assign_digests(values, fingerprints, keys.__getitem__)
        return IdAssignment(encode_ids(resolved), duplicates.tolist())

    def assign_digests(
        self, values: U64Array, fingerprints: U64Array, key_at: Callable[[int], str]
    ) -> tuple[U64Array, npt.NDArray[np.bool_]]:
        """:meth:`assign_batch` from the keys' digests (:func:`key_digests`): the id value of each key and
        whether it is a duplicate. A parallel prepare hashes keys in its workers and assigns here, in order.

        :param values: first-attempt id values of the keys, before reduction to the id space.
        :param fingerprints: the keys' fingerprints.
        :param key_at: the key at a position of the batch; called only on a collision, to derive the next
            candidate.
        :raises RecordIdSpaceError: see :meth:`assign_batch`.
        """
        if self._id_space != ID_SPACE:
            values = values % np.uint64(self._id_space)
        taken = self._in_runs(values)
        resolved = values.copy()
        duplicates = np.zeros(len(values), dtype=np.bool_)
        pending = self._pending
        value_list, fingerprint_list = values.tolist(), fingerprints.tolist()
        if (
            not taken.any()
            and pending.keys().isdisjoint(value_list)
            and len(set(value_list)) == len(value_list)
        ):
            # The common case, all in C: every id of the batch is new.
            pending.update(zip(value_list, fingerprint_list, strict=True))
            self._count += len(value_list)
            if len(pending) >= _PENDING_LIMIT:
                self._merge_pending()
            return resolved, duplicates
        taken_list = taken.tolist()
        for i, (value, fingerprint) in enumerate(zip(value_list, fingerprint_list, strict=True)):
            if not taken_list[i] and value not in pending:
                pending[value] = fingerprint
                continue
            # Rare path: the first-choice id is taken, by this same key (duplicate) or another (collision).
            resolved[i], duplicates[i] = self._resolve(key_at(i), value, fingerprint)
        self._count += len(values) - int(duplicates.sum())
        if len(pending) >= _PENDING_LIMIT:
            self._merge_pending()
        return resolved, duplicates

    def _resolve(self, key: str, first_value: int, fingerprint: int) -> tuple[int, bool]:
        value = first_value
        for attempt in range(1, MAX_ATTEMPTS + 1):
            owner = self._owner(value)
            if owner is None:
                self._pending[value] = fingerprint
                return value, False
            if owner == fingerprint:
                return value, True
            self.collisions += 1
            value = _attempt_value(_key_bytes(key), attempt, self._id_space)
        raise RecordIdSpaceError(
            f"no free record id after {MAX_ATTEMPTS} attempts with {self._count:,} ids taken in an id space "
            f"of {self._id_space:,}; the id space is too small for this many keys"
        )

    def _owner(self, value: int) -> int | None:
        """Fingerprint of the key holding id ``value``, or ``None`` if the id is free."""
        owner = self._pending.get(value)
        if owner is not None:
            return owner
        probe = np.uint64(value)
        for run_values, run_fingerprints in self._runs:
            position = int(np.searchsorted(run_values, probe))
            if position < len(run_values) and run_values[position] == probe:
                return int(run_fingerprints[position])
        return None

    def _in_runs(self, values: U64Array) -> npt.NDArray[np.bool_]:
        taken = np.zeros(len(values), dtype=np.bool_)
        if not self._runs:
            return taken
        # Searching in sorted order walks each run front to back: about 5x faster than random probes
        # into a run of millions of ids, which miss the cache at every step.
        order = np.argsort(values)
        ordered = values[order]
        found = np.zeros(len(values), dtype=np.bool_)
        for run_values, _ in self._runs:
            positions = np.searchsorted(run_values, ordered)
            inside = positions < len(run_values)
            found[inside] |= run_values[positions[inside]] == ordered[inside]
        taken[order] = found
        return taken

    def _merge_pending(self) -> None:
        values = np.fromiter(self._pending.keys(), dtype=np.uint64, count=len(self._pending))
        fingerprints = np.fromiter(self._pending.values(), dtype=np.uint64, count=len(self._pending))
        self._pending.clear()
        order = np.argsort(values, kind="stable")
        runs = self._runs
        runs.append((values[order], fingerprints[order]))
        # Merge while the newest run is at least half the size of the one before: O(log n) runs to probe,
        # and every id is copied O(log n) times in total.
        while len(runs) > 1 and len(runs[-1][0]) * 2 >= len(runs[-2][0]):
            newer = runs.pop()
            older = runs.pop()
            runs.append(_merge_runs(older, newer))


def _merge_runs(
    older: tuple[U64Array, U64Array], newer: tuple[U64Array, U64Array]
) -> tuple[U64Array, U64Array]:
    """Merge two sorted runs without sorting again; needs little more memory than the result."""
    older_values, older_fingerprints = older
    newer_values, newer_fingerprints = newer
    total = len(older_values) + len(newer_values)
    # Where each newer id lands in the merged run: its rank among the older ids plus the newer ids before it.
    slots = np.searchsorted(older_values, newer_values)
    slots += np.arange(len(newer_values), dtype=slots.dtype)
    from_older = np.ones(total, dtype=np.bool_)
    from_older[slots] = False
    merged_values = np.empty(total, dtype=np.uint64)
    merged_fingerprints = np.empty(total, dtype=np.uint64)
    merged_values[slots] = newer_values
    merged_values[from_older] = older_values
    merged_fingerprints[slots] = newer_fingerprints
    merged_fingerprints[from_older] = older_fingerprints
    return merged_values, merged_fingerprints
