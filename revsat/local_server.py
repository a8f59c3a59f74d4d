"""One local Prefect server for the CLI, started once and reused across runs.

Without ``PREFECT_API_URL`` Prefect starts a temporary server for every process and stops it at
exit (seconds each way on a small machine). Instead, the first ``revsat`` run starts the same
server (Prefect's own app, as its temporary server runs it: no UI, no background services)
detached from the CLI, records its address in ``PREFECT_HOME/revsat-server-<fingerprint>.json``
(one server per interpreter and Prefect settings, so that two installs sharing a
``PREFECT_HOME`` never stop each other's server under a running flow), and later runs point
``PREFECT_API_URL`` at it after a health check. The server stops itself after
``Settings.local_server_idle_minutes`` without requests. Runs are Prefect flow runs exactly as
before, in the same database (``PREFECT_HOME``); with a configured ``PREFECT_API_URL`` (a real
server, visible in the UI) none of this runs. ``Settings.local_server = false`` restores
Prefect's temporary server per run.

``python -m revsat.local_server PORT IDLE_SECONDS STATE_FILE`` is the server process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

STATE_PREFIX = "revsat-server"
#: A server whose state file names another server keeps serving until it has been quiet this
#: long: a run still using it (a chunk can take minutes) must not lose its API.
REPLACED_GRACE_SECONDS = 300


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def _fingerprint() -> str:
    """What the server was started with: Prefect settings from the environment (not the API
    URL), the interpreter. A run with other settings starts its own server."""
    env = sorted((k, v) for k, v in os.environ.items()
                 if k.startswith("PREFECT_") and k != "PREFECT_API_URL")
    return hashlib.sha256(json.dumps([sys.prefix, env]).encode()).hexdigest()[:16]


def state_file(fingerprint: str | None = None) -> Path:
    """The state file of the local server for ``fingerprint`` (default: this process's)."""
    return prefect_home() / f"{STATE_PREFIX}-{fingerprint or _fingerprint()}.json"


def _healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _read_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def ensure_local_server(idle_minutes: float = 30.0, startup_timeout: float = 90.0) -> str:
    """The API URL of this user's local server, started now if none is running."""
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint()
    state_path = state_file(fingerprint)
    state = _read_state(state_path)
    # a generous timeout: on a loaded machine a healthy server can take a while to answer
    if state.get("fingerprint") == fingerprint and _healthy(state.get("api_url", ""), 5.0):
        return state["api_url"]
    import fcntl

    with open(home / "revsat-server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time; the others reuse its server
        state = _read_state(state_path)
        if state.get("fingerprint") == fingerprint and _healthy(state.get("api_url", "")):
            return state["api_url"]
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        log = open(home / "revsat-server.log", "ab")
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}
        env.pop("PREFECT_API_URL", None)
        process = subprocess.Popen(
            [sys.executable, "-m", "revsat.local_server", str(port),
             str(int(idle_minutes * 60)), str(state_path)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,  # not stopped by the CLI's exit or its Ctrl-C
        )
        log.close()
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if _healthy(url, timeout=0.5):
                state = {"api_url": url, "pid": process.pid, "fingerprint": fingerprint,
                         "started": time.time()}
                tmp = state_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(state), encoding="utf-8")
                os.replace(tmp, state_path)
                return url
            if process.poll() is not None:
                break
            time.sleep(0.1)
        with contextlib.suppress(OSError):
            process.kill()
        raise RuntimeError(f"the local Prefect server did not start; see "
                           f"{home / 'revsat-server.log'}")


def stop_local_server() -> bool:
    """Stop the recorded local server (``revsat server-stop``); whether one was running."""
    import signal

    state_path = state_file()
    state = _read_state(state_path)
    with contextlib.suppress(OSError):
        state_path.unlink()
    if state.get("pid") and _healthy(state.get("api_url", "")):
        with contextlib.suppress(OSError):
            os.kill(int(state["pid"]), signal.SIGTERM)
            return True
    return False


def _serve(port: int, idle_seconds: int, state_path: Path) -> None:
    """The server process: Prefect's API app under uvicorn, stopped after ``idle_seconds``
    without a request (or when the state file names another server)."""
    import threading

    import uvicorn
    from prefect.server.api.server import create_app

    app = create_app(ephemeral=True, final=True)
    last = [time.monotonic()]

    async def touched(scope, receive, send):
        last[0] = time.monotonic()
        await app(scope, receive, send)

    config = uvicorn.Config(touched, host="127.0.0.1", port=port, log_level="error",
                            lifespan="on")
    server = uvicorn.Server(config)
    me = f"http://127.0.0.1:{port}/api"

    def watchdog() -> None:
        while not server.should_exit:
            time.sleep(5)
            quiet = time.monotonic() - last[0]
            idle = quiet > idle_seconds
            replaced = (server.started and quiet > REPLACED_GRACE_SECONDS
                        and state_path.exists()
                        and _read_state(state_path).get("api_url") not in (None, me))
            if idle or replaced:
                server.should_exit = True

    threading.Thread(target=watchdog, daemon=True).start()
    server.run()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
