"""The production set-up end to end: a Prefect server backed by PostgreSQL, the
``nightly-score`` deployment served by ``revsat serve``, a run triggered through the API, and
the warehouse tables upserted into PostgreSQL; and the same deployment registered from
``prefect.yaml`` with ``prefect deploy`` and run by a process worker.

The fixtures install PostgreSQL from Debian packages when it is missing (root only), start a
throw-away cluster on a free localhost port and a Prefect server on another; everything is
bounded in time and torn down at the end. Skipped, with the reason, where that is impossible.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, SAMPLE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _install_postgres() -> Path:
    if _pg_bin() is None:
        if os.geteuid() != 0:
            pytest.skip("PostgreSQL is not installed and installing it needs root")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300, env=env,
                           capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True,
                           timeout=600, env=env, capture_output=True)
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"could not install PostgreSQL with apt-get: {exc}")
    pg = _pg_bin()
    if pg is None:
        pytest.skip("PostgreSQL installed but no initdb under /usr/lib/postgresql/*/bin")
    return pg


def _as_db_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _wait(check, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    tail = log.read_text(errors="replace")[-4000:] if log and log.is_file() else ""
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s\n{tail}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster on a free localhost port with databases ``prefect`` and
    ``warehouse``; yields ``postgresql://revsat@127.0.0.1:PORT``."""
    pg = _install_postgres()
    root = Path(tempfile.mkdtemp(prefix="revsat-pg-"))
    data, sock, log = root / "data", root / "sock", root / "pg.log"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    port = _free_port()
    subprocess.run(_as_db_user([str(pg / "initdb"), "-D", str(data), "-U", "revsat",
                                "--auth=trust", "-E", "UTF8", "--no-sync"]),
                   check=True, timeout=120, capture_output=True)
    subprocess.run(_as_db_user([
        str(pg / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
        f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start",
    ]), check=True, timeout=90, capture_output=True)
    try:
        for db in ("prefect", "warehouse"):
            subprocess.run([str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                            "revsat", db], check=True, timeout=60, capture_output=True)
        yield f"postgresql://revsat@127.0.0.1:{port}"
    finally:
        subprocess.run(_as_db_user([str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                    "-w", "-t", "30", "stop"]), timeout=60, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def prefect_server(postgres, tmp_path_factory):
    """``prefect server start`` on PostgreSQL; yields (api_url, environment for clients)."""
    import httpx

    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ, "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL":
            postgres.replace("postgresql://", "postgresql+asyncpg://") + "/prefect",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
             str(port)], env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError("prefect server exited:\n" + log.read_text()[-4000:])
        try:
            return httpx.get(f"{api}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait(healthy, 240, "prefect server", log)
        client_env = {k: v for k, v in env.items() if k != "PREFECT_API_DATABASE_CONNECTION_URL"}
        client_env["PREFECT_API_URL"] = api
        yield api, client_env
    finally:
        _stop(proc)


def _flow_run_state(api: str, flow_run_id: str) -> dict:
    """The flow run as the API reports it (``{}`` when a busy server does not answer in time:
    callers poll again)."""
    import httpx

    try:
        return httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=30).json()
    except httpx.TimeoutException:
        return {"state": {"type": "UNKNOWN"}}


def test_served_deployment_runs_on_postgres(prefect_server, postgres, tiny_baseline_dir,
                                            tmp_path):
    import httpx
    import sqlalchemy as sa

    api, env = prefect_server
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    shutil.copy(SAMPLE, inbox / "2026-11-14.csv")
    warehouse = postgres.replace("postgresql://", "postgresql+psycopg://") + "/warehouse"
    log = tmp_path / "serve.log"
    with log.open("w") as fh:
        serve = subprocess.Popen(
            [str(BIN / "revsat"), "serve", str(inbox), "--out", str(out), "--model",
             str(tiny_baseline_dir), "--warehouse", warehouse, "--timezone", "Asia/Shanghai"],
            env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deployment: dict = {}

        def registered() -> bool:
            if serve.poll() is not None:
                raise RuntimeError("revsat serve exited:\n" + log.read_text()[-4000:])
            r = httpx.get(f"{api}/deployments/name/nightly-score/nightly-score", timeout=10)
            if r.status_code == 200:
                deployment.update(r.json())
                return True
            return False

        _wait(registered, 180, "deployment nightly-score", log)
        schedule = deployment["schedules"][0]["schedule"]
        assert schedule["cron"] == "0 2 * * *" and schedule["timezone"] == "Asia/Shanghai"

        def run(parameters: dict) -> dict:
            r = httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run",
                           json={"parameters": parameters}, timeout=30)
            r.raise_for_status()
            run_id = r.json()["id"]
            state: dict = {}

            def finished() -> bool:
                state.update(_flow_run_state(api, run_id))
                return state["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED",
                                                  "CANCELLED")

            _wait(finished, 300, f"flow run {run_id}", log)
            assert state["state"]["type"] == "COMPLETED", (state["state"],
                                                           log.read_text()[-4000:])
            return state

        run({"run_date": "2026-11-14"})
        reviews = pd.read_parquet(out / "reviews.parquet")
        assert len(reviews) > 200 and (out / "report.html").is_file()
        run({"run_date": "2026-11-14", "rescore": True})  # a re-run of the night: upserts

        engine = sa.create_engine(warehouse)
        try:
            with engine.connect() as con:
                def count(sql: str) -> int:
                    return con.execute(sa.text(sql)).scalar_one()

                assert count("SELECT count(*) FROM reviews") == len(reviews)
                sat = pd.read_parquet(out / "satisfaction.parquet")
                assert count("SELECT count(*) FROM satisfaction") == len(sat)
                assert count("SELECT count(*) FROM runs") == 2
                assert count("SELECT count(DISTINCT run_date) FROM history_satisfaction") == 1
                # both runs are of the same date, so neither has an earlier run to compare
                # with: no alerts, and the (created) table matches the published one
                published = len(pd.read_parquet(out / "alerts.parquet"))
                assert count("SELECT count(*) FROM alerts") == published == 0
        finally:
            engine.dispose()
        import duckdb

        con = duckdb.connect(str(out / "revsat.duckdb"), read_only=True)
        try:
            assert con.execute("SELECT count(*) FROM ledger").fetchone()[0] == 1
        finally:
            con.close()
        assert date.fromisoformat(
            pd.read_parquet(out / "satisfaction.parquet")["run_date"].iloc[0].date().isoformat()
        ) == date(2026, 11, 14)
    finally:
        _stop(serve)


def test_prefect_yaml_deployment_runs_on_a_process_worker(prefect_server, tiny_baseline_dir,
                                                          tmp_path):
    """The documented production path: ``prefect work-pool create``, ``prefect deploy`` of
    ``prefect.yaml`` (parameters and time zone overridden on the command line), a process
    worker, and a run triggered through the API."""
    import httpx

    api, env = prefect_server
    env = {**env, "PREFECT_WORKER_QUERY_SECONDS": "2"}
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    shutil.copy(SAMPLE, inbox / "2026-11-15.csv")
    prefect = str(BIN / "prefect")

    def cli(*args: str) -> str:
        done = subprocess.run([prefect, *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=180)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    cli("work-pool", "create", "revsat", "--type", "process")
    cli("--no-prompt", "deploy", "--name", "nightly-score", "--timezone", "Europe/Berlin",
        "--param", f"input_dir={inbox}", "--param", f"out={out}",
        "--param", f"model={tiny_baseline_dir}")
    deployment = httpx.get(f"{api}/deployments/name/nightly-score/nightly-score",
                           timeout=10).json()
    assert deployment["work_pool_name"] == "revsat"
    assert deployment["parameters"]["out"] == str(out)
    schedule = deployment["schedules"][0]["schedule"]
    assert schedule["cron"] == "0 2 * * *" and schedule["timezone"] == "Europe/Berlin"

    log = tmp_path / "worker.log"
    with log.open("w") as fh:
        worker = subprocess.Popen([prefect, "worker", "start", "--pool", "revsat"], env=env,
                                  cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        r = httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run",
                       json={"parameters": {"run_date": "2026-11-15"}}, timeout=30)
        r.raise_for_status()
        run_id = r.json()["id"]
        state: dict = {}

        def finished() -> bool:
            if worker.poll() is not None:
                raise RuntimeError("worker exited:\n" + log.read_text()[-4000:])
            state.update(_flow_run_state(api, run_id))
            return state["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")

        _wait(finished, 400, f"flow run {run_id}", log)
        assert state["state"]["type"] == "COMPLETED", (state["state"], log.read_text()[-4000:])
        reviews = pd.read_parquet(out / "reviews.parquet")
        assert len(reviews) > 200
        sat = pd.read_parquet(out / "satisfaction.parquet")
        assert (sat["run_date"].dt.date == date(2026, 11, 15)).all()
    finally:
        _stop(worker)
