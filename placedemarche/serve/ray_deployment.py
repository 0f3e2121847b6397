"""`pm serve --engine ray`: the same FastAPI app as a Ray Serve deployment.

Each replica builds its own :class:`~placedemarche.serve.engine.Categoriser` (the model loaded
once per replica and warmed up before ``/readyz`` answers) and serves ``create_app(engine)``
through :func:`ray.serve.ingress` (a builder run when the replica starts), so the endpoints,
the answers, the errors and the seller page are those of `pm serve` on uvicorn. Only the
batching differs: the engine's :class:`~placedemarche.serve.batching.DynamicBatcher` is replaced
by :class:`ServeBatcher`, which groups the products of concurrent requests with Ray Serve's own
``@serve.batch`` (same ``--max-batch`` / ``--max-wait-ms``). Ray Serve's HTTP proxy spreads the
requests over the replicas: ``--replicas N`` of them, or between ``--min-replicas`` and
``--max-replicas`` from the requests waiting on each (Ray Serve's autoscaler).

Where it runs is decided as for `pm extract --engine ray` (the connection logic and one-line
errors of :class:`placedemarche.features.ray_engine.RayEngine`): a local Ray with this
machine's CPUs by default, or the cluster at ``--address`` (``auto``, ``host:6379``,
``ray://host:10001``). On a cluster the model directory must be readable at the same path on
every node, and placedemarche installed there.

Usage::

    service = start_on_ray(ServeSettings(model_dir="models/m"), RayServeOptions(replicas=2, port=8000))
    try:
        ...  # http://127.0.0.1:8000/v1/categorise
    finally:
        service.close()
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from placedemarche.core.errors import MissingDependencyError, PlaceDeMarcheError
from placedemarche.serve.settings import ServeSettings

#: The Ray Serve application and deployment names (`serve status` shows them).
APP_NAME = "placedemarche"
DEPLOYMENT_NAME = "categoriser"
#: Requests waiting per replica the autoscaler aims at (a batch's worth keeps a replica busy).
TARGET_ONGOING_REQUESTS = 8


def import_serve():
    """``ray.serve``, or a one-line MissingDependencyError naming the extras."""
    try:
        from ray import serve
    except ImportError as exc:
        raise MissingDependencyError(
            f'pm serve --engine ray needs Ray Serve ({exc}): pip install "placedemarche[ray,serve]"') from None
    return serve


@dataclass
class RayServeOptions:
    """Where and how many: ``address`` of the Ray cluster (None: ``RAY_ADDRESS``, else a local
    Ray), ``replicas`` (a fixed count) or ``min_replicas``..``max_replicas`` (autoscaling),
    ``cpus_per_replica`` reserved for each, and the HTTP proxy's ``host`` and ``port``."""

    address: str | None = None
    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    cpus_per_replica: float = 1.0
    host: str = "127.0.0.1"
    port: int = 8000

    def check(self) -> "RayServeOptions":
        if self.replicas is not None and (self.min_replicas is not None or self.max_replicas is not None):
            raise PlaceDeMarcheError("give either --replicas N or --min-replicas/--max-replicas (autoscaling), not both")
        for name in ("replicas", "max_replicas"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise PlaceDeMarcheError(f"--{name.replace('_', '-')} must be 1 or more, got {value}")
        if self.min_replicas is not None and self.min_replicas < 0:
            raise PlaceDeMarcheError(f"--min-replicas must be 0 or more, got {self.min_replicas}")
        if (self.min_replicas is not None and self.max_replicas is not None
                and self.min_replicas > self.max_replicas):
            raise PlaceDeMarcheError(f"--min-replicas ({self.min_replicas}) is above --max-replicas "
                                     f"({self.max_replicas})")
        if not self.cpus_per_replica > 0:
            raise PlaceDeMarcheError(f"--cpus-per-replica must be above 0, got {self.cpus_per_replica}")
        return self

    def describe(self) -> str:
        where = self.address or "a local Ray"
        if self.autoscaling:
            count = f"{self.min_replicas if self.min_replicas is not None else 1}..{self.max_replicas or '?'} replicas"
        else:
            count = f"{self.replicas or 1} replica(s)"
        return f"{count} of {self.cpus_per_replica:g} CPU on {where}"

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None

    def deployment_options(self, settings: ServeSettings) -> dict[str, Any]:
        """The ``Deployment.options(...)`` of these options."""
        options: dict[str, Any] = {
            "name": DEPLOYMENT_NAME,
            "ray_actor_options": {"num_cpus": self.cpus_per_replica},
            # room for a full batch waiting while another runs (Ray Serve warns below max_batch)
            "max_ongoing_requests": max(2 * settings.max_batch, 16),
        }
        if self.autoscaling:
            low = self.min_replicas if self.min_replicas is not None else 1
            options["autoscaling_config"] = {
                "min_replicas": low, "initial_replicas": max(low, 1),
                "max_replicas": self.max_replicas if self.max_replicas is not None else max(low, 1),
                "target_ongoing_requests": TARGET_ONGOING_REQUESTS}
        else:
            options["num_replicas"] = self.replicas or 1
        return options


class ServeBatcher:
    """The :class:`~placedemarche.serve.batching.DynamicBatcher` interface (``start``, ``stop``,
    ``submit``) on Ray Serve's ``@serve.batch``: each product is queued on its own, and Ray
    Serve calls ``run_batch`` (in a worker thread: the replica's event loop never blocks) with
    up to ``max_batch`` of them once they are there or ``max_wait`` seconds have passed."""

    def __init__(self, run_batch: Callable[[list], Sequence], max_batch: int = 32, max_wait: float = 0.005,
                 on_batch: Callable[[int], None] | None = None):
        serve = import_serve()
        self.run_batch = run_batch
        self.on_batch = on_batch
        self._gate: asyncio.Event | None = None
        self._running = False

        async def run_many(items: list) -> list:
            if self._gate is not None:
                await self._gate.wait()  # requests that arrive during the warm-up wait for it
            if self.on_batch is not None:
                self.on_batch(len(items))
            return list(await asyncio.to_thread(self.run_batch, items))

        self._one = serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=max_wait)(run_many)

    async def start(self, ready: asyncio.Event | None = None) -> None:
        self._gate = ready
        self._running = True

    async def stop(self) -> None:
        self._running = False

    async def submit(self, items: Sequence) -> list:
        """Queue ``items`` (each on its own) and wait for their results, in order."""
        if not self._running:
            raise RuntimeError("the batcher is not running")
        return list(await asyncio.gather(*(self._one(item) for item in items)))


def replica_app(settings: ServeSettings):
    """The app of one replica: the engine, its batching on ``@serve.batch``, ``create_app``."""
    from placedemarche.serve.app import create_app
    from placedemarche.serve.engine import Categoriser

    engine = Categoriser(settings)
    engine.batcher = ServeBatcher(engine.predict_products, settings.max_batch, settings.max_wait_ms / 1000,
                                  on_batch=engine.metrics.batch_size.observe)
    return create_app(engine)


def build_application(settings: ServeSettings, options: RayServeOptions):
    """The Ray Serve application (``serve.run`` it) of ``settings`` and ``options``."""
    serve = import_serve()
    settings = dataclasses.replace(settings, model_dir=str(Path(settings.model_dir).resolve()),
                                   reload_on_sighup=False).check()

    def build():  # run in each replica when it starts (travels to it by value)
        return replica_app(settings)

    deployment = serve.deployment(serve.ingress(build)())
    return deployment.options(**options.check().deployment_options(settings)).bind()


class RayService:
    """A running ``pm serve --engine ray``: its ``url``; :meth:`close` deletes the application
    and shuts Serve and Ray down when this process started them."""

    def __init__(self, url: str, ray_engine, serve_module):
        self.url = url
        self._ray_engine = ray_engine
        self._serve = serve_module

    def close(self) -> None:
        try:
            self._serve.delete(APP_NAME)
            if self._ray_engine._started:
                self._serve.shutdown()
        finally:
            self._ray_engine.close()


def start_on_ray(settings: ServeSettings, options: RayServeOptions, timeout: float = 600.0) -> RayService:
    """Join or start Ray, start Serve's HTTP proxy on ``options.host:port`` and run the
    application; returns once every replica has loaded the model (the warm-up then goes on
    in each; ``/readyz`` says when it is done)."""
    serve = import_serve()
    options.check()
    from placedemarche.features.ray_engine import RayEngine

    app = build_application(settings, options)
    engine = RayEngine(address=options.address)  # local Ray, or the cluster (one-line errors)
    try:
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        serve.start(http_options={"host": options.host, "port": options.port},
                    logging_config={"log_level": "WARNING"})
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        _wait_running(serve, timeout)
    except BaseException:
        try:
            serve.shutdown()
        finally:
            engine.close()
        raise
    shown = "127.0.0.1" if options.host in ("0.0.0.0", "::") else options.host
    return RayService(f"http://{shown}:{options.port}", engine, serve)


def _wait_running(serve, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = serve.status().applications.get(APP_NAME)
        state = str(getattr(status, "status", "")).rsplit(".", 1)[-1]
        if state == "RUNNING":
            return
        if state in ("DEPLOY_FAILED", "UNHEALTHY"):
            message = (getattr(status, "message", "") or "").strip().splitlines()
            reason = next((line for line in reversed(message) if "Error" in line), message[-1] if message else state)
            raise PlaceDeMarcheError(f"ray serve: the categoriser did not start: {reason.strip()[:300]}")
        if time.monotonic() > deadline:
            raise PlaceDeMarcheError(f"ray serve: the categoriser is not running after {timeout:g} s ({state}); "
                                     "check `ray status` for free CPUs (--cpus-per-replica)")
        time.sleep(0.5)


def serve_on_ray(settings: ServeSettings, options: RayServeOptions,
                 started: Callable[[RayService], None] | None = None) -> None:
    """`pm serve --engine ray`: start the service, call ``started(service)``, and serve until
    Ctrl-C or SIGTERM; then delete the application (and stop the Ray this process started)."""
    import signal
    import threading

    service = start_on_ray(settings, options)
    stop = threading.Event()
    try:
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    except ValueError:  # not the main thread
        previous = None
    try:
        if started is not None:
            started(service)
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        service.close()


def app_builder(args: dict[str, Any]):
    """The application of a Ray Serve config file or ``serve run`` (KubeRay's RayService):
    ``import_path: placedemarche.serve.ray_deployment:app_builder`` with ``args`` holding the
    :class:`ServeSettings` fields (``model_dir`` required; ``max_batch``, ``max_wait_ms``,
    ``target_precision``...) and optionally ``replicas``, ``min_replicas``, ``max_replicas``,
    ``cpus_per_replica``. The API key comes from ``PM_API_KEY`` in the replicas' environment.

    Usage::

        serve run placedemarche.serve.ray_deployment:app_builder model_dir=/models/m replicas=2
    """
    from placedemarche.serve.settings import read_api_key

    args = dict(args or {})
    if not args.get("model_dir"):
        raise PlaceDeMarcheError("the Ray Serve application needs args.model_dir: the model directory from pm train")
    fields = {f.name: f for f in dataclasses.fields(ServeSettings)}
    option_fields = {"replicas": int, "min_replicas": int, "max_replicas": int, "cpus_per_replica": float}
    unknown = sorted(set(args) - set(fields) - set(option_fields))
    if unknown:
        raise PlaceDeMarcheError(f"unknown Ray Serve application args: {', '.join(unknown)} (known: "
                                 f"{', '.join(sorted([*fields, *option_fields]))})")
    settings_args: dict[str, Any] = {}
    defaults = ServeSettings(model_dir="")
    for name, value in args.items():
        if name in option_fields or value is None:
            continue
        default = getattr(defaults, name)
        if name == "target_precision":
            value = float(value)
        elif isinstance(default, bool):
            value = str(value).lower() in ("1", "true", "yes")
        elif isinstance(default, (int, float)):
            value = type(default)(value)
        settings_args[name] = value
    settings_args.setdefault("api_key", read_api_key(None))
    options = RayServeOptions(**{name: cast(args[name]) for name, cast in option_fields.items()
                                 if args.get(name) is not None})
    return build_application(ServeSettings(**settings_args), options)
