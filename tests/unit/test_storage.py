"""Storage: one listing, streaming read and ranged write for local paths and S3 (moto's real server)."""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
from pathlib import Path

import pytest

from bedrock_batch import storage as storage_module
from bedrock_batch.errors import ConfigError, SourceError
from bedrock_batch.storage import (
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
