# The official Airflow 3.3 image with sprx-pipeline installed; used by docker-compose.yml.
# AIRFLOW_IMAGE is there for machines that cannot pull it: the compose test builds on a local
# image with the same layout (user airflow, uid 50000; pip on PATH; AIRFLOW_HOME=/opt/airflow).
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

ENV SPRX_PROJECT_ROOT=/opt/sprx \
    SPRX_LANDING_DIR=/data/landing \
    SPRX_WAREHOUSE_PATH=/data/warehouse/sprx.duckdb \
    SPRX_CODELIST_SOURCE=/opt/sprx/codelists \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/sprx/dags

# Dependencies first, so that code changes do not reinstall them: what the team server runs,
# the package's own requirements and its `airflow` extra, read from pyproject.toml and pinned by
# the lock used as constraints. Not the whole lock: it also pins the `spark`, `test` and `lint`
# extras (PySpark alone is 467 MB), which the server never runs. The build tools are pinned
# too (the Makefile's), because the package is installed without build isolation.
COPY --chown=airflow:root requirements.lock pyproject.toml /opt/sprx/
RUN pip install --no-cache-dir --quiet "pip==26.3" "setuptools==84.2.1" "wheel==0.48.0" \
 && python -c "import tomllib; project = tomllib.load(open('/opt/sprx/pyproject.toml', 'rb'))['project']; print('\n'.join(project['dependencies'] + project['optional-dependencies']['airflow']))" \
      > /tmp/sprx-airflow-requirements.txt \
 && pip install --no-cache-dir --quiet -c /opt/sprx/requirements.lock -r /tmp/sprx-airflow-requirements.txt \
 && rm /tmp/sprx-airflow-requirements.txt

# Everything the package reads at run time (tests/test_compose.py lists it and checks it is here).
COPY --chown=airflow:root README.md /opt/sprx/
COPY --chown=airflow:root src /opt/sprx/src
COPY --chown=airflow:root dbt_project /opt/sprx/dbt_project
COPY --chown=airflow:root codelists /opt/sprx/codelists
COPY --chown=airflow:root expectations /opt/sprx/expectations
COPY --chown=airflow:root dags /opt/sprx/dags
# The pinned Data Docs styles and scripts (`make data-docs-assets`), so that no page a viewer
# opens fetches anything from a CDN.
COPY --chown=airflow:root vendor /opt/sprx/vendor
# The package itself, editable, with the same set: pip finds every requirement already there
# (and would install, still pinned, any that the list above missed).
RUN pip install --no-cache-dir --quiet -c /opt/sprx/requirements.lock --no-build-isolation \
      -e "/opt/sprx[airflow]"

USER root
RUN mkdir -p /data/landing /data/warehouse /opt/airflow/logs \
 && chown -R airflow:root /data /opt/airflow/logs
USER airflow
