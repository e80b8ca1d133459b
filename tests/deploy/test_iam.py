"""The IAM templates under include/iam/: valid policies, every AWS action the library calls, nothing broader.

The library's AWS calls are found by reading its source (boto3 client methods and paginators), so a new call
that no policy grants fails here before it fails with AccessDenied on AWS.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name

from bedrock_batch.config import PipelineConfig
from bedrock_batch.hooks import BedrockBatchHook

REPO = Path(__file__).resolve().parents[2]
IAM_DIR = REPO / "include" / "iam"
CALLER_POLICY = IAM_DIR / "airflow-caller-policy.json"
TRUST_POLICY = IAM_DIR / "bedrock-service-role-trust-policy.json"
SERVICE_ROLE_POLICY = IAM_DIR / "bedrock-service-role-policy.json"
KMS_POLICY = IAM_DIR / "kms-key-access-policy.json"
PERMISSION_POLICIES = (CALLER_POLICY, SERVICE_ROLE_POLICY, KMS_POLICY)
DEPLOY_DOC = REPO / "docs" / "deploy.md"
PIPELINE_CONFIG = REPO / "include" / "config" / "call_center_summarization.json"

# The modules that run inside Airflow (what plugins.zip ships): the library without the demo runner; the
# emulator and the sample-data generator are sub-packages and never talk to AWS.
LIBRARY_MODULES = sorted(p for p in (REPO / "plugins" / "bedrock_batch").rglob("*.py") if p.name != "demo.py")

# AWS services whose clients the library builds (BedrockBatchHook) or is handed (Service Quotas).
SERVICES = ("bedrock", "bedrock-runtime", "s3", "service-quotas", "glue")
# Methods of the library's hook (its own and AwsBaseHook's) are not client calls, although some share a
# name with a Glue operation (get_job, create_job, get_session); the client calls inside them are scanned.
HOOK_METHODS = frozenset(name for name in dir(BedrockBatchHook) if not name.startswith("_"))
# Methods boto3 adds to S3 clients on top of the service model (managed transfers).
S3_TRANSFER_METHODS = ("upload_file", "upload_fileobj", "download_file", "download_fileobj")

# Client method → the IAM actions one call needs. A call the scan finds that is not listed here fails
# test_every_client_call_is_mapped: add it with its actions and to the policy.
CLIENT_METHOD_ACTIONS = {
    "create_model_invocation_job": {"bedrock:CreateModelInvocationJob"},
    "get_model_invocation_job": {"bedrock:GetModelInvocationJob"},
    "list_model_invocation_jobs": {"bedrock:ListModelInvocationJobs"},
    "stop_model_invocation_job": {"bedrock:StopModelInvocationJob"},
    # The check before any job (bedrock_batch.preflight): the model exists and answers text.
    "get_foundation_model": {"bedrock:GetFoundationModel"},
    "invoke_model": {"bedrock:InvokeModel"},
    "converse": {"bedrock:InvokeModel"},  # Converse is authorized by bedrock:InvokeModel
    "get_object": {"s3:GetObject"},
    "head_object": {"s3:GetObject"},  # HeadObject is authorized by s3:GetObject
    "head_bucket": {"s3:ListBucket"},  # HeadBucket is authorized by s3:ListBucket
    "list_objects_v2": {"s3:ListBucket"},
    "list_objects": {"s3:ListBucket"},
    "put_object": {"s3:PutObject"},
    "delete_objects": {"s3:DeleteObject"},  # checked per key
    # Managed transfers: PutObject, or Create/UploadPart/CompleteMultipartUpload (all s3:PutObject) and
    # AbortMultipartUpload when a part fails.
    "upload_file": {"s3:PutObject", "s3:AbortMultipartUpload"},
    "upload_fileobj": {"s3:PutObject", "s3:AbortMultipartUpload"},
    "list_service_quotas": {"servicequotas:ListServiceQuotas"},
    # The Bedrock batch page (API server): which listed jobs carry the toolkit's tags.
    "list_tags_for_resource": {"bedrock:ListTagsForResource"},
    # The Glue Data Catalog registration of the results table (bedrock_batch.catalog).
    "get_database": {"glue:GetDatabase"},
    "get_table": {"glue:GetTable"},
    "create_table": {"glue:CreateTable"},
    "update_table": {"glue:UpdateTable"},
    "create_partition": {"glue:CreatePartition"},
    "update_partition": {"glue:UpdatePartition"},
}
# Needed for a call the library makes, without being called itself.
IMPLIED_ACTIONS = {
    "iam:PassRole": "CreateModelInvocationJob hands the service role to Bedrock",
    "bedrock:TagResource": "CreateModelInvocationJob tags every job (dag_id, run_id, shard)",
}
# Actions without resource-level permissions (Service Authorization Reference): Resource must be "*".
NO_RESOURCE_LEVEL = {"bedrock:ListModelInvocationJobs", "servicequotas:ListServiceQuotas"}

PLACEHOLDER = re.compile(r"\$\{([A-Za-z]+)\}")
GEO_PREFIXES = ("us.", "eu.", "apac.", "us-gov.", "global.")
ACCOUNT, REGION, DAY = "123456789012", "us-east-1", "2026-01-01"


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return policy["Statement"]


def actions_of(policy: dict[str, Any]) -> set[str]:
    return {action for statement in statements(policy) for action in as_list(statement["Action"])}


# --- the library's AWS calls ------------------------------------------------------------------------------


def operation_names() -> set[str]:
    session = botocore.session.get_session()
    names = set(S3_TRANSFER_METHODS)
    for service in SERVICES:
        names |= {xform_name(name) for name in session.get_service_model(service).operation_names}
    return names


def library_client_calls() -> dict[str, list[str]]:
    """Client methods the library calls (paginators count as their operation) → ``module:line`` of each."""
    operations = operation_names()
    calls: dict[str, list[str]] = {}
    for module in LIBRARY_MODULES:
        for node in ast.walk(ast.parse(module.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr
            if name in ("get_paginator", "can_paginate"):
                argument = node.args[0] if node.args else None
                assert isinstance(argument, ast.Constant), f"{module.name}:{node.lineno}: name the paginator"
                name = argument.value
            if name in operations and name not in HOOK_METHODS:
                calls.setdefault(name, []).append(f"{module.name}:{node.lineno}")
    return calls


def library_services() -> set[str]:
    """Service names the library creates clients for: ``client_type = "..."`` and ``client_for("...")``."""
    found = set()
    for module in LIBRARY_MODULES:
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "client_type" for t in node.targets
            ):
                found.add(node.value.value)
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "client_for"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.add(node.args[0].value)
    return found


# --- a small evaluator of the Allow statements, for "may this principal do that" questions ------------------


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".") + "$")


def _condition_holds(condition: dict[str, Any], context: dict[str, str]) -> bool:
    for operator, tests in condition.items():
        for key, expected in tests.items():
            actual = context.get(key)
            if actual is None:
                return False
            if operator in ("StringEquals", "ArnEquals"):
                matched = actual in as_list(expected)
            elif operator in ("StringLike", "ArnLike"):
                matched = any(_wildcard(value).match(actual) for value in as_list(expected))
            else:
                raise AssertionError(f"condition operator {operator} is not understood by this test")
            if not matched:
                return False
    return True


def allows(policy: dict[str, Any], action: str, resource: str, context: dict[str, str] | None = None) -> bool:
    """Whether an Allow statement of ``policy`` grants ``action`` on ``resource`` in ``context``."""
    return any(
        statement["Effect"] == "Allow"
        and any(_wildcard(a).match(action) for a in as_list(statement["Action"]))
        and any(_wildcard(r).match(resource) for r in as_list(statement["Resource"]))
        and _condition_holds(statement.get("Condition", {}), context or {})
        for statement in statements(policy)
    )


# --- the templates filled in for the shipped pipeline configuration ----------------------------------------


def _bucket_and_prefix(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    static = key.split("{", 1)[0]  # a templated part ({ds}) starts a new folder
    prefix = static.rsplit("/", 1)[0] + "/" if "/" in static else (static + "/" if static else "")
    return bucket, prefix


def placeholder_values(config: PipelineConfig) -> dict[str, str]:
    source, staging, results = (
        _bucket_and_prefix(u) for u in (config.source_uri, config.staging_uri, config.results_uri)
    )
    profile = config.model_id
    foundation = next((profile[len(p) :] for p in GEO_PREFIXES if profile.startswith(p)), profile)
    return {
        "AccountId": ACCOUNT,
        "Region": REGION,
        "ServiceRoleName": config.role_arn.rsplit("/", 1)[1],
        "InferenceProfileId": profile,
        "FoundationModelId": foundation,
        "SourceBucket": source[0],
        "SourcePrefix": source[1],
        "StagingBucket": staging[0],
        "StagingPrefix": staging[1],
        "ResultsBucket": results[0],
        "ResultsPrefix": results[1],
        "KmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        # Registration is off in the shipped configuration; an example database stands in for it.
        "GlueDatabase": config.glue_database or "call_center_analytics",
        "GlueTable": config.glue_table,
    }


def render(path: Path, values: dict[str, str]) -> dict[str, Any]:
    text = path.read_text()
    missing = sorted(set(PLACEHOLDER.findall(text)) - set(values))
    assert missing == [], f"{path.name}: no example value for {missing}"
    return json.loads(PLACEHOLDER.sub(lambda m: values[m.group(1)], text))


@pytest.fixture(scope="module")
def config() -> PipelineConfig:
    return PipelineConfig.load(PIPELINE_CONFIG)


@pytest.fixture(scope="module")
def rendered(config: PipelineConfig) -> dict[str, dict[str, Any]]:
    values = placeholder_values(config)
    return {path.name: render(path, values) for path in (*PERMISSION_POLICIES, TRUST_POLICY)}


def s3_arn(uri: str) -> str:
    return "arn:aws:s3:::" + uri.removeprefix("s3://")


class TestPolicyGrammar:
    @pytest.mark.parametrize("path", [*PERMISSION_POLICIES, TRUST_POLICY], ids=lambda p: p.name)
    def test_is_a_valid_policy_document(self, path):
        policy = load(path)
        assert set(policy) == {"Version", "Statement"}
        assert policy["Version"] == "2012-10-17"
        assert isinstance(policy["Statement"], list)
        assert policy["Statement"]
        sids = [statement["Sid"] for statement in policy["Statement"]]
        assert len(sids) == len(set(sids)), "Sids must be unique"
        for statement in policy["Statement"]:
            assert re.fullmatch(r"[A-Za-z0-9]+", statement["Sid"])
            assert statement["Effect"] == "Allow"
            assert statement["Action"]
            assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement)
            assert ("Principal" in statement) == (path == TRUST_POLICY)
            assert ("Resource" in statement) != (path == TRUST_POLICY)

    @pytest.mark.parametrize("path", [*PERMISSION_POLICIES, TRUST_POLICY], ids=lambda p: p.name)
    def test_no_wildcard_actions(self, path):
        for action in actions_of(load(path)):
            assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", action), f"{action}: name the action exactly"

    @pytest.mark.parametrize("path", PERMISSION_POLICIES, ids=lambda p: p.name)
    def test_all_resources_only_for_actions_without_resource_level_permissions(self, path):
        for statement in statements(load(path)):
            if "*" in as_list(statement["Resource"]):
                assert as_list(statement["Resource"]) == ["*"]
                assert set(as_list(statement["Action"])) <= NO_RESOURCE_LEVEL, statement["Sid"]

    def test_no_bucket_wide_or_account_wide_s3_access(self):
        for path in PERMISSION_POLICIES:
            for statement in statements(load(path)):
                for resource in as_list(statement["Resource"]):
                    assert not resource.startswith("arn:aws:s3:::*"), (path.name, resource)
                    assert not re.fullmatch(r"arn:aws:s3:::\$\{\w+\}/\*", resource), (path.name, resource)

    @pytest.mark.parametrize("path", [*PERMISSION_POLICIES, TRUST_POLICY], ids=lambda p: p.name)
    def test_renders_to_valid_arns_for_the_shipped_configuration(self, path, rendered):
        for statement in statements(rendered[path.name]):
            for resource in as_list(statement.get("Resource", [])):
                assert resource == "*" or re.fullmatch(
                    r"arn:aws:(s3|bedrock|iam|kms|glue):[^$\s]*", resource
                ), resource

    def test_every_placeholder_is_documented(self):
        doc = DEPLOY_DOC.read_text()
        used = {
            name
            for path in (*PERMISSION_POLICIES, TRUST_POLICY)
            for name in PLACEHOLDER.findall(path.read_text())
        }
        assert {"AccountId", "StagingBucket", "ServiceRoleName"} <= used
        undocumented = sorted(name for name in used if f"`${{{name}}}`" not in doc)
        assert undocumented == []


class TestCallerPolicyCoversTheLibrary:
    def test_the_scan_finds_the_library_calls(self):
        calls = library_client_calls()
        for method in (
            "create_model_invocation_job",
            "list_model_invocation_jobs",
            "get_object",
            "upload_file",
            "create_partition",
        ):
            assert method in calls, f"the source scan no longer sees {method}"

    def test_hook_methods_hide_only_known_names(self):
        # A new hook method named like an operation of a scanned service would hide that operation's calls.
        assert HOOK_METHODS & operation_names() == {
            "create_job",
            "get_connection",
            "get_job",
            "get_session",
            "test_connection",
        }
        assert not HOOK_METHODS & set(CLIENT_METHOD_ACTIONS)

    def test_every_client_call_is_mapped(self):
        unmapped = {
            name: where for name, where in library_client_calls().items() if name not in CLIENT_METHOD_ACTIONS
        }
        assert unmapped == {}, "add these client methods to CLIENT_METHOD_ACTIONS and to the policies"

    def test_the_library_builds_clients_only_for_the_scanned_services(self):
        assert library_services() <= set(SERVICES)

    def test_every_action_the_library_needs_is_granted(self):
        granted = actions_of(load(CALLER_POLICY))
        for method, where in library_client_calls().items():
            missing = CLIENT_METHOD_ACTIONS.get(method, set()) - granted
            assert not missing, f"{method} ({', '.join(where)}) needs {sorted(missing)}"
        assert set(IMPLIED_ACTIONS) <= granted

    def test_grants_nothing_the_library_does_not_need(self):
        needed = set(IMPLIED_ACTIONS)
        for method in library_client_calls():
            needed |= CLIENT_METHOD_ACTIONS.get(method, set())
        assert actions_of(load(CALLER_POLICY)) - needed == set()


class TestCallerPolicyScope:
    def test_pass_role_only_for_the_service_role_and_only_to_bedrock(self, config, rendered):
        policy = rendered["airflow-caller-policy.json"]
        to_bedrock = {"iam:PassedToService": "bedrock.amazonaws.com"}
        assert allows(policy, "iam:PassRole", config.role_arn, to_bedrock)
        assert not allows(
            policy, "iam:PassRole", config.role_arn, {"iam:PassedToService": "ec2.amazonaws.com"}
        )
        assert not allows(policy, "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/SomeAdminRole", to_bedrock)
        pass_role = [s for s in statements(load(CALLER_POLICY)) if "iam:PassRole" in as_list(s["Action"])]
        assert len(pass_role) == 1
        assert as_list(pass_role[0]["Resource"]) == ["arn:aws:iam::${AccountId}:role/${ServiceRoleName}"]
        assert pass_role[0]["Condition"] == {"StringEquals": to_bedrock}

    def test_job_actions_for_this_account_and_region(self, config, rendered):
        policy = rendered["airflow-caller-policy.json"]
        job = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-invocation-job/abcdefghijkl"
        profile = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:inference-profile/{config.model_id}"
        for action in ("bedrock:CreateModelInvocationJob", "bedrock:GetModelInvocationJob"):
            assert allows(policy, action, job)
            assert not allows(policy, action, job.replace(ACCOUNT, "999999999999"))
        assert allows(policy, "bedrock:CreateModelInvocationJob", profile)
        assert allows(policy, "bedrock:TagResource", job)
        assert not allows(policy, "bedrock:TagResource", profile)
        other_model = f"arn:aws:bedrock:{REGION}::foundation-model/meta.llama3-70b-instruct-v1:0"
        assert not allows(policy, "bedrock:InvokeModel", other_model)

    def test_reads_the_source_but_never_writes_it(self, config, rendered):
        policy = rendered["airflow-caller-policy.json"]
        call = s3_arn(config.source_uri.replace("{ds}", DAY)) + "call-0001.txt"
        bucket, prefix = _bucket_and_prefix(config.source_uri)
        assert allows(policy, "s3:GetObject", call)
        assert allows(policy, "s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": f"{prefix}ds={DAY}/"})
        assert not allows(policy, "s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": "elsewhere/"})
        for action in ("s3:PutObject", "s3:DeleteObject"):
            assert not allows(policy, action, call)

    def test_writes_staging_and_results_and_deletes_only_results(self, config, rendered):
        policy = rendered["airflow-caller-policy.json"]
        shard = s3_arn(config.staging_uri) + f"/call_center_summarization/{DAY}/input/part-0001.jsonl"
        table = (
            s3_arn(config.results_uri)
            + f"/call_summaries/ds={DAY}/v20261118T063000000000Z-0a1b2c3d/part-00000.parquet"
        )
        for key in (shard, table):
            for action in ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"):
                assert allows(policy, action, key), (action, key)
        assert allows(policy, "s3:DeleteObject", table)
        assert not allows(policy, "s3:DeleteObject", shard)
        assert not allows(policy, "s3:PutObject", "arn:aws:s3:::some-other-bucket/file")

    def test_catalog_actions_only_on_the_configured_database_and_table(self, config, rendered):
        policy = rendered["airflow-caller-policy.json"]
        values = placeholder_values(config)
        database, table = values["GlueDatabase"], values["GlueTable"]
        glue = f"arn:aws:glue:{REGION}:{ACCOUNT}"
        needed = (f"{glue}:catalog", f"{glue}:database/{database}", f"{glue}:table/{database}/{table}")
        for action in ("glue:GetTable", "glue:CreateTable", "glue:UpdateTable"):
            for resource in needed:
                assert allows(policy, action, resource), (action, resource)
        for action in ("glue:CreatePartition", "glue:UpdatePartition", "glue:GetDatabase"):
            for resource in needed:
                assert allows(policy, action, resource), (action, resource)
        for action in ("glue:GetTable", "glue:UpdateTable", "glue:UpdatePartition"):
            assert not allows(policy, action, f"{glue}:table/{database}/other_table")
            assert not allows(policy, action, f"{glue}:table/other_database/{table}")
            assert not allows(policy, action, needed[2].replace(ACCOUNT, "999999999999"))
        for action in ("glue:CreateDatabase", "glue:DeleteTable", "glue:DeletePartition"):
            assert not allows(policy, action, needed[2])


class TestBedrockServiceRole:
    def test_trust_is_limited_to_batch_jobs_of_this_account(self, rendered):
        (statement,) = statements(rendered["bedrock-service-role-trust-policy.json"])
        assert statement["Principal"] == {"Service": "bedrock.amazonaws.com"}
        assert statement["Action"] == "sts:AssumeRole"
        condition = statement["Condition"]
        assert set(condition["StringEquals"]) == {"aws:SourceAccount"}
        assert set(condition["ArnLike"]) == {"aws:SourceArn"}
        job = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-invocation-job/abcdefghijkl"
        assert _condition_holds(condition, {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": job})
        assert not _condition_holds(condition, {"aws:SourceAccount": "999999999999", "aws:SourceArn": job})
        customization = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-customization-job/abc"
        assert not _condition_holds(condition, {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": customization})

    def test_reads_input_and_writes_output_in_staging_only(self, config, rendered):
        policy = rendered["bedrock-service-role-policy.json"]
        owner = {"aws:ResourceAccount": ACCOUNT}
        run = s3_arn(config.staging_uri) + f"/call_center_summarization/{DAY}"
        assert allows(policy, "s3:GetObject", f"{run}/input/part-0001.jsonl", owner)
        assert allows(policy, "s3:PutObject", f"{run}/output/abcdefghijkl/part-0001.jsonl.out", owner)
        staging_bucket = _bucket_and_prefix(config.staging_uri)[0]
        assert allows(policy, "s3:ListBucket", f"arn:aws:s3:::{staging_bucket}", owner)
        assert not allows(
            policy, "s3:GetObject", f"{run}/input/part-0001.jsonl", {"aws:ResourceAccount": "999999999999"}
        )
        assert not allows(
            policy, "s3:GetObject", s3_arn(config.results_uri) + "/call_summaries/x.parquet", owner
        )
        assert actions_of(policy) == {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "bedrock:InvokeModel"}

    def test_may_invoke_the_configured_model_through_its_inference_profile(self, config, rendered):
        policy = rendered["bedrock-service-role-policy.json"]
        profile = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:inference-profile/{config.model_id}"
        foundation = placeholder_values(config)["FoundationModelId"]
        assert allows(policy, "bedrock:InvokeModel", profile)
        assert allows(
            policy, "bedrock:InvokeModel", f"arn:aws:bedrock:us-west-2::foundation-model/{foundation}"
        )

    def test_kms_key_is_usable_only_through_s3(self, config, rendered):
        policy = rendered["kms-key-access-policy.json"]
        key = placeholder_values(config)["KmsKeyArn"]
        via_s3 = {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}
        assert allows(policy, "kms:GenerateDataKey", key, via_s3)
        assert allows(policy, "kms:Decrypt", key, via_s3)
        assert not allows(
            policy, "kms:Decrypt", key, {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}
        )
        assert actions_of(policy) == {"kms:Decrypt", "kms:GenerateDataKey"}
