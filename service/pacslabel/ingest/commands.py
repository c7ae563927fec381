"""`pacslabel ingest …` (status and quarantine administration) and the run functions the lead wires into
`pacslabel scp`, `pacslabel worker` and `pacslabel up`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pacslabel.settings import Settings

app = typer.Typer(help="Watch ingest and manage the quarantine.", no_args_is_help=True)


def run_scp(settings: Settings) -> None:
    """Run the storage SCP in this process until SIGTERM/SIGINT (recovers the spool first)."""
    from pacslabel.ingest import storage_scp

    storage_scp.run(settings)


def run_worker(settings: Settings, processes: int | None = None, *, lease_s: float | None = None,
               backoff_cap_s: float | None = None) -> None:
    """Run N de-identification/forwarding worker processes (default settings.workers) until SIGTERM/SIGINT."""
    from pacslabel.ingest import worker

    options = worker.WorkerOptions(lease_s=lease_s or worker.DEFAULT_LEASE_S,
                                   backoff_cap_s=backoff_cap_s or worker.DEFAULT_BACKOFF_CAP_S)
    worker.run(settings, processes, options)


def _settings() -> Settings:
    from pacslabel.logs import configure_logging
    from pacslabel.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _factory(settings: Settings):  # type: ignore[no-untyped-def]
    from pacslabel.db import create_db_engine, make_sessionmaker

    return make_sessionmaker(create_db_engine(settings.effective_database_url))


@app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Queue depth, throughput, last errors, quarantined items with reasons, per-route counts."""
    from pacslabel.db import session_scope
    from pacslabel.ingest import service

    settings = _settings()
    with session_scope(_factory(settings)) as session:
        report = service.status_report(session)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"queue depth: {report['queue_depth']}   by status: {report['by_status']}")
    typer.echo(f"throughput (last 5 min): {report['done_last_5_min_per_minute']} instances/min")
    typer.echo(f"oldest waiting since: {report['oldest_waiting_received_at'] or '-'}")
    typer.echo("per route:")
    for route, counts in sorted(report["per_route"].items()):
        typer.echo(f"  {route}: {counts}")
    typer.echo("last errors:" + ("" if report["last_errors"] else " none"))
    for error in report["last_errors"]:
        typer.echo(f"  item {error['item_id']} ({error['route']}, {error['attempts']} attempts): {error['error']}")
    typer.echo(f"quarantine: {report['quarantine_held']} held")
    for record in report["quarantine"]:
        typer.echo(f"  #{record['id']} item {record['item_id']} {record['created_at']}: {record['reason']}")


@app.command("release")
def release(quarantine_id: int) -> None:
    """Re-queue a quarantined instance (e.g. after a policy change)."""
    from pacslabel.db import session_scope
    from pacslabel.ingest import service

    settings = _settings()
    with session_scope(_factory(settings)) as session:
        service.release(session, settings, quarantine_id, actor="cli")
    typer.echo(f"quarantine item {quarantine_id} released to the queue")


@app.command("delete")
def delete(quarantine_id: int) -> None:
    """Delete a quarantined instance's file for good (the record stays)."""
    from pacslabel.db import session_scope
    from pacslabel.ingest import service

    settings = _settings()
    with session_scope(_factory(settings)) as session:
        service.delete(session, settings, quarantine_id, actor="cli")
    typer.echo(f"quarantine item {quarantine_id} deleted")


@app.command("backfill-accession-keys")
def backfill_accession_keys(
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=10_000,
                                            help="Studies per database transaction.")] = 200,
) -> None:
    """Record the keyed accession (catalog_studies.accession_key) of studies catalogued before ingest did,
    read from one de-identified instance per study in Orthanc. Idempotent; audited per batch."""
    from tqdm import tqdm

    from pacslabel.catalog import accession_backfill, repository
    from pacslabel.db import session_scope
    from pacslabel.orthanc.client import OrthancClient

    settings = _settings()
    factory = _factory(settings)
    with session_scope(factory) as session:
        missing = repository.count_studies_without_accession_key(session)
    if not missing:
        typer.echo("every catalogued study has its accession key; nothing to do")
        return
    with OrthancClient.from_settings(settings) as orthanc, tqdm(total=missing, unit="study",
                                                                desc="accession keys") as bar:
        report = accession_backfill.backfill_accession_keys(factory, orthanc, actor="cli", batch_size=batch_size,
                                                            progress=bar.update)
    typer.echo(f"filled {report.filled} of {report.looked_at} studies; {report.without_accession} without an "
               f"accession number, {report.not_in_orthanc} not in Orthanc, {report.unchanged} filled meanwhile")
    for study in report.left_null[:20]:
        typer.echo(f"  still without a key: {study}")
