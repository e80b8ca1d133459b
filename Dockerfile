# syntax=docker/dockerfile:1
# The image of every Airflow component in docker-compose.yaml, and the image to deploy on Kubernetes.
#   target `airflow` (the default): apache/airflow 3.3.2 + requirements.txt + this project's dags/, plugins/, include/
#   target `local`: adds moto's S3 server and Faker, for the local stack of `docker compose --profile local`;
#                   a development image, never deploy it
FROM apache/airflow:3.3.2 AS airflow

# requirements.txt lists what the toolkit needs on top of Airflow and constraints.txt pins every package to the
# version the test suite ran with. Naming apache-airflow at the image's own version (AIRFLOW_VERSION is set by
# the base image) keeps pip from moving Airflow itself.
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/requirements/
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" \
        -r /opt/airflow/requirements/requirements.txt \
        -c /opt/airflow/requirements/constraints.txt

# Baked in for deployments without bind mounts (Kubernetes); docker compose mounts the working copy over them.
# The development tools (dev/: emulator, sample data, demo) are not part of the build context.
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/


FROM airflow AS local

# The two test-only packages the local stack needs, at the versions pinned in requirements-dev.txt. The emulator
# and the sample-data code come from the dev/ folder docker compose mounts.
COPY --chown=airflow:0 requirements-dev.txt /opt/airflow/requirements/
RUN grep -E '^(moto\[server\]|faker)==' /opt/airflow/requirements/requirements-dev.txt > /tmp/local-stack.txt \
    && pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" \
        -r /tmp/local-stack.txt \
        -c /opt/airflow/requirements/constraints.txt \
    && rm /tmp/local-stack.txt
