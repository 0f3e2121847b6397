"""`pm serve`: the categorisation service (HTTP API, seller page, metrics) on uvicorn or Ray Serve,
and `pm feedback export`: what people chose in it, as a CSV file."""

from __future__ import annotations

import ipaddress

import click


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("serve")
@click.option("--model", "model_dir", required=True, type=click.Path(),
              help="Model directory from pm train. Its model.joblib is a pickle: loading it runs code, so use "
                   "only models you trust (a checksum in model.json catches damaged or swapped files).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; set an API key then).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes, each with its own copy of the model.")
@click.option("--engine", "runner", type=click.Choice(["uvicorn", "ray"]), default="uvicorn", show_default=True,
              help="uvicorn: --workers processes on this machine; ray: a Ray Serve deployment of the same app "
                   "(--replicas or --min/--max-replicas, --address; needs the ray and serve extras).")
@click.option("--replicas", type=click.IntRange(min=1), help="[ray] A fixed number of replicas (default 1).")
@click.option("--min-replicas", type=click.IntRange(min=0), help="[ray] Autoscaling: fewest replicas.")
@click.option("--max-replicas", type=click.IntRange(min=1), help="[ray] Autoscaling: most replicas.")
@click.option("--cpus-per-replica", type=click.FloatRange(min=0, min_open=True),
              help="[ray] CPUs Ray reserves for each replica (default 1).")
@click.option("--address", help="[ray] Ray cluster to join (auto, HOST:6379, ray://HOST:10001; default: "
                                "$RAY_ADDRESS, else a local Ray).")
@click.option("--target-precision", type=click.FloatRange(0, 1, min_open=True),
              help="Precision the 'auto' answers must reach: picks another point of the risk-coverage curve pm "
                   "train stored (default: the threshold it chose).")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Most products predicted together (dynamic batching).")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Longest wait for more products before a batch runs.")
@click.option("--batch-limit", type=click.IntRange(min=1), default=256, show_default=True,
              help="Most products in one /v1/categorise/batch request.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Largest photo (413 above it, refused before the body is read).")
@click.option("--max-batch-mb", type=click.FloatRange(min=0, min_open=True), default=64.0, show_default=True,
              help="Largest body of a batch request.")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True,
              help="Categories listed with their probabilities in each answer.")
@click.option("--api-key-file", type=click.Path(dir_okay=False),
              help="File holding the API key (first line) that every endpoint but /healthz and /readyz requires "
                   "as 'Authorization: Bearer KEY' (default: $PM_API_KEY; none: no key).")
@click.option("--db", metavar="PATH_OR_URL",
              help="Record every answer, and feedback at POST /v1/feedback: an SQLite file or an SQLAlchemy URL "
                   "(postgresql://...). Without it nothing is written.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
def serve(model_dir, host, port, workers, runner, replicas, min_replicas, max_replicas, cpus_per_replica,
          address, target_precision, max_batch, max_wait_ms, batch_limit, max_upload_mb,
          max_batch_mb, top_k, api_key_file, db, log_level):
    """Serve a trained model over HTTP: categorise products as sellers post them.

    The seller page is at /, the API under /v1 (documented at /docs), health at /healthz and
    /readyz, Prometheus metrics at /metrics. Each answer says 'auto' (accept) or 'review' (a
    person checks), from the threshold pm train measured for its target precision. POST
    /v1/model/reload or SIGHUP reloads the model directory without dropping requests.

    \b
    Examples:
      pm serve --model models/flipkart
      curl -F name='Cotton towel' -F photo=@towel.jpg http://127.0.0.1:8000/v1/categorise
      PM_API_KEY=secret pm serve --model models/flipkart --host 0.0.0.0 --workers 2 --db answers.sqlite
    """
    import os

    import uvicorn
    from rich.markup import escape

    from placedemarche.cli.render import console, err_console
    from placedemarche.serve.app import create_app
    from placedemarche.serve.engine import Categoriser
    from placedemarche.serve.settings import SETTINGS_ENV, ServeSettings, read_api_key

    ray_options = {"--replicas": replicas, "--min-replicas": min_replicas, "--max-replicas": max_replicas,
                   "--cpus-per-replica": cpus_per_replica, "--address": address}
    if runner == "uvicorn" and any(v is not None for v in ray_options.values()):
        given = ", ".join(k for k, v in ray_options.items() if v is not None)
        raise click.UsageError(f"{given}: only with --engine ray")
    if runner == "ray" and workers != 1:
        raise click.UsageError("--workers is uvicorn's: with --engine ray give --replicas (or --min/--max-replicas)")
    settings = ServeSettings(model_dir=model_dir, target_precision=target_precision, max_batch=max_batch,
                             max_wait_ms=max_wait_ms, batch_limit=batch_limit, max_upload_mb=max_upload_mb,
                             max_batch_mb=max_batch_mb, top_k=top_k, api_key=read_api_key(api_key_file), db=db,
                             reload_on_sighup=workers == 1).check()
    # loaded here first: a damaged model or database stops with one line before any worker starts
    engine = Categoriser(settings)
    loaded = engine.current
    for note in loaded.notes:
        err_console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False, soft_wrap=True)
    if settings.api_key is None and not is_loopback(host):
        err_console.print(f"[yellow]warning:[/] listening on {escape(host)} without an API key: anyone who can "
                          "reach it can use it (set --api-key-file or PM_API_KEY)", highlight=False, soft_wrap=True)
    console.print(f"Serving {escape(loaded.model_id)} ({len(loaded.model.categories)} categories; "
                  f"{escape(loaded.decision_summary)})", highlight=False, soft_wrap=True)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    console.print(f"Seller page: http://{shown}:{port}/   API docs: http://{shown}:{port}/docs", highlight=False)
    if runner == "ray":
        from placedemarche.serve.ray_deployment import RayServeOptions, serve_on_ray

        if engine.db is not None:
            engine.db.close()  # each replica opens its own
        options = RayServeOptions(address=address, replicas=replicas, min_replicas=min_replicas,
                                  max_replicas=max_replicas, cpus_per_replica=cpus_per_replica or 1.0,
                                  host=host, port=port)
        serve_on_ray(settings, options, started=lambda service: console.print(
            f"Ray Serve: {escape(service.url)} ({escape(options.describe())}); Ctrl-C stops it", highlight=False))
        return
    log_config = _log_config()
    if workers == 1:
        uvicorn.run(create_app(engine), host=host, port=port, log_level=log_level, log_config=log_config)
        return
    if engine.db is not None:
        engine.db.close()
    os.environ[SETTINGS_ENV] = settings.to_env()
    uvicorn.run("placedemarche.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, log_config=log_config)


def _log_config() -> dict:
    """uvicorn's logging, with the service's own logger (reloads, database failures) beside its own."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["placedemarche.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


# -- `pm feedback export`: the categories people chose in the service, as a CSV file ----------

@click.group("feedback")
def feedback():
    """Read the feedback and answer log that pm serve --db records."""


@feedback.command("export")
@click.argument("db", metavar="DB")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="CSV file to write.")
@click.option("--history", "rows", flag_value="history",
              help="Every feedback row in the order given, not only the latest per product.")
@click.option("--answers", "rows", flag_value="answers",
              help="The log of the answers the service gave instead of the feedback.")
def feedback_export(db, out, rows):
    """Write the feedback of DB (an SQLite file or a database URL, as given to pm serve --db) to a CSV.

    By default one row per product id: the category a person chose last for it. Columns: id,
    product_id, category, model_id, name, description, photo_ref, created (UTC).

    \b
    Examples:
      pm feedback export service.db -o feedback.csv
      pm feedback export postgresql://pm@db.internal/pm -o feedback.csv --history
      pm train --text tfidf --feedback service.db --out models/m2
    """
    from placedemarche.cli.render import console
    from placedemarche.serve.db import open_db

    what = rows or "latest"
    with open_db(db, create=False) as service_db:
        written = service_db.export_csv(out, rows=what)
        label = service_db.label
    kind = {"latest": "products' latest feedback", "history": "feedback rows", "answers": "answers"}[what]
    console.print(f"{written} {kind} from {label} -> {out}", highlight=False, soft_wrap=True)
