"""The ``ray`` engine: a fitted plugin mapped over catalogue rows by a Ray Data actor pool.

The rows become a Ray Data dataset of ``(id, item)`` blocks of ``batch_size`` rows;
``map_batches`` runs them through a pool of ``concurrency`` actors, each holding ONE copy of
the plugin, unpickled once when the actor starts (so a network loads once per actor, not per
batch). Each actor turns a block into one :class:`~placedemarche.features.engines.Batch` (dense
or CSR rows and the failed rows, via ``transform_rows``) returned as one output row; the
driver iterates the results in input order (``preserve_order``) as they stream in and yields
them, so its memory holds a window of input rows and a few results, never the whole output.

The input is a Python iterator on the driver, which Ray Data cannot read lazily: it is cut
into windows of ``window_rows`` rows (100,000 by default), one dataset (and one actor pool
start, seconds) per window, which bounds what the driver and the object store hold.

Where it runs (``address``, else ``RAY_ADDRESS``):

- none: a local Ray with this machine's CPUs is started, and shut down by ``close()``; a Ray
  already initialised in this process is used as it is (and left running);
- ``auto`` (the cluster this machine belongs to, after ``ray start``) or ``ray://host:10001``
  (Ray Client) or ``host:6379``: joined; an unreachable address fails in seconds.

Workers must import the plugin's class: placedemarche and any third-party plugin package
have to be installed on every node, or shipped with ``runtime_env`` (e.g.
``{"pip": ["placedemarche-colour-histogram"]}`` or ``{"py_modules": [...]}``), see
docs/scale.md. A worker that dies is restarted and its batch retried (Ray Data's actor pools
default to unlimited ``max_restarts`` and ``max_task_retries``); every input row still comes
back exactly once.

Usage::

    engine = RayEngine(concurrency=4, threads_per_worker=1)
    try:
        for batch in engine.map(fitted_plugin, zip(ids, image_paths), batch_size=64):
            store.write(batch)
    finally:
        engine.close()
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import socket
from typing import Any, Iterable, Iterator

import numpy as np

from placedemarche.features.engines import Batch, batched, transform_rows
from placedemarche.core.errors import MissingDependencyError, PlaceDeMarcheError

#: Input rows per Ray dataset (see the module docstring).
WINDOW_ROWS = 100_000
#: Seconds to wait for a cluster address to answer before giving up.
CONNECT_TIMEOUT = 5.0
#: Plugin parameters that set a worker's threads (inference threads, decoding threads).
THREAD_PARAMS = ("threads", "workers")


def import_ray():
    """``ray`` and ``ray.data``, or a one-line MissingDependencyError naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            'the ray engine needs Ray Data: pip install "placedemarche[ray]"') from None
    return ray


class RayEngine:
    """Batches of rows through a Ray Data actor pool, one plugin instance per actor.

    Args:
        address: the Ray cluster to join (``auto``, ``ray://host:10001``, ``host:6379``);
            None: ``RAY_ADDRESS``, else a local Ray started here with this machine's CPUs.
        concurrency: actors in the pool (default: the cluster's CPUs divided by
            ``threads_per_worker``, or its GPUs divided by ``num_gpus_per_worker``).
        num_gpus_per_worker: GPUs reserved per actor (0.5: two actors share a GPU).
        threads_per_worker: CPUs reserved per actor (default 1); a plugin with a ``threads``
            parameter runs that many inference threads, and one with ``workers`` left unset
            that many decoding threads.
        runtime_env: Ray runtime environment for the workers (``pip``, ``py_modules``,
            ``env_vars``...), used when this engine starts or joins Ray.
        verbose: keep Ray's own logs and progress bars on the console.
        window_rows: input rows per dataset (bounds the driver's and the object store's memory).

    Usage::

        engine = RayEngine(address="auto", concurrency=8)
    """

    name = "ray"

    def __init__(self, address: str | None = None, concurrency: int | None = None,
                 num_gpus_per_worker: float | None = None, threads_per_worker: int | None = None,
                 runtime_env: dict | None = None, verbose: bool = False, window_rows: int = WINDOW_ROWS):
        for option, value, least in (("--concurrency", concurrency, 1), ("--threads-per-worker", threads_per_worker, 1),
                                     ("--num-gpus-per-worker", num_gpus_per_worker, 0)):
            if value is not None and not value >= least:
                raise PlaceDeMarcheError(f"{option} must be at least {least}, not {value}")
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.concurrency = concurrency
        self.num_gpus_per_worker = num_gpus_per_worker
        self.threads_per_worker = threads_per_worker
        self.runtime_env = runtime_env
        self.verbose = verbose
        self.window_rows = max(1, int(window_rows))
        self._ray = import_ray()
        self._started = False
        self._connect()

    # -- the cluster ------------------------------------------------------------------------
    def _connect(self) -> None:
        ray = self._ray
        if self.address not in (None, "auto", "local"):
            check_reachable(self.address)
        if ray.is_initialized():
            return
        options: dict[str, Any] = dict(logging_level=logging.INFO if self.verbose else logging.ERROR,
                                       log_to_driver=self.verbose, runtime_env=self.runtime_env)
        if self.address is None or self.address == "local":
            from placedemarche.core.runtime import default_threads

            options.update(address="local", num_cpus=default_threads(), include_dashboard=False)
        else:
            options.update(address=self.address)
        try:
            ray.init(**options)
        except ConnectionError as exc:
            reason = _first_line(exc).split(". ")[0].rstrip(".")  # Ray's advice follows; ours is below
            raise PlaceDeMarcheError(
                f"ray: cannot join the Ray cluster at '{self.address}': {reason}; start one "
                "with `ray start --head`, or give --address ray://HOST:10001 (or none for a local Ray)") from None
        self._started = True

    def close(self) -> None:
        """Shut down the Ray this engine started or joined (one already running in this
        process before the engine was made is left alone)."""
        if self._started:
            self._ray.shutdown()
            self._started = False

    def _pool_size(self) -> int:
        if self.concurrency:
            return int(self.concurrency)
        resources = self._ray.cluster_resources()
        if self.num_gpus_per_worker:
            return max(1, int(resources.get("GPU", 0) / self.num_gpus_per_worker))
        return max(1, int(resources.get("CPU", 1) // (self.threads_per_worker or 1)))

    # -- the work ---------------------------------------------------------------------------
    def map(self, plugin, rows: Iterable[tuple[str, Any]], batch_size: int) -> Iterator[Batch]:
        """Batches of the rows (``(id, item)``), in input order; see ``features/engines.py``."""
        if batch_size < 1:
            raise PlaceDeMarcheError(f"--batch-size must be at least 1, not {batch_size}")
        from ray import cloudpickle

        # put once, held by the driver: every actor (restarted ones too) of every window reads it
        payload = [self._ray.put(cloudpickle.dumps(plugin))]
        size = max(batch_size, self.window_rows // batch_size * batch_size)
        for ids, items in batched(rows, size):
            yield from self._map_window(plugin, payload, ids, items, batch_size)

    def _map_window(self, plugin, payload: list, ids: list[str], items: list, batch_size: int) -> Iterator[Batch]:
        import pyarrow as pa
        import ray.data
        from ray.data import ActorPoolStrategy, DataContext

        context = DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = self.verbose
        context.print_on_execution_start = self.verbose
        if not self.verbose:
            # a worker's error is re-raised below in one line; the traceback stays in Ray's logs
            logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        blocks = []
        for start in range(0, len(ids), batch_size):
            chunk = items[start:start + batch_size]
            binary = [isinstance(item, (bytes, bytearray)) for item in chunk]
            if any(binary) and not all(binary):
                raise PlaceDeMarcheError("ray: rows give images both as bytes and as paths/URLs: give one kind")
            binary = any(binary)
            column = [bytes(i) if binary else str(i) for i in chunk]
            blocks.append(pa.table({"id": pa.array([str(i) for i in ids[start:start + batch_size]], pa.string()),
                                    "item": pa.array(column, pa.binary() if binary else pa.string())}))
        threads = int(self.threads_per_worker or 1)
        pool = self._pool_size()
        dataset = ray.data.from_arrow(blocks).map_batches(
            PluginActor, batch_size=batch_size, batch_format="pyarrow", zero_copy_batch=True,
            compute=ActorPoolStrategy(size=min(pool, len(blocks))),
            fn_constructor_kwargs={"payload": payload, "threads": threads,
                                   "set_threads": self.threads_per_worker is not None},
            num_cpus=threads, num_gpus=self.num_gpus_per_worker or None)
        try:
            for row in dataset.iter_rows():
                yield pickle.loads(row["batch"])
        except Exception as exc:  # noqa: BLE001 - Ray wraps the worker's error in its own
            raise _unwrap(exc, getattr(plugin, "name", type(plugin).__name__)) from None


class PluginActor:
    """One Ray Data actor: the plugin, unpickled once, applied to each block of rows."""

    def __init__(self, payload: list, threads: int, set_threads: bool):
        import ray
        from ray import cloudpickle

        try:
            self.plugin = cloudpickle.loads(ray.get(payload[0]))
        except ImportError as exc:  # the plugin's package is not installed on this node
            raise PlaceDeMarcheError(
                f"ray: a worker cannot load the plugin: {_first_line(exc)}; install its package on every node "
                "or ship it with runtime_env (docs/scale.md)") from None
        params = self.plugin.get_params() if hasattr(self.plugin, "get_params") else {}
        for name in THREAD_PARAMS:
            # the actor's CPU share, not the node's: an unset count would take every core
            if name in params and (params[name] is None or (name == "threads" and set_threads)):
                setattr(self.plugin, name, threads)

    def __call__(self, table) -> dict[str, np.ndarray]:
        ids = table.column("id").to_pylist()
        items = table.column("item").to_pylist()
        batch = transform_rows(self.plugin, ids, items)
        return {"batch": np.array([pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)], dtype=object)}


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise a one-line PlaceDeMarcheError unless ``host:port`` of ``address`` (``ray://host:port``
    or ``host:port``) accepts a TCP connection within ``timeout`` seconds: Ray itself would
    retry for minutes before saying the same."""
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        default = "10001" if address.startswith("ray://") else "6379"
        host, port = target, default
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or type(exc).__name__)
    raise PlaceDeMarcheError(
        f"ray: cannot reach the Ray cluster at '{address}' ({reason}); start one with `ray start --head` "
        "there, check the host and port (ray://HOST:10001 for Ray Client), or leave --address out for a local Ray")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _unwrap(exc: BaseException, who: str) -> PlaceDeMarcheError:
    """The PlaceDeMarcheError a worker raised, found in Ray's wrappers, or a one-line one."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, PlaceDeMarcheError):
            return current
        cause = getattr(current, "cause", None)  # RayTaskError keeps the original here
        stack += [current.__cause__, current.__context__, cause if isinstance(cause, BaseException) else None]
    # an actor that died in __init__ only keeps the worker's traceback as text: its last line
    # ("module.SomeError: message") says what went wrong
    raised = [m for m in _RAISED.finditer(str(exc))]
    if raised:
        kind, message = raised[-1].group(1), raised[-1].group(2).strip()
        return PlaceDeMarcheError(message if kind.endswith(_OUR_ERRORS) else
                                  f"ray: '{who}' failed on a worker: {kind.rsplit('.', 1)[-1]}: {message}")
    return PlaceDeMarcheError(f"ray: '{who}' failed on a worker: {_first_line(exc)}")


_RAISED = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$", re.MULTILINE)
_OUR_ERRORS = tuple(cls.__name__ for cls in (PlaceDeMarcheError, *PlaceDeMarcheError.__subclasses__()))
