"""A run's staged files: where they live, shard descriptors, stale files of an earlier plan, outputs, and
staging both rounds of a run."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from bedrock_batch.config import QuotaConfig
from bedrock_batch.errors import ConfigError, SchemaError, TemplateError
from bedrock_batch.models import InferenceParams, family_for
from bedrock_batch.prompts import load_template
from bedrock_batch.replies import ReplyFormat
from bedrock_batch.results import JobOutput
from bedrock_batch.sources import SourceSpec
from bedrock_batch.split import plan_shards, write_shards
from bedrock_batch.staging import (
    ON_DEMAND_LABEL,
    count_lines,
    is_empty_partition,
    job_outputs,
    job_results,
    on_demand_output_uri,
    output_complete,
    remove_stale_files,
    run_outputs,
    run_prefix_for,
    shard_descriptors,
    stage_retry_round,
    stage_source,
)
from bedrock_batch.storage import Storage
from tests.conftest import REPO

CALL_CENTER_SCHEMA = REPO / "include" / "pipelines" / "call_center_summarization" / "reply_schema.json"

QUOTAS = QuotaConfig(
    min_records_per_job=10, max_records_per_job=40, max_records_per_file=15, below_minimum="on_demand"
)


def spool(path: Path, count: int) -> list[int]:
    lines = [b'{"recordId":"%011d","modelInput":{"prompt":"p%d"}}\n' % (i, i) for i in range(count)]
    path.write_bytes(b"".join(lines))
    return [len(line) for line in lines]


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class TestRunPrefix:
    def test_dag_and_date_under_the_staging_root(self):
        assert run_prefix_for("s3://staging/batch/", "call_center", "2026-11-21") == (
            "s3://staging/batch/call_center/2026-11-21"
        )

    def test_a_prefix_bedrock_would_refuse_is_an_error(self):
        with pytest.raises(ConfigError, match="not a valid Bedrock job S3 URI"):
            run_prefix_for("s3://staging/ds=2026-11-21/", "call_center", "2026-11-21")

    def test_local_paths_are_not_checked(self, tmp_path):
        assert run_prefix_for(str(tmp_path / "a=b"), "dag", "2026-11-21") == str(
            tmp_path / "a=b/dag/2026-11-21"
        )


class TestShardDescriptors:
    def test_one_descriptor_per_written_shard(self, tmp_path):
        sizes = spool(tmp_path / "spool.jsonl", 85)
        manifest = write_shards(tmp_path / "spool.jsonl", plan_shards(sizes, QUOTAS), str(tmp_path / "input"))
        shards = shard_descriptors(manifest, str(tmp_path / "output"), round_number=2)
        assert [s["shard"] for s in shards] == [1, 2, 3]
        assert sum(s["records"] for s in shards) == 85
        assert {s["round"] for s in shards} == {2}
        first = shards[0]
        assert first["input_uri"] == manifest.shards[0].input_uri
        assert first["output_uri"] == str(tmp_path / "output" / "shard-0001") + "/"
        assert first["fingerprint"] == manifest.shards[0].fingerprint
        assert first["bytes"] == manifest.shards[0].span.length


class TestRemoveStaleFiles:
    def test_removes_only_what_the_new_plan_does_not_write(self, tmp_path):
        storage = Storage()
        destination = tmp_path / "input"
        sizes = spool(tmp_path / "old.jsonl", 100)  # 3 shards of 2-3 files, no on-demand records
        write_shards(tmp_path / "old.jsonl", plan_shards(sizes, QUOTAS), str(destination))
        before = files_under(destination)
        new_sizes = spool(tmp_path / "new.jsonl", 45)  # 2 shards
        new_plan = plan_shards(new_sizes, QUOTAS)
        removed = remove_stale_files(storage, str(destination), new_plan)
        kept = files_under(destination)
        assert removed == len(before) - len(kept) > 0
        assert all(name.startswith(("shard-0001/", "shard-0002/")) for name in kept)
        # The new plan can be written where the old one was: no foreign file is left in its prefixes.
        write_shards(tmp_path / "new.jsonl", new_plan, str(destination))

    def test_nothing_staged_yet_is_nothing_to_remove(self, tmp_path):
        plan = plan_shards(spool(tmp_path / "s.jsonl", 20), QUOTAS)
        assert remove_stale_files(Storage(), str(tmp_path / "nowhere"), plan) == 0


class TestPartitionAndOutputs:
    def test_a_partition_of_markers_only_is_empty(self, tmp_path):
        (tmp_path / "_SUCCESS").write_text("")
        (tmp_path / ".done").write_text("")
        assert is_empty_partition(Storage(), str(tmp_path))
        (tmp_path / "calls.csv").write_text("id,text\n")
        assert not is_empty_partition(Storage(), str(tmp_path))

    def test_count_lines_skips_blank_lines(self, tmp_path):
        (tmp_path / "part.jsonl").write_text('{"a": 1}\n\n{"a": 2}\n  \n')
        assert count_lines(Storage(), str(tmp_path / "part.jsonl")) == 2

    def test_output_complete_needs_the_file_and_every_line(self, tmp_path):
        target = tmp_path / "part-0001.jsonl.out"
        assert not output_complete(Storage(), str(target), 2)
        target.write_text('{"recordId": "a"}\n')
        assert not output_complete(Storage(), str(target), 2)
        target.write_text('{"recordId": "a"}\n{"recordId": "b"}\n')
        assert output_complete(Storage(), str(target), 2)

    def test_on_demand_output_sits_beside_the_others_under_the_input_name(self):
        assert on_demand_output_uri(
            "s3://b/run/on-demand-output/", "s3://b/run/input/on-demand/part-0001.jsonl"
        ) == ("s3://b/run/on-demand-output/part-0001.jsonl.out")

    def test_job_outputs_of_a_round(self):
        jobs = [
            {"job_arn": "arn:1", "output_uri": "s3://b/out/shard-0001/abc/"},
            {"job_arn": "arn:2", "output_uri": None},  # not waited for: nothing to read
        ]
        outputs = job_outputs(jobs, {"output_uri": "s3://b/od/", "records": 3}, ON_DEMAND_LABEL)
        assert outputs == [
            JobOutput(label="arn:1", uri="s3://b/out/shard-0001/abc/"),
            JobOutput(label="on-demand", uri="s3://b/od/"),
        ]
        assert job_outputs(None, {"output_uri": None}, ON_DEMAND_LABEL) == []

    def test_run_outputs_in_the_order_the_rounds_ran(self):
        outputs = run_outputs(
            [{"job_arn": "arn:1", "output_uri": "s3://o/1/"}],
            {"output_uri": "s3://o/od/"},
            [{"job_arn": "arn:2", "output_uri": "s3://o/2/"}],
            {"output_uri": "s3://o/od-retry/"},
            {"output_uri": "s3://o/repair/"},
        )
        assert [(o.label, o.uri) for o in outputs] == [
            ("arn:1", "s3://o/1/"),
            ("on-demand", "s3://o/od/"),
            ("arn:2", "s3://o/2/"),
            ("on-demand-retry", "s3://o/od-retry/"),
            ("on-demand-repair", "s3://o/repair/"),
        ]
        assert run_outputs(None, None, repair={"output_uri": None}) == []

    def test_job_results_skip_map_indexes_without_a_result(self):
        assert job_results([{"job_arn": "a"}, None, {"job_arn": "b"}]) == [{"job_arn": "a"}, {"job_arn": "b"}]
        assert job_results(None) == []


MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


def calls(folder: Path, count: int, *, empty: int = 0) -> Path:
    folder.mkdir(parents=True)
    for n in range(count):
        text = "" if n < empty else f"Agent: thanks for calling, case {n}.\nCustomer: my order {n} is late."
        (folder / f"call-{n:04d}.txt").write_text(text)
    return folder


def stage(tmp_path: Path, source: Path, **options: object) -> dict:
    spec = options.pop("spec", None) or SourceSpec(uri=str(source), format="text", text_column="transcript")
    return dict(
        stage_source(
            Storage(),
            spec,  # type: ignore[arg-type]
            str(tmp_path / "staging" / "dag" / "2026-11-21"),
            template=options.pop("template", load_template("call_center_summary", "v1")),  # type: ignore[arg-type]
            model_id=MODEL,
            quotas=options.pop("quotas", QUOTAS),  # type: ignore[arg-type]
            params=InferenceParams(max_tokens=256),
            **options,  # type: ignore[arg-type]
        )
    )


class TestStageSource:
    def test_stages_shards_index_and_quarantine_under_the_run_prefix(self, tmp_path):
        run = stage(tmp_path, calls(tmp_path / "calls", 47, empty=2))
        prefix = tmp_path / "staging" / "dag" / "2026-11-21"
        assert (run["rows"], run["records"], run["quarantined"]) == (47, 45, 2)
        assert run["quarantine_counts"] == {"empty_text": 2}
        assert run["run_prefix"] == str(prefix)
        assert sum(shard["records"] for shard in run["shards"]) + run["on_demand_records"] == 45
        assert all(shard["round"] == 1 for shard in run["shards"])
        assert pq.read_table(run["index_uri"]).num_rows == 45
        quarantined = [orjson.loads(line) for line in Path(run["quarantine_uri"]).read_bytes().splitlines()]
        assert [q["reason"] for q in quarantined] == ["empty_text", "empty_text"]
        assert all("Agent" not in json.dumps(q) for q in quarantined)  # positions and reasons, never text
        json.dumps(run)  # the run goes to XCom as JSON

    def test_max_records_reads_only_that_many_rows(self, tmp_path):
        run = stage(tmp_path, calls(tmp_path / "calls", 30), max_records=12)
        assert (run["rows"], run["records"]) == (12, 12)

    def test_a_partition_of_markers_only_is_an_empty_run(self, tmp_path):
        (tmp_path / "calls").mkdir()
        (tmp_path / "calls" / "_SUCCESS").write_text("")
        run = stage(tmp_path, tmp_path / "calls")
        assert (run["rows"], run["records"], run["shards"], run["on_demand_uris"]) == (0, 0, [], [])

    def test_a_rerun_over_fewer_records_leaves_no_stale_shard_files(self, tmp_path):
        stage(tmp_path, calls(tmp_path / "calls", 100))
        run = stage(tmp_path, calls(tmp_path / "fewer", 45))
        staged = files_under(tmp_path / "staging" / "dag" / "2026-11-21" / "input")
        assert {name.split("/")[0] for name in staged} == {f"shard-{s['shard']:04d}" for s in run["shards"]}

    def test_the_run_records_the_prompt_columns_and_the_reply_format(self, tmp_path):
        reply = ReplyFormat.declare(CALL_CENTER_SCHEMA, model_id=MODEL, family=family_for(MODEL))
        run = stage(tmp_path, calls(tmp_path / "calls", 12), reply=reply)
        assert run["prompt_columns"] == {"transcript": "transcript"}
        assert run["output_format"] == {
            "mode": "prompt",
            "name": "call_center_summarization",
            "description": "A summary of one customer-service phone call, based on its transcript alone.",
            "strict": False,
            "prefill": True,
        }
        assert run["reply_schema"]["schema"]["properties"]["summary"]["maxSentences"] == 5
        assert ReplyFormat.from_run(json.loads(json.dumps(run))) == reply

    def test_a_source_that_does_not_fill_the_template_is_refused(self, tmp_path):
        with pytest.raises(TemplateError, match=r"fills placeholders \['text'\].*\['transcript'\]"):
            stage_source(
                Storage(),
                SourceSpec(uri=str(calls(tmp_path / "calls", 3)), format="text"),
                str(tmp_path / "run"),
                template=load_template("call_center_summary", "v1"),
                model_id=MODEL,
                quotas=QUOTAS,
                params=InferenceParams(),
            )

    @pytest.mark.parametrize("name", ["status", "Raw_Text", "agent"])
    def test_a_reply_property_named_like_another_column_is_refused(self, tmp_path, name):
        schema = {
            "type": "object",
            "properties": {name: {"type": "string"}},
            "required": [name],
            "additionalProperties": False,
        }
        reply = ReplyFormat.declare(schema, model_id=MODEL, family=family_for(MODEL))
        source = SourceSpec(
            uri=str(tmp_path), format="jsonl", text_column="transcript", passthrough_columns=("agent",)
        )
        with pytest.raises(SchemaError, match=f'reply property "{name}"') as caught:
            stage(tmp_path, tmp_path, reply=reply, spec=source)
        assert caught.value.pointer == f"/properties/{name}"

    def test_a_bedrock_source_is_split_and_uploaded_as_it_is(self, tmp_path):
        source = tmp_path / "records"
        source.mkdir()
        body = {"anthropic_version": "bedrock-2023-05-31", "messages": [{"role": "user", "content": "hi"}]}
        lines = [orjson.dumps({"recordId": f"R{n:010d}", "modelInput": body}) for n in range(45)]
        lines.insert(3, b'{"recordId": "bad", "modelInput": {}}')
        (source / "part-1.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        reply = ReplyFormat.declare(CALL_CENTER_SCHEMA, model_id=MODEL, family=None)
        run = stage(
            tmp_path, source, spec=SourceSpec(uri=str(source), format="bedrock"), template=None, reply=reply
        )
        assert (run["rows"], run["records"], run["quarantine_counts"]) == (46, 45, {"invalid_record_id": 1})
        assert "prompt_columns" not in run
        assert run["output_format"] is None
        assert run["reply_schema"]["name"] == "call_center_summarization"
        staged = [
            orjson.loads(line)
            for path in sorted((tmp_path / "staging").rglob("part-*.jsonl"))
            for line in path.read_bytes().splitlines()
        ]
        assert sorted(r["recordId"] for r in staged) == [f"R{n:010d}" for n in range(45)]
        assert pq.read_table(run["index_uri"]).column("source_key").to_pylist()[:2] == [
            "R0000000000",
            "R0000000001",
        ]


class TestStageRetryRound:
    def test_stages_the_records_lines_again_as_round_two(self, tmp_path):
        run = stage(tmp_path, calls(tmp_path / "calls", 45))
        jobs = [{"input_uri": shard["input_uri"]} for shard in run["shards"]]
        index = pq.read_table(run["index_uri"]).column("record_id").to_pylist()
        retry = stage_retry_round(Storage(), run, jobs, index[:25], QUOTAS.replace(below_minimum="fail"))
        assert retry.records == 25
        assert sum(shard["records"] for shard in retry.shards) + retry.on_demand_records == 25
        assert {shard["round"] for shard in retry.shards} == {2}
        assert all("/retry-1/input/" in shard["input_uri"] for shard in retry.shards)
        staged = [
            orjson.loads(line)["recordId"]
            for path in sorted(
                (tmp_path / "staging" / "dag" / "2026-11-21" / "retry-1" / "input").rglob("*.jsonl")
            )
            for line in path.read_bytes().splitlines()
        ]
        assert sorted(staged) == sorted(index[:25])

    def test_too_few_records_for_a_job_go_on_demand_whatever_the_policy(self, tmp_path):
        run = stage(tmp_path, calls(tmp_path / "calls", 45))
        jobs = [{"input_uri": shard["input_uri"]} for shard in run["shards"]]
        index = pq.read_table(run["index_uri"]).column("record_id").to_pylist()
        retry = stage_retry_round(Storage(), run, jobs, index[:3], QUOTAS.replace(below_minimum="fail"))
        assert (retry.shards, retry.records, retry.on_demand_records, len(retry.on_demand_uris)) == (
            [],
            3,
            3,
            1,
        )
