"""Airflow test DAG of the reliability suite: the submit operator with an output KMS key and bucket owners.

The submit operator alone, with throttled creates; run by tests/reliability/test_security.py. (Airflow's
safe-mode parser only reads files that mention "airflow" and "dag", as this docstring does.)
"""

from __future__ import annotations

# A sibling DAG file: the test-dags bundle's folder is on sys.path while its files are parsed.
from bedrock_batch_submit import submit_dag

ACCOUNT_ID = "123456789012"
OUTPUT_KMS_KEY_ID = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"

dag = submit_dag(
    "reliability_encrypted_submit",
    deferrable=True,
    output_kms_key_id=OUTPUT_KMS_KEY_ID,
    input_bucket_owner=ACCOUNT_ID,
    output_bucket_owner=ACCOUNT_ID,
)
