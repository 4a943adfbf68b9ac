"""Security invariants with the real DAG: least-privilege roles, no token in logs, TLS verified."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import threading
import time
import uuid
from datetime import timedelta

import pendulum
import psycopg
import pytest
import requests
from airflow.dag_processing.dagbag import DagBag

from devkit.receiver import ReceiverServer
from devkit.seed import insert_rows

pytestmark = pytest.mark.e2e

H = pendulum.datetime(2025, 5, 14, 10, tz="UTC")
TOKEN = "s3cr3t-" + uuid.uuid4().hex  # distinctive, so a leak is unmistakable


@pytest.fixture(scope="module")
def dag():
    return DagBag(dag_folder="dags").dags["services_requests_sync"]


def rows(n):
    return [
        ("water", f"R{i:03d}", H - timedelta(days=1), "1", H + timedelta(minutes=i))
        for i in range(n)
    ]


def run_hour(dag):
    return dag.test(logical_date=H + timedelta(hours=1))


def test_a_select_only_source_role_with_state_elsewhere_syncs(
    dag, airflow_db, pg_cluster, source_db, receiver, monkeypatch
):
    """The source role may only SELECT service_requests (and see sessions, for the gate)."""
    reader = f"sync_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows(5))
        conn.execute(f"CREATE ROLE {reader} LOGIN")
        conn.execute(f"GRANT SELECT ON service_requests TO {reader}")
        conn.execute(f"GRANT pg_read_all_stats TO {reader}")
    state_dsn = pg_cluster.create_database(f"state_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_SOURCE_DB", source_db.replace("postgres@", f"{reader}@")
    )
    monkeypatch.setenv("AIRFLOW_CONN_SERVICES_STATE_DB", state_dsn)
    monkeypatch.setenv("SERVICES_SYNC_STATE_CONN_ID", "services_state_db")
    with psycopg.connect(source_db) as conn:
        privileges = conn.execute(
            "SELECT privilege_type FROM information_schema.role_table_grants WHERE grantee = %s",
            (reader,),
        ).fetchall()
    assert privileges == [("SELECT",)]

    assert run_hour(dag).state == "success"

    assert requests.get(f"{receiver.url}/inspect/stats", timeout=5).json()["records"] == 5
    with psycopg.connect(state_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM services_sync.delivery_runs").fetchone() == (1,)
    with psycopg.connect(source_db) as conn:
        schemas = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'services_sync'"
        ).fetchone()
    assert schemas == (0,), "nothing may be written to the source database"


def test_the_api_token_never_appears_in_the_logs(
    dag, airflow_db, source_db, monkeypatch, capfd, caplog
):
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows(3))
    with ReceiverServer(host="127.0.0.1", token=TOKEN) as server:
        port = int(server.url.rsplit(":", 1)[1])
        monkeypatch.setenv(
            "AIRFLOW_CONN_SERVICES_API",
            json.dumps(
                {
                    "conn_type": "http",
                    "host": "127.0.0.1",
                    "port": port,
                    "schema": "http",
                    "extra": {"Authorization": f"Bearer {TOKEN}"},
                }
            ),
        )
        # One rejected try first, so error paths log too.
        requests.post(f"{server.url}/faults", json={"faults": [{"status": 503}]}, timeout=5)
        run = run_hour(dag)
        assert run.state == "success"
        assert requests.get(f"{server.url}/inspect/stats", timeout=5).json()["records"] == 3
    out, err = capfd.readouterr()
    logs = out + err + caplog.text
    assert "post_batches" in logs  # the run's logs were captured
    assert TOKEN not in logs


def _self_signed_cert(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_tls_certificates_are_verified(dag, airflow_db, source_db, monkeypatch, tmp_path, capfd):
    """An HTTPS receiver with an untrusted certificate gets nothing; trusting its CA works."""
    import uvicorn

    from devkit.pgcluster import free_port
    from devkit.receiver import create_app

    cert_file, key_file = _self_signed_cert(tmp_path)
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows(2))
    port = free_port()
    config = uvicorn.Config(
        create_app(),
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        conn = {"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "https"}
        monkeypatch.setenv("AIRFLOW_CONN_SERVICES_API", json.dumps(conn))
        capfd.readouterr()
        refused = run_hour(dag)
        out, err = capfd.readouterr()
        assert refused.state == "failed"
        # It failed because the certificate was refused, and for nothing else: the lane with the
        # batch used up its tries, each on a verification error, and the run's outcome says so.
        failed = sorted(
            (ti.task_id, ti.map_index, ti.try_number)
            for ti in refused.get_task_instances()
            if ti.state == "failed"
        )
        assert [(task, lane) for task, lane, _ in failed] == [
            ("post_batches", 0),
            ("record_delivery", -1),
        ]
        exited = [line for line in (out + err).splitlines() if "Task exited" in line]
        assert len(exited) == failed[0][2] > 1, exited
        assert all("CERTIFICATE_VERIFY_FAILED" in line for line in exited), exited
        stats = requests.get(
            f"https://127.0.0.1:{port}/inspect/stats", timeout=5, verify=str(cert_file)
        ).json()
        assert stats["records"] == 0

        conn["extra"] = {"verify": str(cert_file)}  # trust this CA explicitly
        monkeypatch.setenv("AIRFLOW_CONN_SERVICES_API", json.dumps(conn))
        assert run_hour(dag).state == "success"
        stats = requests.get(
            f"https://127.0.0.1:{port}/inspect/stats", timeout=5, verify=str(cert_file)
        ).json()
        assert stats["records"] == 2
    finally:
        server.should_exit = True
        thread.join(10)
