"""The airflow DAG of a pipeline folder kept outside the repository: the folder named by
``$BEDROCK_BATCH_TEST_PIPELINE_FOLDER``, which tests/e2e/test_pipeline_folders.py writes in a temporary
directory. Without the variable the file defines no dag."""

from __future__ import annotations

import os

from bedrock_batch.factory import pipeline_dag

FOLDER_ENV = "BEDROCK_BATCH_TEST_PIPELINE_FOLDER"

if os.environ.get(FOLDER_ENV):
    dag = pipeline_dag(os.environ[FOLDER_ENV])
