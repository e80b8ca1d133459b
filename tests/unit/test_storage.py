"""Storage: one listing, streaming read and ranged write for local paths and S3 (moto's real server)."""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
from pathlib import Path

import pytest

from bedrock_batch import storage as storage_module
from bedrock_batch.errors import ConfigError, SourceError
from bedrock_batch.storage import (
    FileSegment,
    SegmentedFile,
    Storage,
    StorageReadError,
    StorageWriteError,
    join_uri,
    split_s3_uri,
)

# Names whose byte order differs from a naive per-directory sort: "-" < "/" < "0".
TREE = {"a-c.txt": b"1", "a/b.txt": b"2", "a0.txt": b"3", "a/z/y.txt": b"4", "b.txt": b""}


def make_tree(root: Path) -> None:
    for name, data in TREE.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def upload_tree(client, bucket: str, prefix: str) -> None:
    for name, data in TREE.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}{name}", Body=data)


class TestUris:
    def test_split_s3_uri(self):
        assert split_s3_uri("s3://bucket/a/b.jsonl") == ("bucket", "a/b.jsonl")
        assert split_s3_uri("s3://bucket") == ("bucket", "")

    def test_split_rejects_non_s3_and_bucketless(self):
        with pytest.raises(ConfigError):
            split_s3_uri("/tmp/x")
        with pytest.raises(ConfigError, match="no bucket"):
            split_s3_uri("s3:///key")

    def test_join_uri(self, tmp_path):
        assert join_uri("s3://b/p/", "shard-0001", "part-0001.jsonl") == "s3://b/p/shard-0001/part-0001.jsonl"
        assert join_uri(str(tmp_path), "x") == str(tmp_path / "x")


class TestLocal:
    def test_listing_is_in_s3_key_order_with_relative_names(self, tmp_path):
        make_tree(tmp_path)
        names = [obj.name for obj in Storage().list_objects(str(tmp_path))]
        assert names == sorted(TREE, key=lambda name: name.encode())
        sizes = {obj.name: obj.size for obj in Storage().list_objects(str(tmp_path))}
        assert sizes["a/b.txt"] == 1
        assert sizes["b.txt"] == 0

    def test_single_file_lists_itself(self, tmp_path):
        make_tree(tmp_path)
        [obj] = Storage().list_objects(str(tmp_path / "a" / "b.txt"))
        assert (obj.name, obj.size) == ("b.txt", 1)

    def test_missing_path_is_a_source_error(self, tmp_path):
        with pytest.raises(SourceError, match="no such file"):
            list(Storage().list_objects(str(tmp_path / "nope")))
        with pytest.raises(StorageReadError, match="cannot read"):
            Storage().open_read(str(tmp_path / "nope"))

    def test_write_range_copies_exactly_the_range_and_hashes_it(self, tmp_path):
        source = tmp_path / "spool"
        data = os.urandom(3 * storage_module.COPY_CHUNK_BYTES + 123)
        source.write_bytes(data)
        target = tmp_path / "out" / "shard-0001" / "part-0001.jsonl"
        digest = Storage().write_range(source, 1000, len(data) - 2000, str(target))
        assert target.read_bytes() == data[1000:-1000]
        assert digest == hashlib.sha256(data[1000:-1000]).hexdigest()
        assert [p.name for p in target.parent.iterdir()] == ["part-0001.jsonl"]

    @pytest.mark.parametrize("kernel_copy", [True, False], ids=["copy_file_range", "buffered"])
    def test_write_range_across_mmap_windows_and_without_kernel_copy(
        self, tmp_path, monkeypatch, kernel_copy
    ):
        monkeypatch.setattr(storage_module, "MMAP_WINDOW_BYTES", 2 * mmap.ALLOCATIONGRANULARITY)
        if not kernel_copy:

            def unsupported(*args):
                raise OSError(errno.EXDEV, "cross-device")

            monkeypatch.setattr(storage_module, "_copy_in_kernel", unsupported)
        data = os.urandom(10 * mmap.ALLOCATIONGRANULARITY + 17)
        source = tmp_path / "spool"
        source.write_bytes(data)
        target = tmp_path / "part.jsonl"
        digest = Storage().write_range(source, 4097, len(data) - 5000, str(target))
        assert target.read_bytes() == data[4097 : len(data) - 903]
        assert digest == hashlib.sha256(data[4097 : len(data) - 903]).hexdigest()

    @pytest.mark.parametrize("kernel_copy", [True, False], ids=["copy_file_range", "buffered"])
    def test_write_range_of_a_segmented_file_reads_across_its_segments(
        self, tmp_path, monkeypatch, kernel_copy
    ):
        if not kernel_copy:

            def unsupported(*args):
                raise OSError(errno.EXDEV, "cross-device")

            monkeypatch.setattr(storage_module, "_copy_in_kernel", unsupported)
        first, second = tmp_path / "part-1", tmp_path / "part-2"
        first.write_bytes(b"aaaaXXbbbb")
        second.write_bytes(b"cccccc")
        # The logical file is "aaaabbbbcccccc": the XX of the first part is cut out.
        spool = SegmentedFile(
            (FileSegment(str(first), 0, 4), FileSegment(str(first), 6, 4), FileSegment(str(second), 0, 6))
        )
        assert spool.size == 14
        target = tmp_path / "part.jsonl"
        digest = Storage().write_range(spool, 2, 10, str(target))
        assert target.read_bytes() == b"aabbbbcccc"
        assert digest == hashlib.sha256(b"aabbbbcccc").hexdigest()
        with pytest.raises(StorageWriteError, match="runs past the end"):
            Storage().write_range(spool, 10, 5, str(target))

    def test_write_range_past_the_end_fails_and_leaves_no_file(self, tmp_path):
        source = tmp_path / "spool"
        source.write_bytes(b"x" * 10)
        target = tmp_path / "part.jsonl"
        with pytest.raises(StorageWriteError, match="ended 5 bytes before the end"):
            Storage().write_range(source, 5, 10, str(target))
        assert not target.exists()

    def test_write_file_creates_parents(self, tmp_path):
        source = tmp_path / "index.parquet"
        source.write_bytes(b"PAR1")
        Storage().write_file(source, str(tmp_path / "a" / "b" / "index.parquet"))
        assert (tmp_path / "a" / "b" / "index.parquet").read_bytes() == b"PAR1"

    def test_delete_objects_tolerates_missing_files(self, tmp_path):
        make_tree(tmp_path)
        Storage().delete_objects(
            [str(tmp_path / "a-c.txt"), str(tmp_path / "a" / "b.txt"), str(tmp_path / "gone")]
        )
        assert [obj.name for obj in Storage().list_objects(str(tmp_path))] == ["a/z/y.txt", "a0.txt", "b.txt"]

    def test_s3_uri_without_client_is_a_config_error(self):
        with pytest.raises(ConfigError, match="no S3 client"):
            Storage().open_read("s3://bucket/key")


@pytest.mark.integration
class TestS3:
    def test_listing_matches_local_order_and_pages_through(self, s3_client, s3_bucket, monkeypatch):
        monkeypatch.setattr(storage_module, "LIST_PAGE_SIZE", 2)
        upload_tree(s3_client, s3_bucket, "calls/")
        s3_client.put_object(Bucket=s3_bucket, Key="calls-old/x.txt", Body=b"not under calls/")
        objects = list(Storage(s3_client).list_objects(f"s3://{s3_bucket}/calls"))
        assert [obj.name for obj in objects] == sorted(TREE, key=lambda name: name.encode())
        assert objects[0].uri == f"s3://{s3_bucket}/calls/a-c.txt"

    def test_exact_key_lists_the_single_object(self, s3_client, s3_bucket):
        s3_client.put_object(Bucket=s3_bucket, Key="in/day.jsonl", Body=b"{}\n")
        [obj] = Storage(s3_client).list_objects(f"s3://{s3_bucket}/in/day.jsonl")
        assert (obj.name, obj.size) == ("day.jsonl", 3)

    def test_nothing_there_is_a_source_error(self, s3_client, s3_bucket):
        with pytest.raises(SourceError, match="nothing at"):
            list(Storage(s3_client).list_objects(f"s3://{s3_bucket}/missing"))
        with pytest.raises(SourceError, match="no objects under"):
            list(Storage(s3_client).list_objects(f"s3://{s3_bucket}/missing/"))
        with pytest.raises(SourceError, match="NoSuchBucket"):
            list(Storage(s3_client).list_objects("s3://no-such-bucket-here/x/"))

    def test_open_read_streams_lines(self, s3_client, s3_bucket):
        body = b"".join(b'{"n": %d}\n' % i for i in range(50_000))
        s3_client.put_object(Bucket=s3_bucket, Key="big.jsonl", Body=body)
        with Storage(s3_client).open_read(f"s3://{s3_bucket}/big.jsonl") as stream:
            lines = list(stream)
        assert len(lines) == 50_000
        assert lines[-1] == b'{"n": 49999}\n'

    def test_open_read_missing_object(self, s3_client, s3_bucket):
        with pytest.raises(StorageReadError, match="NoSuchKey"):
            Storage(s3_client).open_read(f"s3://{s3_bucket}/nope")

    def test_open_seekable_reads_ranges(self, s3_client, s3_bucket):
        data = os.urandom(100_000)
        s3_client.put_object(Bucket=s3_bucket, Key="blob", Body=data)
        with Storage(s3_client).open_seekable(f"s3://{s3_bucket}/blob") as stream:
            stream.seek(-10, os.SEEK_END)
            assert stream.read() == data[-10:]
            stream.seek(5000)
            assert stream.read(20) == data[5000:5020]

    def test_write_range_multipart_uploads_exactly_the_range(
        self, s3_client, s3_bucket, tmp_path, monkeypatch
    ):
        # S3 parts are 5 MiB at least: make the threshold that small so a 12 MB range takes three parts.
        monkeypatch.setattr(storage_module, "MULTIPART_THRESHOLD_BYTES", 5 << 20)
        monkeypatch.setattr(storage_module, "MULTIPART_CHUNK_BYTES", 5 << 20)
        data = os.urandom(12_000_000)
        source = tmp_path / "spool"
        source.write_bytes(data)
        uri = f"s3://{s3_bucket}/run/shard-0001/part-0001.jsonl"
        digest = Storage(s3_client).write_range(source, 777, 11_000_000, uri)
        stored = s3_client.get_object(Bucket=s3_bucket, Key="run/shard-0001/part-0001.jsonl")["Body"].read()
        assert stored == data[777 : 777 + 11_000_000]
        assert digest == hashlib.sha256(stored).hexdigest()

    def test_write_range_small_is_one_put(self, s3_client, s3_bucket, tmp_path):
        source = tmp_path / "spool"
        source.write_bytes(b"0123456789")
        digest = Storage(s3_client).write_range(source, 2, 5, f"s3://{s3_bucket}/p.jsonl")
        assert s3_client.get_object(Bucket=s3_bucket, Key="p.jsonl")["Body"].read() == b"23456"
        assert digest == hashlib.sha256(b"23456").hexdigest()

    def test_write_file_uploads(self, s3_client, s3_bucket, tmp_path):
        source = tmp_path / "index.parquet"
        source.write_bytes(b"PAR1" * 1000)
        Storage(s3_client).write_file(source, f"s3://{s3_bucket}/run/index.parquet")
        assert (
            s3_client.get_object(Bucket=s3_bucket, Key="run/index.parquet")["Body"].read() == b"PAR1" * 1000
        )

    def test_delete_objects_in_batches(self, s3_client, s3_bucket, monkeypatch):
        monkeypatch.setattr(storage_module, "_DELETE_BATCH_KEYS", 2)
        upload_tree(s3_client, s3_bucket, "p/")
        doomed = [f"s3://{s3_bucket}/p/{name}" for name in ("a-c.txt", "a/b.txt", "a0.txt", "never-there")]
        Storage(s3_client).delete_objects(doomed)
        left = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
        assert left == ["p/a/z/y.txt", "p/b.txt"]

    def test_write_to_missing_bucket_is_a_write_error(self, s3_client, tmp_path):
        source = tmp_path / "spool"
        source.write_bytes(b"x")
        with pytest.raises(StorageWriteError, match="no-such-bucket"):
            Storage(s3_client).write_range(source, 0, 1, "s3://no-such-bucket-here/p.jsonl")

    def test_write_range_past_the_end_leaves_no_object(self, s3_client, s3_bucket, tmp_path):
        source = tmp_path / "spool"
        source.write_bytes(b"x" * 10)
        with pytest.raises(StorageWriteError, match="ended 5 bytes before the end"):
            Storage(s3_client).write_range(source, 5, 10, f"s3://{s3_bucket}/p.jsonl")
        assert "Contents" not in s3_client.list_objects_v2(Bucket=s3_bucket)


# --- expected bucket owners and the KMS key ----------------------------------------------------------------

ACCOUNT = "123456789012"  # moto's default account: the owner of every bucket it creates
OTHER_ACCOUNT = "210987654321"
KMS_KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OWNER_HEADER = "x-amz-expected-bucket-owner"
SSE_HEADER = "x-amz-server-side-encryption"
SSE_KEY_HEADER = "x-amz-server-side-encryption-aws-kms-key-id"
WRITES = frozenset({"PutObject", "CreateMultipartUpload"})


class RecordedRequests:
    """Every request a boto3 client sends, as botocore hands it to the HTTP layer: (operation, headers)."""

    def __init__(self, client) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []
        client.meta.events.register("before-send.s3", self._record)

    def _record(self, request, event_name: str, **_) -> None:
        headers = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()}
        self.sent.append((event_name.rsplit(".", 1)[-1], headers))

    def operations(self) -> set[str]:
        return {operation for operation, _ in self.sent}


def exercise_everything(storage: Storage, bucket: str, tmp_path: Path, monkeypatch) -> list[str]:
    """List, head, read, seek, write (one PUT and multipart), delete through ``storage``; the keys written."""
    monkeypatch.setattr(storage_module, "MULTIPART_THRESHOLD_BYTES", 5 << 20)
    monkeypatch.setattr(storage_module, "MULTIPART_CHUNK_BYTES", 5 << 20)
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b'{"n": 1}\n' * 10)
    big.write_bytes(os.urandom(11 << 20))
    storage.write_file(small, f"s3://{bucket}/run/index.jsonl")
    storage.write_range(big, 0, 11 << 20, f"s3://{bucket}/run/shard-0001/part-0001.jsonl")
    storage.write_range(small, 0, 9, f"s3://{bucket}/run/doomed.jsonl")
    assert [o.name for o in storage.list_objects(f"s3://{bucket}/run")] == [
        "doomed.jsonl",
        "index.jsonl",
        "shard-0001/part-0001.jsonl",
    ]
    assert [o.name for o in storage.list_objects(f"s3://{bucket}/run/index.jsonl")] == ["index.jsonl"]
    with storage.open_read(f"s3://{bucket}/run/index.jsonl") as stream:
        assert len(list(stream)) == 10
    with storage.open_seekable(f"s3://{bucket}/run/shard-0001/part-0001.jsonl") as stream:
        stream.seek(-4, os.SEEK_END)
        assert len(stream.read()) == 4
    storage.delete_objects([f"s3://{bucket}/run/doomed.jsonl"])
    return ["run/index.jsonl", "run/shard-0001/part-0001.jsonl"]


def s3_refuses_a_wrong_owner(client, bucket: str, key: str) -> bool:
    """Whether the S3 behind ``client`` refuses a request that names another account as the bucket's owner."""
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=bucket, Key=key, ExpectedBucketOwner=OTHER_ACCOUNT)
    except ClientError as exc:
        return exc.response["Error"]["Code"] in ("403", "AccessDenied", "Forbidden")
    return False


class TestOwnerAndKeySettings:
    def test_account_ids_and_keys_are_checked(self):
        for bad in ("12345678901", "1234567890123", "12345678901a", 123456789012):
            with pytest.raises(ConfigError, match="12-digit AWS account id"):
                Storage(expected_bucket_owner=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=r"bucket_owners\['raw'\]"):
            Storage(bucket_owners={"raw": "me"})
        with pytest.raises(ConfigError, match="KMS key ARN"):
            Storage(kms_key_id="arn:aws:kms:us-east-1:123:key/short")
        for good in (KMS_KEY, "1234abcd-12ab-34cd-56ef-1234567890ab", "alias/staging", None, ""):
            Storage(kms_key_id=good, expected_bucket_owner="")

    def test_owner_per_bucket(self):
        storage = Storage(expected_bucket_owner=ACCOUNT, bucket_owners={"raw": OTHER_ACCOUNT})
        assert storage.expected_owner("raw") == OTHER_ACCOUNT
        assert storage.expected_owner("staging") == ACCOUNT
        assert Storage(bucket_owners={"raw": OTHER_ACCOUNT}).expected_owner("staging") is None

    def test_pipeline_config_keys(self, tmp_path):
        from bedrock_batch.config import PipelineConfig

        shipped = (
            Path(__file__).resolve().parents[2] / "include" / "config" / "call_center_summarization.json"
        )
        raw = json.loads(shipped.read_text())
        assert (raw["kms_key_id"], raw["expected_bucket_owner"], raw["bucket_owners"]) == (None, None, {})

        def load(**overrides):
            path = tmp_path / "config.json"
            path.write_text(json.dumps({**raw, **overrides}))
            return PipelineConfig.load(path)

        config = load(kms_key_id=KMS_KEY, expected_bucket_owner=ACCOUNT, bucket_owners={"raw": OTHER_ACCOUNT})
        assert config.kms_key_id == KMS_KEY
        assert config.bucket_owner("s3://raw/x/") == OTHER_ACCOUNT
        assert config.bucket_owner("s3://staging/x/") == ACCOUNT
        assert config.bucket_owner("/local/dir") == ""
        assert load(bucket_owners=None).bucket_owners == {}
        with pytest.raises(ConfigError, match="expected_bucket_owner must be a 12-digit"):
            load(expected_bucket_owner=123456789012)
        with pytest.raises(ConfigError, match=r"bucket_owners\['raw'\] must be a 12-digit"):
            load(bucket_owners={"raw": "12345"})
        with pytest.raises(ConfigError, match="kms_key_id must be a KMS key ARN"):
            load(kms_key_id="my key")


@pytest.mark.integration
class TestOwnerAndKeyOnTheWire:
    def test_every_request_names_the_owner_and_every_write_the_key(
        self, s3_client, s3_bucket, tmp_path, monkeypatch
    ):
        recorded = RecordedRequests(s3_client)
        storage = Storage(s3_client, expected_bucket_owner=ACCOUNT, kms_key_id=KMS_KEY)
        written = exercise_everything(storage, s3_bucket, tmp_path, monkeypatch)

        assert recorded.operations() == {
            "PutObject",
            "CreateMultipartUpload",
            "UploadPart",
            "CompleteMultipartUpload",
            "ListObjectsV2",
            "HeadObject",
            "GetObject",
            "DeleteObjects",
        }
        for operation, headers in recorded.sent:
            assert headers.get(OWNER_HEADER) == ACCOUNT, operation
            if operation in WRITES:
                assert (headers.get(SSE_HEADER), headers.get(SSE_KEY_HEADER)) == ("aws:kms", KMS_KEY)
            else:  # parts are encrypted with their upload's key; S3 refuses SSE headers on UploadPart
                assert SSE_HEADER not in headers, operation
        for key in written:
            head = s3_client.head_object(Bucket=s3_bucket, Key=key)
            assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", KMS_KEY)

    def test_nothing_is_added_without_settings(self, s3_client, s3_bucket, tmp_path, monkeypatch):
        recorded = RecordedRequests(s3_client)
        written = exercise_everything(Storage(s3_client), s3_bucket, tmp_path, monkeypatch)
        assert len(recorded.sent) > 8
        for operation, headers in recorded.sent:
            assert not {OWNER_HEADER, SSE_HEADER, SSE_KEY_HEADER} & set(headers), operation
        assert s3_client.head_object(Bucket=s3_bucket, Key=written[0]).get("SSEKMSKeyId") is None

    def test_per_bucket_owner_overrides_the_default(self, s3_client, s3_bucket, tmp_path):
        s3_client.put_object(Bucket=s3_bucket, Key="in/a.txt", Body=b"x")
        recorded = RecordedRequests(s3_client)
        storage = Storage(s3_client, expected_bucket_owner=OTHER_ACCOUNT, bucket_owners={s3_bucket: ACCOUNT})
        assert [o.name for o in storage.list_objects(f"s3://{s3_bucket}/in/")] == ["a.txt"]
        assert [h[OWNER_HEADER] for _, h in recorded.sent] == [ACCOUNT]

    def test_the_abort_of_a_failed_multipart_upload_names_the_owner(
        self, s3_client, s3_bucket, tmp_path, monkeypatch
    ):
        # s3transfer aborts without the upload's extra arguments; Storage's handler adds the owner there.
        monkeypatch.setattr(storage_module, "MULTIPART_THRESHOLD_BYTES", 5 << 20)
        monkeypatch.setattr(storage_module, "MULTIPART_CHUNK_BYTES", 5 << 20)
        source = tmp_path / "spool"
        source.write_bytes(os.urandom(6 << 20))
        recorded = RecordedRequests(s3_client)
        storage = Storage(s3_client, expected_bucket_owner=ACCOUNT, kms_key_id=KMS_KEY)
        with pytest.raises(StorageWriteError, match="before the end of range"):
            storage.write_range(source, 0, 11 << 20, f"s3://{s3_bucket}/short.jsonl")
        aborts = [headers for operation, headers in recorded.sent if operation == "AbortMultipartUpload"]
        assert aborts, [operation for operation, _ in recorded.sent]
        assert {h.get(OWNER_HEADER) for h in aborts} == {ACCOUNT}
        assert "Contents" not in s3_client.list_objects_v2(Bucket=s3_bucket)

    def test_a_bucket_of_another_account_is_refused(self, s3_client, s3_bucket, tmp_path):
        s3_client.put_object(Bucket=s3_bucket, Key="in/a.txt", Body=b"x")
        # The local stack refuses a wrong owner as S3 does (403 AccessDenied; moto alone would ignore it).
        assert s3_refuses_a_wrong_owner(s3_client, s3_bucket, "in/a.txt")
        storage = Storage(s3_client, expected_bucket_owner=OTHER_ACCOUNT)
        with pytest.raises(StorageReadError, match=f"not owned by the expected account {OTHER_ACCOUNT}"):
            list(storage.list_objects(f"s3://{s3_bucket}/in/"))
        source = tmp_path / "f"
        source.write_bytes(b"x")
        with pytest.raises(StorageWriteError, match=f"not owned by the expected account {OTHER_ACCOUNT}"):
            storage.write_file(source, f"s3://{s3_bucket}/out/f")


@pytest.mark.integration
class TestJobSlotsOwnerAndKey:
    """The job slots (bedrock_batch.slots) call S3 themselves: the same owner and key reach their requests."""

    def test_claim_read_and_release_name_the_owner_and_write_with_the_key(self, s3_client, s3_bucket):
        from bedrock_batch.slots import JobSlots

        recorded = RecordedRequests(s3_client)
        slots = JobSlots(
            s3_client,
            f"s3://{s3_bucket}/_job_slots/",
            "anthropic.claude-3-haiku-20240307-v1:0",
            1,
            expected_bucket_owner=ACCOUNT,
            kms_key_id=KMS_KEY,
        )
        lease = slots.acquire("job-a", set())
        assert lease is not None
        slots.release(lease)
        assert slots.acquire("job-b", set()) is not None
        assert {operation for operation, _ in recorded.sent} == {"GetObject", "PutObject"}
        for operation, headers in recorded.sent:
            assert headers.get(OWNER_HEADER) == ACCOUNT, operation
            if operation == "PutObject":
                assert (headers.get(SSE_HEADER), headers.get(SSE_KEY_HEADER)) == ("aws:kms", KMS_KEY)
        head = s3_client.head_object(Bucket=s3_bucket, Key=lease.key)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", KMS_KEY)

    def test_nothing_is_added_without_settings(self, s3_client, s3_bucket):
        from bedrock_batch.slots import JobSlots

        recorded = RecordedRequests(s3_client)
        slots = JobSlots(
            s3_client, f"s3://{s3_bucket}/_job_slots/", "anthropic.claude-3-haiku-20240307-v1:0", 1
        )
        assert slots.acquire("job-a", set()) is not None
        for operation, headers in recorded.sent:
            assert not {OWNER_HEADER, SSE_HEADER, SSE_KEY_HEADER} & set(headers), operation


class TestExplicitLocalLocations:
    """``file:///abs/path`` names the same place as ``/abs/path`` for every local operation."""

    def test_write_list_read_and_delete_through_file_uris(self, tmp_path):
        storage = Storage(None)
        source = tmp_path / "source.txt"
        source.write_bytes(b"0123456789")
        root = f"file://{tmp_path}/results"
        uri = storage_module.join_uri(root, "ds=2026-11-20", "part.txt")
        assert uri == f"file://{tmp_path}/results/ds=2026-11-20/part.txt"
        storage.write_file(source, uri)
        assert (tmp_path / "results" / "ds=2026-11-20" / "part.txt").read_bytes() == b"0123456789"
        storage.write_range(source, 2, 3, f"file://{tmp_path}/range.txt")
        assert (tmp_path / "range.txt").read_bytes() == b"234"
        assert [found.name for found in storage.list_objects(root)] == ["ds=2026-11-20/part.txt"]
        with storage.open_read(uri) as handle:
            assert handle.read() == b"0123456789"
        storage.delete_objects([uri])
        assert not (tmp_path / "results" / "ds=2026-11-20" / "part.txt").exists()
        assert not (tmp_path / "file:").exists(), "nothing may be written under a directory named 'file:'"
