"""Local paths and ``s3://`` URIs behind one small streaming interface.

List, stream, seek, delete, upload a file or a byte range of a file: never a whole object in memory.
Every S3 request names the account that must own its bucket (``ExpectedBucketOwner``) when one is
configured, and every write asks for SSE-KMS with the configured key.
"""

from __future__ import annotations

import bisect
import errno
import functools
import hashlib
import io
import itertools
import mmap
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from bedrock_batch.aws_errors import error_code
from bedrock_batch.config import check_account_id, check_kms_key_id
from bedrock_batch.errors import ConfigError, StorageReadError, StorageWriteError

S3_SCHEME = "s3://"
# An explicit local location (file:///abs/path); a bare absolute path means the same.
FILE_SCHEME = "file://"

# Large enough to keep per-call overhead negligible, small enough to be irrelevant to peak memory.
COPY_CHUNK_BYTES = 1 << 20

# Keys per ListObjectsV2 call (the S3 maximum); listing streams page by page.
LIST_PAGE_SIZE = 1000

# S3 DeleteObjects takes at most this many keys per request.
_DELETE_BATCH_KEYS = 1000

# Local shard copies hash the spool through read-only mmap windows of this size.
MMAP_WINDOW_BYTES = 8 << 20

# Read-ahead of seekable S3 reads (Parquet column chunks): one ranged GET per 8 MiB at most.
SEEKABLE_BUFFER_BYTES = 8 << 20

# Multipart uploads: 16 MiB parts, 4 in flight and at most 4 buffered, so an upload holds ~64 MiB at most
# (boto3's defaults buffer up to 10 parts per upload).
MULTIPART_THRESHOLD_BYTES = 64 << 20
MULTIPART_CHUNK_BYTES = 16 << 20
MULTIPART_CONCURRENCY = 4


@dataclass(frozen=True)
class StoredObject:
    """One object found by :meth:`Storage.list_objects`.

    :param uri: full URI (``s3://bucket/key`` or a local path).
    :param name: path relative to the listed prefix (``calls/0001.txt``), or the base name when the URI
        named a single object.
    :param size: size in bytes.
    """

    uri: str
    name: str
    size: int


@dataclass(frozen=True)
class FileSegment:
    """A byte range of a local file.

    :param path: the file.
    :param offset: first byte.
    :param length: number of bytes.
    """

    path: str
    offset: int
    length: int


@dataclass(frozen=True)
class SegmentedFile:
    """One logical file made of byte ranges of local files, in order: a spool prepared in parts is used
    where it lies instead of being copied into one file.

    :param segments: the ranges, in order.
    """

    segments: tuple[FileSegment, ...]

    @functools.cached_property
    def _starts(self) -> list[int]:
        return list(itertools.accumulate((s.length for s in self.segments), initial=0))

    @property
    def size(self) -> int:
        """Bytes of the logical file."""
        return self._starts[-1]

    def pieces(self, offset: int, length: int) -> list[FileSegment]:
        """The ranges of the underlying files that hold ``length`` bytes from logical ``offset``.

        :param offset: first logical byte.
        :param length: number of bytes.
        :raises StorageWriteError: when the range runs past the end of the logical file.
        """
        if offset + length > self.size:
            raise StorageWriteError(
                f"range {offset:,}+{length:,} runs past the end of the {self.size:,}-byte spool"
            )
        starts = self._starts
        pieces = []
        at = bisect.bisect_right(starts, offset) - 1
        position, end = offset, offset + length
        while position < end:
            segment = self.segments[at]
            skip = position - starts[at]
            take = min(segment.length - skip, end - position)
            if take > 0:
                pieces.append(FileSegment(segment.path, segment.offset + skip, take))
            position += take
            at += 1
        return pieces


def is_s3_uri(uri: str) -> bool:
    """Whether ``uri`` names S3 (``s3://bucket/key``) rather than a local path.

    :param uri: a URI or local path.
    """
    return uri.startswith(S3_SCHEME)


def path_of(uri: str) -> str:
    """The path of a local location: ``file:///data/x`` → ``/data/x``; a path is returned as it is.

    :param uri: a ``file://`` URI or a local path.
    """
    return uri[len(FILE_SCHEME) :] if uri.startswith(FILE_SCHEME) else uri


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` → ``("bucket", "some/key")``.

    :param uri: an ``s3://`` URI.
    :raises ConfigError: when ``uri`` is not an ``s3://`` URI with a bucket name.
    """
    if not is_s3_uri(uri):
        raise ConfigError(f"expected an s3://bucket/key URI, got {uri!r}")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise ConfigError(f"S3 URI {uri!r} has no bucket name")
    return bucket, key


def join_uri(base: str, *names: str) -> str:
    """``base`` with ``names`` appended as path segments, for S3 URIs and local paths alike.

    :param base: prefix URI or local directory.
    :param names: path segments to append.
    """
    if is_s3_uri(base):
        return "/".join([base.rstrip("/"), *names])
    if base.startswith(FILE_SCHEME):
        return FILE_SCHEME + str(Path(path_of(base), *names))
    return str(Path(base, *names))


def _fill_expected_owner(owners: Mapping[str, str], default: str | None, params: Any, **_: Any) -> None:
    """botocore handler: ``ExpectedBucketOwner`` on the calls s3transfer makes without our arguments."""
    owner = owners.get(str(params.get("Bucket")), default)
    if owner and "ExpectedBucketOwner" not in params:
        params["ExpectedBucketOwner"] = owner


class _StreamingBodyReader(io.RawIOBase):
    """A botocore ``StreamingBody`` as a raw stream, so ``io.BufferedReader`` can buffer and split lines."""

    def __init__(self, body: Any, uri: str) -> None:
        self._body = body
        self._uri = uri

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._body.read(len(buffer))
        except BotoCoreError as exc:
            raise StorageReadError(f"reading {self._uri} failed mid-stream: {exc}") from exc
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class _S3RangeReader(io.RawIOBase):
    """A seekable view of one S3 object; each read is a ranged GET (Parquet needs to seek to its footer)."""

    def __init__(
        self, client: Any, bucket: str, key: str, size: int, extra: Mapping[str, str] | None = None
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._size = size
        self._extra = dict(extra or {})
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        end = min(self._position + len(buffer), self._size)
        if end <= self._position:
            return 0
        try:
            response = self._client.get_object(
                Bucket=self._bucket, Key=self._key, Range=f"bytes={self._position}-{end - 1}", **self._extra
            )
            data = response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise StorageReadError(f"reading s3://{self._bucket}/{self._key} failed: {exc}") from exc
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


class _HashingRangeReader(io.RawIOBase):
    """Reads byte ranges of local files one after the other and hashes them on the way.

    It is deliberately not seekable: the S3 transfer manager then reads it exactly once, front to back, so
    the digest covers exactly the uploaded bytes.
    """

    def __init__(self, pieces: Sequence[FileSegment]) -> None:
        self._pieces = list(reversed(pieces))
        self._file: io.BufferedReader | None = None
        self._remaining = 0
        self._piece: FileSegment | None = None
        self.sha256 = hashlib.sha256()

    def _next_piece(self) -> bool:
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self._pieces:
            return False
        piece = self._pieces.pop()
        try:
            self._file = open(piece.path, "rb")  # noqa: SIM115 - closed by close() or the next piece
        except OSError as exc:
            raise StorageReadError(f"cannot read {piece.path}: {exc.strerror}") from exc
        self._file.seek(piece.offset)
        self._piece, self._remaining = piece, piece.length
        return True

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        # Fills the whole buffer, across pieces: the transfer manager makes each multipart part of one read,
        # and a part cut short at a piece boundary (under S3's 5 MiB minimum) would fail the upload.
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            while not self._remaining:
                if not self._next_piece():
                    return filled
            assert self._file is not None
            assert self._piece is not None
            chunk = view[filled : filled + min(len(view) - filled, self._remaining)]
            count = self._file.readinto(chunk)
            if not count:
                # Fail the upload before it completes: a short object must never appear under the final name.
                piece = self._piece
                raise StorageWriteError(
                    f"{piece.path} ended {self._remaining:,} bytes before the end of range "
                    f"{piece.offset:,}+{piece.length:,}; the file changed after it was planned"
                )
            self.sha256.update(chunk[:count])
            self._remaining -= count
            filled += count
        return filled

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


@dataclass(frozen=True)
class StorageRecipe:
    """What another process needs to build a :class:`Storage` equal to this one: a worker of a parallel
    prepare cannot share a boto3 client, and in a spawned process an Airflow connection cannot be looked up.

    The S3 client is rebuilt from its region, endpoint, TLS verification, botocore config and credentials
    *as they are when the recipe is taken* (temporary credentials are not refreshed in the worker; a prepare
    that outlives them fails with an expired-token error). Nothing of it is ever logged.

    :param client: ``(region, endpoint_url, verify, config, (access key, secret key, token))``; ``None``:
        no S3.
    :param expected_bucket_owner: see :class:`Storage`.
    :param bucket_owners: see :class:`Storage`.
    :param kms_key_id: see :class:`Storage`.
    """

    client: tuple[Any, ...] | None = None
    expected_bucket_owner: str | None = None
    bucket_owners: Mapping[str, str] | None = None
    kms_key_id: str | None = None

    def __repr__(self) -> str:
        # Never the credentials, should the recipe reach a log line or a traceback.
        return f"StorageRecipe(s3={self.client is not None})"

    def build(self) -> Storage:
        """The storage, with a new S3 client when the original had one."""
        client = None
        if self.client is not None:
            import boto3

            region, endpoint_url, verify, config, (access_key, secret_key, token) = self.client
            client = boto3.session.Session().client(
                "s3",
                region_name=region,
                endpoint_url=endpoint_url,
                verify=verify,
                config=config,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                aws_session_token=token,
            )
        return Storage(
            client,
            expected_bucket_owner=self.expected_bucket_owner,
            bucket_owners=self.bucket_owners,
            kms_key_id=self.kms_key_id,
        )


class Storage:
    """Reads and writes local paths and ``s3://`` URIs.

    With neither an owner nor a key the requests are exactly boto3's defaults (the bucket's default
    encryption applies to writes).

    :param s3_client: a boto3 S3 client, required only for ``s3://`` URIs; the Airflow hook builds it from
        an Airflow connection. Nothing here creates clients.
    :param expected_bucket_owner: 12-digit account id that must own every bucket this storage touches:
        sent as ``ExpectedBucketOwner`` on every request (list, head, get, put, multipart, delete), so S3
        refuses (403) instead of reading from or writing to a bucket of another account, e.g. one
        re-created under the same name. ``None``: not checked.
    :param bucket_owners: bucket name → account id, overriding ``expected_bucket_owner`` for that bucket
        (e.g. a source bucket in the data producer's account).
    :param kms_key_id: KMS key (ARN recommended) every write is encrypted with (``ServerSideEncryption=
        aws:kms``, ``SSEKMSKeyId``); ``None``: the bucket's default encryption.
    :raises ConfigError: when an account id is not 12 digits or the key id has no KMS key shape.
    """

    def __init__(
        self,
        s3_client: Any | None = None,
        *,
        expected_bucket_owner: str | None = None,
        bucket_owners: Mapping[str, str] | None = None,
        kms_key_id: str | None = None,
    ) -> None:
        self._s3_client = s3_client
        self._expected_bucket_owner = check_account_id(expected_bucket_owner, "expected_bucket_owner")
        owners = {
            str(b): check_account_id(o, f"bucket_owners[{b!r}]") for b, o in (bucket_owners or {}).items()
        }
        self._bucket_owners = {bucket: owner for bucket, owner in owners.items() if owner}
        self._kms_key_id = check_kms_key_id(kms_key_id, "kms_key_id")
        if s3_client is not None and (self._expected_bucket_owner or self._bucket_owners):
            self._fill_owner_of_transfer_cleanup(s3_client)

    def recipe(self) -> StorageRecipe:
        """How to build this storage again in another process (see :class:`StorageRecipe`)."""
        client = None
        if self._s3_client is not None:
            meta = self._s3_client.meta
            # botocore has no public accessor for a client's credentials; the signer holds them.
            credentials = self._s3_client._request_signer._credentials
            frozen = credentials.get_frozen_credentials() if credentials is not None else None
            verify = getattr(getattr(self._s3_client, "_endpoint", None), "http_session", None)
            client = (
                meta.region_name,
                meta.endpoint_url,
                getattr(verify, "_verify", None),
                meta.config,
                (frozen.access_key, frozen.secret_key, frozen.token) if frozen else (None, None, None),
            )
        return StorageRecipe(client, self._expected_bucket_owner, self._bucket_owners, self._kms_key_id)

    def _fill_owner_of_transfer_cleanup(self, client: Any) -> None:
        # s3transfer aborts a failed multipart upload without the ExtraArgs it was given; a handler on this
        # client's own event system adds the owner there. Storages with the same owners share one handler.
        owners = tuple(sorted(self._bucket_owners.items()))
        client.meta.events.register(
            "before-parameter-build.s3.AbortMultipartUpload",
            functools.partial(_fill_expected_owner, dict(owners), self._expected_bucket_owner),
            unique_id=f"bedrock_batch.storage.expected_owner:{self._expected_bucket_owner}:{owners}",
        )

    def _client(self, uri: str) -> Any:
        if self._s3_client is None:
            raise ConfigError(f"{uri} is an S3 URI but no S3 client was given to Storage(s3_client=...)")
        return self._s3_client

    def expected_owner(self, bucket: str) -> str | None:
        """The account that must own ``bucket``, or ``None`` when it is not checked.

        :param bucket: an S3 bucket name.
        """
        return self._bucket_owners.get(bucket, self._expected_bucket_owner)

    def _owner_args(self, bucket: str) -> dict[str, str]:
        owner = self.expected_owner(bucket)
        return {"ExpectedBucketOwner": owner} if owner else {}

    def _write_args(self, bucket: str) -> dict[str, str]:
        """Extra arguments of a write: the owner, and SSE-KMS with the key.

        boto3 passes all of them to PutObject and CreateMultipartUpload, and the owner alone to UploadPart
        and CompleteMultipartUpload (S3 encrypts the parts with the upload's key).
        """
        args = self._owner_args(bucket)
        if self._kms_key_id:
            args.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=self._kms_key_id)
        return args

    def _denied(self, bucket: str, code: str) -> str:
        """A hint for a refused request: S3 answers 403 when the bucket's owner is not the expected one."""
        owner = self.expected_owner(bucket)
        if owner and code in ("AccessDenied", "403", "Forbidden"):
            return f" (or s3://{bucket} is not owned by the expected account {owner})"
        return ""

    # -- listing -----------------------------------------------------------------------------------------

    def list_objects(self, uri: str) -> Iterator[StoredObject]:
        """Objects under ``uri`` in key order (byte order of the UTF-8 names, as S3 lists them).

        ``uri`` may name one object or a prefix / directory; ``s3://b/calls`` means the prefix ``calls/``
        unless an object with exactly that key exists and nothing is under ``calls/``.

        :param uri: S3 URI or local path.
        :raises StorageReadError: when nothing exists at ``uri`` or it cannot be listed.
        """
        if is_s3_uri(uri):
            yield from self._list_s3(uri)
        else:
            yield from self._list_local(uri)

    def _list_s3(self, uri: str) -> Iterator[StoredObject]:
        client = self._client(uri)
        bucket, key = split_s3_uri(uri)
        prefix = key if not key or key.endswith("/") else key + "/"
        found = False
        try:
            paginator = client.get_paginator("list_objects_v2")
            pages = paginator.paginate(
                Bucket=bucket,
                Prefix=prefix,
                PaginationConfig={"PageSize": LIST_PAGE_SIZE},
                **self._owner_args(bucket),
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    if item["Key"].endswith("/"):
                        continue  # zero-byte "folder" markers made by the console
                    found = True
                    yield StoredObject(
                        uri=f"{S3_SCHEME}{bucket}/{item['Key']}",
                        name=item["Key"][len(prefix) :],
                        size=int(item["Size"]),
                    )
            if found or prefix == key:
                if not found:
                    raise StorageReadError(f"no objects under {uri}; check the bucket and prefix")
                return
            head = client.head_object(Bucket=bucket, Key=key, **self._owner_args(bucket))
        except ClientError as exc:
            code = error_code(exc, "Unknown")
            if code in ("404", "NoSuchKey", "NotFound"):
                raise StorageReadError(
                    f"nothing at {uri}: no object with that key and none under {prefix!r}"
                ) from exc
            raise StorageReadError(
                f"cannot list {uri}: {code}; check the bucket name and s3:ListBucket access"
                f"{self._denied(bucket, code)}"
            ) from exc
        yield StoredObject(uri=uri, name=key.rsplit("/", 1)[-1], size=int(head["ContentLength"]))

    def _list_local(self, uri: str) -> Iterator[StoredObject]:
        root = Path(path_of(uri))
        if root.is_file():
            yield StoredObject(uri=str(root), name=root.name, size=root.stat().st_size)
            return
        if not root.is_dir():
            raise StorageReadError(f"nothing at {uri}: no such file or directory")
        yield from _walk_sorted(root, "")

    # -- reading -----------------------------------------------------------------------------------------

    def open_read(self, uri: str, start: int = 0) -> IO[bytes]:
        """Open ``uri`` for a buffered, forward-only binary read; close it when done.

        :param uri: S3 URI or local path.
        :param start: first byte to read (S3: a ranged GET from there to the end).
        :raises StorageReadError: when the object does not exist or cannot be read.
        """
        if not is_s3_uri(uri):
            try:
                stream = open(path_of(uri), "rb", buffering=COPY_CHUNK_BYTES)  # noqa: SIM115 - returned
            except OSError as exc:
                raise StorageReadError(f"cannot read {uri}: {exc.strerror}") from exc
            if start:
                stream.seek(start)
            return stream
        bucket, key = split_s3_uri(uri)
        ranged = {"Range": f"bytes={start}-"} if start else {}
        try:
            body = self._client(uri).get_object(Bucket=bucket, Key=key, **ranged, **self._owner_args(bucket))[
                "Body"
            ]
        except ClientError as exc:
            code = error_code(exc, "Unknown")
            raise StorageReadError(f"cannot read {uri}: {code}{self._denied(bucket, code)}") from exc
        return io.BufferedReader(_StreamingBodyReader(body, uri), buffer_size=COPY_CHUNK_BYTES)

    def open_seekable(self, uri: str) -> IO[bytes]:
        """Open ``uri`` for random-access reads (S3: ranged GETs); close it when done.

        :param uri: S3 URI or local path.
        :raises StorageReadError: when the object does not exist or cannot be read.
        """
        if not is_s3_uri(uri):
            return self.open_read(uri)
        bucket, key = split_s3_uri(uri)
        try:
            head = self._client(uri).head_object(Bucket=bucket, Key=key, **self._owner_args(bucket))
        except ClientError as exc:
            code = error_code(exc, "Unknown")
            raise StorageReadError(f"cannot read {uri}: {code}{self._denied(bucket, code)}") from exc
        raw = _S3RangeReader(
            self._client(uri), bucket, key, int(head["ContentLength"]), self._owner_args(bucket)
        )
        return io.BufferedReader(raw, buffer_size=SEEKABLE_BUFFER_BYTES)

    # -- writing -----------------------------------------------------------------------------------------

    def write_file(self, local_path: str | os.PathLike[str], uri: str) -> None:
        """Copy a local file to ``uri`` (S3: multipart upload for large files), replacing what is there at
        once: a reader sees the old object or the new one, never a part (S3: a PUT or a completed multipart
        upload; local: a copy renamed over the target).

        :param local_path: the file to copy.
        :param uri: destination S3 URI or local path; local parent directories are created.
        :raises StorageWriteError: when the destination cannot be written.
        """
        if not is_s3_uri(uri):
            target = path_of(uri)
            if Path(local_path).resolve() == Path(target).resolve():
                return
            # Copied beside the target, then renamed over it: a reader sees the old file or the new one.
            partial = Path(target).with_name(f".{Path(target).name}.{uuid.uuid4().hex}.partial")
            try:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(local_path, partial)
                os.replace(partial, target)
            except OSError as exc:
                partial.unlink(missing_ok=True)
                raise StorageWriteError(f"cannot write {uri}: {exc.strerror}") from exc
            return
        bucket, key = split_s3_uri(uri)
        try:
            self._client(uri).upload_file(
                os.fspath(local_path),
                bucket,
                key,
                ExtraArgs=self._write_args(bucket),
                Config=_transfer_config(),
            )
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise StorageWriteError(self._write_failed(uri, bucket, exc)) from exc

    def write_range(
        self, local_path: str | os.PathLike[str] | SegmentedFile, offset: int, length: int, uri: str
    ) -> str:
        """Copy ``length`` bytes of a local file, starting at ``offset``, to ``uri``; return their sha256.

        The bytes stream through in chunks (S3: multipart upload), so the range is never held in memory;
        the digest is computed on the same pass.

        :param local_path: the file to read from, or a :class:`SegmentedFile` (offsets are then logical).
        :param offset: first byte to copy.
        :param length: number of bytes to copy.
        :param uri: destination S3 URI or local path; local parent directories are created.
        :returns: hex sha256 of the copied bytes.
        :raises StorageWriteError: when the destination cannot be written or the source is too short.
        """
        if isinstance(local_path, SegmentedFile):
            pieces = local_path.pieces(offset, length)
        else:
            pieces = [FileSegment(os.fspath(local_path), offset, length)]
        if not is_s3_uri(uri):
            return _write_range_local(pieces, path_of(uri))
        with _HashingRangeReader(pieces) as reader:
            self._upload_stream(reader, uri)
            return reader.sha256.hexdigest()

    def delete_objects(self, uris: Sequence[str]) -> None:
        """Delete objects; ones already gone are fine (S3: batches of 1,000 keys per request).

        :param uris: S3 URIs or local paths of files.
        :raises StorageWriteError: when an object cannot be deleted (e.g. no s3:DeleteObject access).
        """
        by_bucket: dict[str, list[str]] = {}
        for uri in uris:
            if is_s3_uri(uri):
                bucket, key = split_s3_uri(uri)
                by_bucket.setdefault(bucket, []).append(key)
                continue
            try:
                Path(path_of(uri)).unlink(missing_ok=True)
            except OSError as exc:
                raise StorageWriteError(f"cannot delete {uri}: {exc.strerror}") from exc
        for bucket, keys in by_bucket.items():
            client = self._client(f"{S3_SCHEME}{bucket}")
            for start in range(0, len(keys), _DELETE_BATCH_KEYS):
                batch = [{"Key": key} for key in keys[start : start + _DELETE_BATCH_KEYS]]
                try:
                    response = client.delete_objects(
                        Bucket=bucket, Delete={"Objects": batch, "Quiet": True}, **self._owner_args(bucket)
                    )
                except (ClientError, BotoCoreError) as exc:
                    code = error_code(exc, "Unknown") if isinstance(exc, ClientError) else ""
                    raise StorageWriteError(
                        f"cannot delete objects in s3://{bucket}: {exc}{self._denied(bucket, code)}"
                    ) from exc
                errors = response.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise StorageWriteError(
                        f"cannot delete {len(errors)} object(s) in s3://{bucket}, e.g. {first.get('Key')}: "
                        f"{first.get('Code')}; check s3:DeleteObject access"
                    )

    def _upload_stream(self, stream: io.RawIOBase, uri: str) -> None:
        bucket, key = split_s3_uri(uri)
        try:
            self._client(uri).upload_fileobj(
                stream, bucket, key, ExtraArgs=self._write_args(bucket), Config=_transfer_config()
            )
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise StorageWriteError(self._write_failed(uri, bucket, exc)) from exc

    def _write_failed(self, uri: str, bucket: str, exc: Exception) -> str:
        # upload_file wraps a ClientError in S3UploadFailedError; its text still carries the code.
        code = error_code(exc, "Unknown") if isinstance(exc, ClientError) else ""
        if not code and "AccessDenied" in str(exc):
            code = "AccessDenied"
        access = "s3:PutObject access" + (" and kms:GenerateDataKey on the key" if self._kms_key_id else "")
        return f"cannot upload to {uri}: {exc}; check {access}{self._denied(bucket, code)}"


def _write_range_local(pieces: Sequence[FileSegment], path: str) -> str:
    # Write beside the target and rename, so a crash never leaves a truncated file under the final name.
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb", buffering=0) as dst:
            for piece in pieces:
                with open(piece.path, "rb", buffering=0) as src:
                    available = os.fstat(src.fileno()).st_size - piece.offset
                    if available < piece.length:
                        raise StorageWriteError(
                            f"{piece.path} ended {piece.length - available:,} bytes before the end of range "
                            f"{piece.offset:,}+{piece.length:,}; the file changed after it was planned"
                        )
                    written = dst.tell()
                    # Hashed on a copy: a kernel copy refused midway must not leave its part in the digest.
                    attempt = digest.copy()
                    try:
                        _copy_in_kernel(src.fileno(), dst.fileno(), piece.offset, piece.length, attempt)
                        digest = attempt
                        continue
                    except OSError as exc:
                        if exc.errno not in _NO_KERNEL_COPY:
                            raise
                        os.ftruncate(dst.fileno(), written)
                        os.lseek(dst.fileno(), written, os.SEEK_SET)
                        _copy_through_buffer(src, dst, piece.offset, piece.length, digest)
        os.replace(partial, target)
    except OSError as exc:
        raise StorageWriteError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return digest.hexdigest()


# copy_file_range is missing (not Linux), or refuses this pair of files (old kernels across file systems).
_NO_KERNEL_COPY = frozenset({errno.ENOSYS, errno.EXDEV, errno.EOPNOTSUPP, errno.EINVAL})


def _copy_in_kernel(src: int, dst: int, offset: int, length: int, digest: Any) -> None:
    """Copy with ``copy_file_range`` and hash through read-only mmap windows: no byte is copied into Python.

    About a third faster than read-then-write for local shards; each window is unmapped once hashed, so
    resident memory stays one window, not the whole spool.
    """
    if not hasattr(os, "copy_file_range"):
        raise OSError(errno.ENOSYS, "copy_file_range is not available")
    position, end = offset, offset + length
    while position < end:
        start = position - position % mmap.ALLOCATIONGRANULARITY
        stop = min(start + MMAP_WINDOW_BYTES, end)
        with (
            mmap.mmap(src, stop - start, offset=start, access=mmap.ACCESS_READ) as window,
            memoryview(window) as view,
            view[position - start :] as part,
        ):
            digest.update(part)
        while position < stop:
            copied = os.copy_file_range(src, dst, stop - position, position)
            if not copied:
                raise OSError(errno.EIO, "the source ended during the copy")
            position += copied


def _copy_through_buffer(src: IO[bytes], dst: IO[bytes], offset: int, length: int, digest: Any) -> None:
    src.seek(offset)
    buffer = bytearray(COPY_CHUNK_BYTES)
    view = memoryview(buffer)
    remaining = length
    while remaining:
        count = src.readinto(view[: min(COPY_CHUNK_BYTES, remaining)])  # type: ignore[attr-defined]
        if not count:
            raise OSError(errno.EIO, "the source ended during the copy")
        digest.update(view[:count])
        dst.write(view[:count])
        remaining -= count


def _walk_sorted(directory: Path, relative: str) -> Iterator[StoredObject]:
    # Sorting a directory's entries with "/" appended to sub-directory names yields exactly the byte order
    # of the full relative paths, i.e. the order S3 lists the same tree in, one directory in memory at a time.
    # An entry removed or renamed between the scan and its stat is left out, as S3 would not list it.
    entries = []
    try:
        with os.scandir(directory) as scan:
            for entry in scan:
                is_dir = entry.is_dir()
                sort_key = (entry.name + "/" if is_dir else entry.name).encode("utf-8", "surrogateescape")
                entries.append((sort_key, entry.name, is_dir))
    except FileNotFoundError:
        return
    entries.sort()
    for _, name, is_dir in entries:
        path = directory / name
        if is_dir:
            yield from _walk_sorted(path, f"{relative}{name}/")
            continue
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        yield StoredObject(uri=str(path), name=f"{relative}{name}", size=size)


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD_BYTES,
        multipart_chunksize=MULTIPART_CHUNK_BYTES,
        max_concurrency=MULTIPART_CONCURRENCY,
    )
    # Not a boto3 argument, but an attribute of the s3transfer config boto3 builds on.
    config.max_in_memory_upload_chunks = MULTIPART_CONCURRENCY
    return config
