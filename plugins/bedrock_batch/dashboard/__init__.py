"""The "Bedrock batch" page of the Airflow UI: the toolkit's jobs, per-model concurrency, per-day runs.

- :mod:`~bedrock_batch.dashboard.rows`: what the page shows, as plain rows built from what the services
  return (no I/O, no Airflow);
- :mod:`~bedrock_batch.dashboard.gather`: reading them from the run reports in S3, the job slots and the
  service's job listing, with a time-to-live cache (no Airflow);
- :mod:`~bedrock_batch.dashboard.page`: those rows as one server-rendered HTML page (no JavaScript build);
- :mod:`~bedrock_batch.dashboard.app`: the FastAPI app the plugin mounts, the only module here that imports
  Airflow (its auth manager decides who sees what).
"""
