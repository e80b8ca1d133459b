"""Shard planning (properties and quota edge cases) and shard writing with content fingerprints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bedrock_batch.config import GB, QuotaConfig, quotas_from_service_quotas
from bedrock_batch.errors import BelowMinimumError, ConfigError, PlanError
from bedrock_batch.split import ShardManifest, ShardPlan, plan_shards, shard_fingerprint, write_shards
from bedrock_batch.storage import Storage

ON_DEMAND = QuotaConfig(below_minimum="on_demand")


def check_plan(plan: ShardPlan, sizes: list[int] | np.ndarray, quotas: QuotaConfig) -> None:
    """Every limit holds, and every record is in exactly one file of one shard or in the fallback."""
    sizes = np.asarray(sizes, dtype=np.int64)
    prefix = np.concatenate([[0], np.cumsum(sizes)])
    placed = []
    for number, shard in enumerate(plan.shards, 1):
        span = shard.span
        assert shard.number == number
        assert quotas.min_records_per_job <= span.records <= quotas.max_records_per_job
        assert span.length <= quotas.max_job_bytes
        assert (span.offset, span.length) == (prefix[span.start], prefix[span.stop] - prefix[span.start])
        assert shard.files
        assert shard.files[0].start == span.start
        assert shard.files[-1].stop == span.stop
        for before, after in zip(shard.files, shard.files[1:], strict=False):
            assert before.stop == after.start
        for file in shard.files:
            assert 1 <= file.records <= quotas.max_records_per_file
            assert file.length <= quotas.max_file_bytes
            assert (file.offset, file.length) == (prefix[file.start], prefix[file.stop] - prefix[file.start])
        placed.append((span.start, span.stop))
    for fallback in plan.on_demand:
        assert fallback.records >= 1
        assert (fallback.offset, fallback.length) == (
            prefix[fallback.start],
            prefix[fallback.stop] - prefix[fallback.start],
        )
        placed.append((fallback.start, fallback.stop))
    ordinals = sorted(o for start, stop in placed for o in range(start, stop))
    assert ordinals == list(range(len(sizes)))
    assert (plan.records, plan.total_bytes) == (len(sizes), int(prefix[-1]))


@st.composite
def quotas_and_sizes(draw: st.DrawFn) -> tuple[QuotaConfig, list[int]]:
    min_job = draw(st.integers(1, 6))
    max_job = draw(st.integers(min_job, 15))
    max_file_bytes = draw(st.integers(5, 60))
    quotas = QuotaConfig(
        min_records_per_job=min_job,
        max_records_per_job=max_job,
        max_records_per_file=draw(st.integers(1, 12)),
        max_file_bytes=max_file_bytes,
        max_job_bytes=draw(st.integers(max_file_bytes, 200)),
        max_record_bytes=max_file_bytes,
        below_minimum="on_demand",
    )
    sizes = draw(st.lists(st.integers(1, max_file_bytes), max_size=120))
    return quotas, sizes


class TestPlanProperties:
    @settings(max_examples=400, deadline=None)
    @given(quotas_and_sizes())
    def test_every_plan_respects_every_limit_and_places_every_record_once(self, case):
        quotas, sizes = case
        check_plan(plan_shards(sizes, quotas), sizes, quotas)

    @settings(max_examples=200, deadline=None)
    @given(quotas_and_sizes())
    def test_fail_policy_raises_exactly_when_records_would_go_on_demand(self, case):
        quotas, sizes = case
        plan = plan_shards(sizes, quotas)
        if plan.on_demand:
            with pytest.raises(BelowMinimumError):
                plan_shards(sizes, quotas.replace(below_minimum="fail"))
        else:
            assert plan_shards(sizes, quotas.replace(below_minimum="fail")) == plan

    @settings(max_examples=300, deadline=None)
    @given(
        min_job=st.integers(1, 8),
        extra=st.integers(0, 12),
        count=st.integers(0, 300),
    )
    def test_count_limited_plans_are_optimal_and_balanced(self, min_job, extra, count):
        # When bytes never bind, as few records as possible go on demand and shard sizes differ by at most 1.
        max_job = min_job + extra
        quotas = QuotaConfig(
            min_records_per_job=min_job, max_records_per_job=max_job, below_minimum="on_demand"
        )
        plan = plan_shards([10] * count, quotas)
        best_placed = min(count, (count // min_job) * max_job)
        assert plan.on_demand_records == count - best_placed
        if not plan.on_demand and plan.shards:
            counts = [s.span.records for s in plan.shards]
            assert max(counts) - min(counts) <= 1
            assert len(counts) == -(-count // max_job)

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(quotas_and_sizes())
    def test_plan_survives_json(self, case):
        quotas, sizes = case
        plan = plan_shards(sizes, quotas)
        assert ShardPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


class TestPlanEdgeCases:
    def test_zero_records_is_an_empty_plan(self):
        for quotas in (QuotaConfig(), ON_DEMAND):
            plan = plan_shards([], quotas)
            assert (plan.shards, plan.on_demand, plan.records) == ((), (), 0)

    @pytest.mark.parametrize("count", [1, 99])
    def test_below_the_minimum_fails_with_an_actionable_message(self, count):
        with pytest.raises(BelowMinimumError) as info:
            plan_shards([500] * count, QuotaConfig())
        message = str(info.value)
        assert f"only {count} records" in message
        assert "minimum of 100" in message
        assert "below_minimum='on_demand'" in message

    @pytest.mark.parametrize("count", [1, 99])
    def test_below_the_minimum_goes_on_demand_when_configured(self, count):
        plan = plan_shards([500] * count, ON_DEMAND)
        assert plan.shards == ()
        assert [(r.start, r.stop, r.length) for r in plan.on_demand] == [(0, count, 500 * count)]

    @pytest.mark.parametrize(
        ("count", "expected"),
        [
            (100, [100]),
            (50_000, [50_000]),
            (50_001, [25_001, 25_000]),
            (120_001, [40_001, 40_000, 40_000]),
            (1_000_000, [50_000] * 20),
        ],
    )
    def test_default_quotas_give_balanced_shards(self, count, expected):
        plan = plan_shards(np.full(count, 2_000, dtype=np.int64), QuotaConfig())
        assert [s.span.records for s in plan.shards] == expected
        assert plan.on_demand == ()
        check_plan(plan, np.full(count, 2_000), QuotaConfig())

    def test_remainder_that_cannot_form_a_job(self):
        quotas = QuotaConfig(max_records_per_job=150)
        with pytest.raises(BelowMinimumError, match=r"10 of 160 records .* Raise max_records_per_job"):
            plan_shards([100] * 160, quotas)
        plan = plan_shards([100] * 160, quotas.replace(below_minimum="on_demand"))
        assert [s.span.records for s in plan.shards] == [150]
        assert [(r.start, r.stop) for r in plan.on_demand] == [(150, 160)]

    def test_record_near_one_gigabyte_gets_its_own_file(self):
        sizes = [2_000] * 150 + [GB - 1_000] + [2_000] * 150
        plan = plan_shards(sizes, QuotaConfig())
        check_plan(plan, sizes, QuotaConfig())
        [shard] = plan.shards
        assert [f.records for f in shard.files] == [150, 1, 150]

    def test_large_records_are_spread_so_no_job_exceeds_five_gigabytes(self):
        # Six 0.9 GB records (5.4 GB) cannot share one job, but fit in two.
        sizes = [1_000] * 300 + [900_000_000] * 6 + [1_000] * 300
        plan = plan_shards(sizes, QuotaConfig())
        check_plan(plan, sizes, QuotaConfig())
        assert len(plan.shards) == 2

    def test_records_too_large_to_share_a_job_go_on_demand(self):
        # 200 records of 0.9 GB: 100 in a row are 90 GB, far over the 5 GB job limit. Only the five at each
        # edge can join a job with 95 small records.
        sizes = [1_000] * 300 + [900_000_000] * 200 + [1_000] * 300
        with pytest.raises(BelowMinimumError, match="190 of them sit among records so large"):
            plan_shards(sizes, QuotaConfig())
        plan = plan_shards(sizes, ON_DEMAND)
        check_plan(plan, sizes, ON_DEMAND)
        assert [(r.start, r.stop) for r in plan.on_demand] == [(305, 495)]

    def test_file_limits_split_a_shard_into_balanced_files(self):
        quotas = QuotaConfig(
            max_records_per_file=1_000, max_file_bytes=10_000_000, max_record_bytes=10_000_000
        )
        sizes = [4_000] * 5_000
        [shard] = plan_shards(sizes, quotas).shards
        assert [f.records for f in shard.files] == [1_000] * 5
        big = plan_shards([40_000] * 5_000, quotas).shards[0]
        assert [f.records for f in big.files] == [250] * 20

    def test_job_byte_limit_adds_shards(self):
        quotas = QuotaConfig(max_job_bytes=2 * GB, max_file_bytes=GB, max_record_bytes=GB)
        sizes = np.full(30_000, 200_000, dtype=np.int64)  # 6 GB in all
        plan = plan_shards(sizes, quotas)
        check_plan(plan, sizes, quotas)
        assert len(plan.shards) == 3

    def test_invalid_sizes(self):
        with pytest.raises(PlanError, match="at least 1 byte"):
            plan_shards([10, 0, 10], QuotaConfig())
        with pytest.raises(PlanError, match="more than one input file may hold"):
            plan_shards([10, 2 * GB], QuotaConfig())


def make_spool(path: Path, count: int) -> list[int]:
    lines = [b'{"recordId":"%011d","modelInput":{"prompt":"p%d"}}\n' % (i, i) for i in range(count)]
    path.write_bytes(b"".join(lines))
    return [len(line) for line in lines]


class TestWriteShards:
    QUOTAS = QuotaConfig(
        min_records_per_job=10, max_records_per_job=40, max_records_per_file=15, below_minimum="on_demand"
    )

    def test_files_hold_exactly_their_ranges_and_digests(self, tmp_path):
        spool = tmp_path / "records.jsonl"
        sizes = make_spool(spool, 105)
        plan = plan_shards(sizes, self.QUOTAS)
        manifest = write_shards(spool, plan, str(tmp_path / "staging"))
        data = spool.read_bytes()
        assert [s.input_uri for s in manifest.shards] == [
            str(tmp_path / "staging" / f"shard-{n:04d}") + "/" for n in (1, 2, 3)
        ]
        written = b""
        for shard in manifest.shards:
            for file in shard.files:
                content = Path(file.uri).read_bytes()
                assert content == data[file.span.offset : file.span.offset + file.span.length]
                assert file.sha256 == hashlib.sha256(content).hexdigest()
                written += content
        assert written == data
        assert manifest.on_demand == ()

    def test_on_demand_records_are_written_outside_every_shard(self, tmp_path):
        spool = tmp_path / "records.jsonl"
        sizes = make_spool(spool, 45)
        plan = plan_shards(sizes, self.QUOTAS.replace(min_records_per_job=30))  # 40 in a shard, 5 left over
        manifest = write_shards(spool, plan, str(tmp_path / "staging"))
        [fallback] = manifest.on_demand
        assert Path(fallback.uri).parent.name == "on-demand"
        assert Path(fallback.uri).read_bytes().count(b"\n") == 5

    def test_fingerprint_depends_on_content_not_destination(self, tmp_path):
        spool = tmp_path / "records.jsonl"
        plan = plan_shards(make_spool(spool, 60), self.QUOTAS)
        first = write_shards(spool, plan, str(tmp_path / "a"))
        again = write_shards(spool, plan, str(tmp_path / "a"))
        elsewhere = write_shards(spool, plan, str(tmp_path / "b"))
        assert [s.fingerprint for s in first.shards] == [s.fingerprint for s in again.shards]
        assert [s.fingerprint for s in first.shards] == [s.fingerprint for s in elsewhere.shards]
        assert len({s.fingerprint for s in first.shards}) == len(first.shards)
        shard = first.shards[0]
        expected = shard_fingerprint([(Path(f.uri).name, f.sha256) for f in shard.files])
        assert shard.fingerprint == expected

        changed = tmp_path / "changed.jsonl"
        changed.write_bytes(spool.read_bytes().replace(b'"p0"', b'"q0"'))
        assert write_shards(changed, plan, str(tmp_path / "c")).shards[0].fingerprint != shard.fingerprint

    def test_manifest_is_json_metadata(self, tmp_path):
        spool = tmp_path / "records.jsonl"
        plan = plan_shards(make_spool(spool, 45), self.QUOTAS)
        manifest = write_shards(spool, plan, str(tmp_path / "staging"))
        data = json.loads(json.dumps(manifest.to_dict()))
        assert ShardManifest.from_dict(data) == manifest
        first = data["shards"][0]
        # What the submit stage maps over: number, input prefix, fingerprint and counts.
        assert (first["shard"], first["records"], first["input_uri"]) == (1, 23, manifest.shards[0].input_uri)
        assert first["fingerprint"] == manifest.shards[0].fingerprint

    def test_spool_that_does_not_match_the_plan(self, tmp_path):
        spool = tmp_path / "records.jsonl"
        plan = plan_shards(make_spool(spool, 45), self.QUOTAS)
        with spool.open("ab") as stream:
            stream.write(b"{}\n")
        with pytest.raises(PlanError, match="plan again"):
            write_shards(spool, plan, str(tmp_path / "staging"))

    def test_foreign_files_in_a_shard_prefix_are_refused(self, tmp_path):
        spool = tmp_path / "records.jsonl"
        plan = plan_shards(make_spool(spool, 45), self.QUOTAS)
        stale = tmp_path / "staging" / "shard-0001" / "part-0009.jsonl"
        stale.parent.mkdir(parents=True)
        stale.write_bytes(b"{}\n")
        with pytest.raises(PlanError, match=r"part-0009\.jsonl.*fresh destination"):
            write_shards(spool, plan, str(tmp_path / "staging"))

    @pytest.mark.integration
    def test_writes_to_s3(self, tmp_path, s3_client, s3_bucket):
        spool = tmp_path / "records.jsonl"
        plan = plan_shards(make_spool(spool, 45), self.QUOTAS.replace(min_records_per_job=30))
        manifest = write_shards(spool, plan, f"s3://{s3_bucket}/run-1", storage=Storage(s3_client))
        assert manifest.shards[0].input_uri == f"s3://{s3_bucket}/run-1/shard-0001/"
        keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
        assert keys == [
            "run-1/on-demand/part-0001.jsonl",
            "run-1/shard-0001/part-0001.jsonl",
            "run-1/shard-0001/part-0002.jsonl",
            "run-1/shard-0001/part-0003.jsonl",
        ]
        body = s3_client.get_object(Bucket=s3_bucket, Key="run-1/shard-0001/part-0002.jsonl")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == manifest.shards[0].files[1].sha256
        # Rewriting the same plan to the same prefix is allowed: same files, same fingerprints.
        again = write_shards(spool, plan, f"s3://{s3_bucket}/run-1", storage=Storage(s3_client))
        assert again == manifest


class FakeServiceQuotas:
    """A service-quotas client answering ListServiceQuotas in two pages, shaped like the real API."""

    def __init__(self, quotas: list[tuple[str, float]]) -> None:
        items = [
            {
                "ServiceCode": "bedrock",
                "QuotaName": name,
                "QuotaCode": f"L-{i:08X}",
                "Value": value,
                "Adjustable": True,
            }
            for i, (name, value) in enumerate(quotas)
        ]
        self.pages = [{"Quotas": items[: len(items) // 2]}, {"Quotas": items[len(items) // 2 :]}]

    def get_paginator(self, operation: str):
        assert operation == "list_service_quotas"
        return self

    def paginate(self, ServiceCode: str):
        assert ServiceCode == "bedrock"
        return iter(self.pages)


class TestServiceQuotas:
    QUOTAS = [
        ("Records per batch inference job for Claude 3 Haiku", 100_000.0),
        ("Minimum number of records per batch inference job for Claude 3 Haiku", 100.0),
        ("Records per input file per batch inference job for Claude 3 Haiku", 20_000.0),
        ("Batch inference input file size (in GB) for Claude 3 Haiku", 0.5),
        ("Batch inference job size (in GB) for Claude 3 Haiku", 5.0),
        ("Sum of in-progress and submitted batch inference jobs using a base model for Claude 3 Haiku", 3.0),
        ("Records per batch inference job for Claude 3.5 Sonnet", 25_000.0),
        ("On-demand InvokeModel tokens per minute for Claude 3 Haiku", 2_000_000.0),
    ]

    def test_applied_values_replace_the_defaults_for_that_model_only(self):
        quotas = quotas_from_service_quotas(FakeServiceQuotas(self.QUOTAS), "Claude 3 Haiku")
        assert quotas == QuotaConfig(
            min_records_per_job=100,
            max_records_per_job=100_000,
            max_records_per_file=20_000,
            max_file_bytes=GB // 2,
            max_job_bytes=5 * GB,
            max_concurrent_jobs=3,
            max_record_bytes=GB // 2,
        )
        # The planner then honours them: 60,000 records fit one job but need three files.
        [shard] = plan_shards([1_000] * 60_000, quotas).shards
        assert [f.records for f in shard.files] == [20_000] * 3

    def test_base_settings_survive_where_the_api_is_silent(self):
        base = QuotaConfig(below_minimum="on_demand", max_records_per_job=80_000)
        quotas = quotas_from_service_quotas(
            FakeServiceQuotas(self.QUOTAS[-2:]), "Claude 3.5 Sonnet", base=base
        )
        assert quotas.max_records_per_job == 25_000
        assert (quotas.below_minimum, quotas.max_file_bytes) == ("on_demand", GB)

    def test_unknown_model_name(self):
        with pytest.raises(ConfigError, match="no batch inference quota for model name 'Claude 9'"):
            quotas_from_service_quotas(FakeServiceQuotas(self.QUOTAS), "Claude 9")
