# The official Airflow 3.3 image with sprx-pipeline installed; used by docker-compose.yml.
FROM apache/airflow:3.3.2-python3.11

ENV SPRX_PROJECT_ROOT=/opt/sprx \
    SPRX_LANDING_DIR=/data/landing \
    SPRX_WAREHOUSE_PATH=/data/warehouse/sprx.duckdb \
    SPRX_CODELIST_SOURCE=/opt/sprx/codelists \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/sprx/dags

# Pinned dependencies first, so that code changes do not reinstall them.
COPY --chown=airflow:root requirements.lock /opt/sprx/requirements.lock
RUN pip install --no-cache-dir -r /opt/sprx/requirements.lock

COPY --chown=airflow:root pyproject.toml README.md /opt/sprx/
COPY --chown=airflow:root src /opt/sprx/src
COPY --chown=airflow:root dbt_project /opt/sprx/dbt_project
COPY --chown=airflow:root codelists /opt/sprx/codelists
COPY --chown=airflow:root dags /opt/sprx/dags
RUN pip install --no-cache-dir --no-deps -e /opt/sprx

USER root
RUN mkdir -p /data/landing /data/warehouse && chown -R airflow:root /data
USER airflow
