"""`countersign serve`: every part of the daemon wired on one asyncio loop.

SMTP in and the web server listen on the loop; the sweeps (apply, expire,
remind, outbox, inbox) run on APScheduler and are woken by the commits that
give them work; IMAP in has its own thread.  Kept apart from daemon.py so
that the other commands do not import the servers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from countersign.config import Config, parse_duration
from countersign.gateway import metrics
from countersign.gateway.cli.service import ServeOptions, Service
from countersign.gateway.hooks.sender import HookSender
from countersign.gateway.mail_in.imap import ImapReader, start_imap
from countersign.gateway.mail_in.smtp import start_smtp
from countersign.gateway.mail_in.sweep import MailIn
from countersign.gateway.mail_out.delivery import Deliverer
from countersign.gateway.retention import daily_purge
from countersign.gateway.template_check import check_templates
from countersign.gateway.web.app import Health, create_app, create_metrics_app
from countersign.gateway.web.server import serve_web
from countersign.scheduler.heartbeat import Heartbeat
from countersign.scheduler.sweeper import Sweeper
from countersign.store.db import Store
from countersign.store.leases import instance_key
from countersign.store.migrate import SchemaBehind, ensure_schema
from countersign.store.watch import CommitWatcher
from countersign.workflow import hooks, sign_in, sweeps
from countersign.workflow.lifecycle import utcnow
from countersign.workflow.policy import Policy
from countersign.workflow.send_limits import SendLimits

log = logging.getLogger("countersign")


HOURLY = timedelta(hours=1)


class StartupError(Exception):
    """The daemon cannot start (a port taken, ...): one line for the operator."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def build_sweeper(store: Store, config: Config, deliverer: Deliverer, mail_in: MailIn) -> Sweeper:
    policy = Policy.from_config(config)
    sweeper = Sweeper(outage=store.health.failed)
    every = config.sweep_every
    sweeper.add("apply", lambda: sweeps.apply_ready(store, policy), every)
    sweeper.add("expire", lambda: sweeps.expire_due(store, policy), every)
    sweeper.add("remind", lambda: sweeps.remind_due(store, policy), every)
    sweeper.add("outbox", deliverer.deliver_due, every)
    sweeper.add("inbox", mail_in.process_due, every)
    if config.retention:
        sweeper.add("retention", lambda: daily_purge(store, config), timedelta(days=1))
    limits = SendLimits.from_config(config)  # the stale sign-ins are those it counts no more
    sweeper.add("sign-in", lambda: sign_in.forget_stale(store, utcnow(), limits), HOURLY)
    store.on_commit("apply", lambda: sweeper.wake("apply"))
    store.on_commit("outbox", lambda: sweeper.wake("outbox"))
    store.on_commit("inbox", lambda: sweeper.wake("inbox"))
    add_hooks(sweeper, store, config, deliverer.owner)
    return sweeper


def add_hooks(sweeper: Sweeper, store: Store, config: Config, owner: int | None) -> None:
    """The webhook and applier deliveries (gateway/hooks/), woken by the acts that queue them."""
    sender = HookSender(store, config)
    sender.owner = owner  # the daemon's worker row: its claims are given back if it dies
    sweeper.add("hooks", sender.deliver_due, config.sweep_every)
    store.on_commit("hooks", lambda: sweeper.wake("hooks"))


def start_web(
    store: Store, config: Config, health: Health, stop: asyncio.Event, ready: asyncio.Event
) -> asyncio.Task[None]:
    """The link's page, the API, /healthz and /metrics; a web server that dies stops the daemon."""
    app = create_app(store, config, health=health)
    web = asyncio.create_task(
        serve_web(app, config.web.host, config.web.port, stop, listening=ready), name="web"
    )
    web.add_done_callback(lambda _: stop.set())
    web.add_done_callback(lambda _: ready.set())  # a web server that failed is not waited for
    return web


def start_metrics(store: Store, config: Config, stop: asyncio.Event) -> asyncio.Task[None] | None:
    """/metrics on a listener of its own, when `web.metrics_port` is set."""
    if not config.web.metrics_port:
        return None
    host = config.web.metrics_host or config.web.host
    app = create_metrics_app(store)
    task = asyncio.create_task(serve_web(app, host, config.web.metrics_port, stop), name="metrics")
    task.add_done_callback(lambda _: stop.set())
    return task


def door_health(
    sweeper: Sweeper | None, smtp: asyncio.Server | None, imap: ImapReader | None
) -> Health:
    """/healthz's view of this daemon: each door it runs, the relay's last attempt."""

    def check() -> dict[str, Any]:
        checks: dict[str, Any] = {"loops": sweeper is None or bool(sweeper.scheduler.running)}
        if smtp is not None:
            checks["smtp"] = smtp.is_serving()
        if imap is not None:
            checks["imap"] = imap.reading
        last = dict(metrics.last_delivery)
        if last:
            at = datetime.fromtimestamp(float(str(last["at"])), UTC)
            ok = last["outcome"] == "sent"
            checks["relay"] = {"ok": ok, "lastAttempt": at.isoformat(), "outcome": last["outcome"]}
        return checks

    return check


async def listen_smtp(store: Store, config: Config) -> asyncio.Server:
    """SMTP in, on this loop; a port that cannot be had stops the daemon with one line."""
    try:
        return await start_smtp(store, config)
    except OSError as error:
        where = f"{config.inbound.smtp_host}:{config.inbound.smtp_port}"
        raise StartupError(
            f"SMTP in: cannot listen on {where}: {error.strerror or error}"
        ) from None


async def start_heartbeat(
    store: Store, config: Config, deliverer: Deliverer, mail_in: MailIn
) -> Heartbeat:
    """This daemon's worker row: its claims name it, and its last life's claims come back."""
    instance = instance_key(config.data_dir)
    heartbeat = Heartbeat(store, instance, config.owner_timeout)
    deliverer.owner = mail_in.owner = await asyncio.to_thread(heartbeat.register)
    heartbeat.start()
    return heartbeat


async def open_store(config: Config, options: ServeOptions) -> Store:
    problems = check_templates(config)
    if problems:  # a broken override fails now, not at the first notice that needs it
        raise StartupError(problems[0], 2)
    Path(config.data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    store = Store(config.database_url)
    hooks.attach(store, config)  # the acts of this daemon queue events for the endpoints
    try:
        await asyncio.to_thread(ensure_schema, store.engine, migrate=options.migrate)
    except SchemaBehind as error:
        store.dispose()
        raise StartupError(str(error), 2) from None
    return store


def start_sweeps(
    sweeper: Sweeper, watcher: CommitWatcher, deliverer: Deliverer, mail_in: MailIn
) -> None:
    # Their processes start now, not at the first burst: under a trickle the
    # composing one never started, and a burst paid the mail-in one's start.
    deliverer.composer.start()
    mail_in.worker.start()
    sweeper.start()
    watcher.start()


async def stop_sweeps(sweeper: Sweeper, watcher: CommitWatcher, grace: float) -> None:
    """No more wakes, the runs in hand finished (up to ``grace`` seconds), then stopped."""
    await asyncio.to_thread(watcher.stop)
    await sweeper.drain(grace)
    sweeper.shutdown()


async def run_daemon(config: Config, stop: asyncio.Event, service: Service | None = None) -> None:
    """Everything on one asyncio loop until ``stop`` is set; only the doors asked for."""
    service = service or Service(config, ServeOptions(), stop)
    doors = service.options.doors
    # The API reads its keys from the service's dict, which SIGHUP changes in place.
    config = dataclasses.replace(config, api=dataclasses.replace(config.api, keys=service.api_keys))
    store = await open_store(config, service.options)
    smtp = await listen_smtp(store, config) if "smtp" in doors else None
    # Kept: each may run a process (composing, reading) to stop at the end.
    deliverer = Deliverer(store, config)
    mail_in = MailIn(store, config)
    heartbeat = await start_heartbeat(store, config, deliverer, mail_in)
    sweeper = build_sweeper(store, config, deliverer, mail_in) if "sweeps" in doors else None
    watcher = CommitWatcher(store)  # the command line's commits wake the sweeps too
    if sweeper is not None:
        start_sweeps(sweeper, watcher, deliverer, mail_in)
    imap = start_imap(store, config, heartbeat.worker_id) if "imap" in doors else None
    web_ready = asyncio.Event()
    health = door_health(sweeper, smtp, imap)
    web = start_web(store, config, health, stop, web_ready) if "web" in doors else None
    await web_ready.wait() if web is not None else None
    metrics_web = start_metrics(store, config, stop) if "web" in doors else None
    log.info("countersign serving (database %s)", store.engine.url.render_as_string())
    if not stop.is_set():
        up = {"smtp": smtp, "imap": imap, "web": web, "sweeps": sweeper}
        service.ready(sorted(door for door, running in up.items() if running is not None))
    watchdog = asyncio.create_task(service.watchdog(), name="watchdog")
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        service.stopping()
        grace = parse_duration(config.shutdown_grace).total_seconds()
        # First: the outbox pass in hand ends after its claimed batches, not the whole backlog.
        deliverer.stop_claiming()
        stop.set()  # the web server stops on it too, after the requests in flight
        await asyncio.wait({t for t in (web, metrics_web, watchdog) if t is not None})
        if smtp is not None:
            smtp.close()
        if imap is not None:
            await asyncio.to_thread(imap.stop)
        if sweeper is not None:
            await stop_sweeps(sweeper, watcher, grace)
        await asyncio.to_thread(heartbeat.stop)  # what is still claimed is free at once
        await asyncio.to_thread(deliverer.close)  # after the notices it is composing
        await asyncio.to_thread(mail_in.close)
        store.dispose()
    if web is not None and not web.cancelled() and web.exception() is not None:
        raise StartupError(str(web.exception()))


async def serve_until_signalled(
    config: Config,
    options: ServeOptions | None = None,
    secrets: Callable[[Config], Iterable[str | None]] | None = None,
) -> None:
    stop = asyncio.Event()
    service = Service(config, options or ServeOptions(), stop)
    if secrets is not None:
        service.secrets = secrets
    service.install_signals(asyncio.get_running_loop())
    try:
        await run_daemon(config, stop, service)
    finally:
        service.notifier.close()
