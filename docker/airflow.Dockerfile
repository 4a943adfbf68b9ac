# Airflow image for the services-sync compose stack (docker-compose.yaml builds it).
#
# The official image plus the project's pinned requirements.txt (apache-airflow==3.3.2, the
# postgres/http/common-sql/standard/smtp/slack providers, psycopg 3, ...). requirements.txt is
# fully resolved by `make lock` (uv pip compile), so no Airflow constraints file is needed.
#
# Nothing else is copied in: dags/, plugins/, include/, devkit/, logs/ and config/ are mounted by
# docker-compose.yaml.
FROM apache/airflow:3.3.2-python3.11

COPY requirements.txt /requirements.txt

# Install as the image's `airflow` user (the official image refuses pip installs as root).
# Naming apache-airflow at the image's own version makes the build fail loudly if the pins in
# requirements.txt ever drift from the base image tag, instead of silently replacing Airflow.
USER airflow
RUN uv pip install --no-cache "apache-airflow==${AIRFLOW_VERSION}" -r /requirements.txt

# The stack runs the CeleryExecutor, whose provider comes with the base image, not with
# requirements.txt: fail the build here rather than at `airflow celery worker` if it is missing.
RUN python -c "import importlib.metadata as m; print('celery provider', m.version('apache-airflow-providers-celery'))"
