"""Where the chunk parts of a run are scored: in the flow's own process (``sequential``), or in
parallel by Prefect's Dask task runner (``dask``, from ``prefect-dask``) or Ray task runner
(``ray``, from ``prefect-ray``, not installed by default).

Only the ``score-part`` tasks are submitted to the runner: a part needs the chunk, its column
map, the model folder and the settings (:class:`pipeline.run.part.PartSpec`), never the run
plan. Chunks stream (:func:`pipeline.run.steps.score_parts`): the flow reads one chunk at a time
and keeps at most two parts per worker thread in flight, so neither the flow nor a worker ever
holds the whole input.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.run.part import PartSpec

TASK_RUNNERS = ("sequential", "dask", "ray")


def default_workers() -> int:
    """Local workers when none are given: one per CPU core."""
    return max(1, os.cpu_count() or 1)


@contextmanager
def part_runner(kind: str = "sequential", address: str | None = None,
                workers: int | None = None) -> Iterator[Any]:
    """A started Prefect task runner for the parts (``None`` for ``sequential``).

    ``dask`` without ``address`` starts a temporary local cluster of ``workers`` processes
    with one thread each; with ``address`` (``tcp://host:8786``) it uses that cluster.
    """
    if kind == "sequential":
        yield None
        return
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            runner = DaskTaskRunner(address=address)
        else:
            runner = DaskTaskRunner(cluster_kwargs={
                "n_workers": workers or default_workers(), "threads_per_worker": 1,
                "processes": True, "dashboard_address": ":0", "env": worker_env(),
            })
    elif kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as exc:
            raise ValueError("--task-runner ray needs `pip install prefect-ray`") from exc
        runner = RayTaskRunner(
            address=address,
            init_kwargs=None if address else {"num_cpus": workers or default_workers(),
                                              "runtime_env": {"env_vars": worker_env()}},
        )
    else:
        raise ValueError(f"unknown task runner {kind!r}: use one of {', '.join(TASK_RUNNERS)}")
    with runner:
        yield runner


def worker_env() -> dict[str, str]:
    """Environment of local worker processes: the flow's Prefect API. In embedded mode (no
    PREFECT_API_URL) that is the flow's temporary server; without this each worker would start
    a temporary server of its own."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()  # a singleton: the server this process already uses
        if server.server_process is not None:
            url = server.api_url
    return {"PREFECT_API_URL": url} if url else {}


def runner_threads(runner: Any, workers: int | None) -> int:
    """Worker threads of a started runner (for the in-flight window)."""
    client = getattr(runner, "client", None)
    if client is not None and hasattr(client, "nthreads"):
        try:
            return max(1, sum(client.nthreads().values()))
        except Exception:
            pass
    return workers or default_workers()


def worker_spec(spec: PartSpec) -> PartSpec:
    """The part spec for a worker with one thread: torch limited to 1 thread unless the user
    set ``torch_threads``."""
    settings = dict(spec.settings)
    settings["torch_threads"] = settings.get("torch_threads") or 1
    return dataclasses.replace(spec, settings=settings)
