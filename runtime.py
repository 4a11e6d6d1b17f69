"""`countersign serve`: every part of the daemon wired on one asyncio loop.

SMTP in and the web server listen on the loop; the sweeps (apply, expire,
remind, outbox, inbox) run on APScheduler and are woken by the commits that
give them work; IMAP in has its own thread.  Kept apart from daemon.py so
that the other commands do not import the servers.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from config import Config
from gateway.delivery import Deliverer
from gateway.hooks import HookSender
from gateway.imap_in import start_imap
from gateway.mail_in import MailIn
from gateway.offload import LOG_FORMAT
from gateway.smtp_in import start_smtp
from gateway.template_check import check_templates
from gateway.web import create_app, serve_web
from scheduler.heartbeat import Heartbeat
from scheduler.sweeper import Sweeper
from store.db import Store
from store.leases import instance_key
from store.migrate import upgrade
from store.watch import CommitWatcher
from workflow import hooks, sweeps
from workflow.policy import Policy

log = logging.getLogger("countersign")
# Stopping waits this long for the sweeps in hand (an outbox pass sending and recording
# its batches); a relay that hangs cannot hold the stop for longer than that.
DRAIN_SECONDS = 10.0


class StartupError(Exception):
    """The daemon cannot start (a port taken, ...): one line for the operator."""


def build_sweeper(store: Store, config: Config, deliverer: Deliverer, mail_in: MailIn) -> Sweeper:
    policy = Policy.from_config(config)
    sweeper = Sweeper(outage=store.health.failed)
    every = config.sweep_every
    sweeper.add("apply", lambda: sweeps.apply_ready(store, policy), every)
    sweeper.add("expire", lambda: sweeps.expire_due(store, policy), every)
    sweeper.add("remind", lambda: sweeps.remind_due(store, policy), every)
    sweeper.add("outbox", deliverer.deliver_due, every)
    sweeper.add("inbox", mail_in.process_due, every)
    store.on_commit("apply", lambda: sweeper.wake("apply"))
    store.on_commit("outbox", lambda: sweeper.wake("outbox"))
    store.on_commit("inbox", lambda: sweeper.wake("inbox"))
    return sweeper


def add_hooks(sweeper: Sweeper, store: Store, config: Config, owner: int) -> None:
    """The webhook and applier deliveries (gateway/hooks.py), woken by the acts that queue them."""
    sender = HookSender(store, config)
    sender.owner = owner
    sweeper.add("hooks", sender.deliver_due, config.sweep_every)
    store.on_commit("hooks", lambda: sweeper.wake("hooks"))


def start_web(
    store: Store, config: Config, sweeper: Sweeper, stop: asyncio.Event
) -> asyncio.Task[None]:
    """The link's page, the API, /healthz and /metrics; a web server that dies stops the daemon."""
    app = create_app(store, config, health=lambda: bool(sweeper.scheduler.running))
    web = asyncio.create_task(serve_web(app, config.web.host, config.web.port, stop), name="web")
    web.add_done_callback(lambda _: stop.set())
    return web


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


async def run_daemon(config: Config, stop: asyncio.Event) -> None:
    """Everything on one asyncio loop until ``stop`` is set."""
    problems = check_templates(config)
    if problems:  # a broken override fails now, not at the first notice that needs it
        raise StartupError(problems[0])
    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    store = Store(config.database_url)
    hooks.attach(store, config)
    await asyncio.to_thread(upgrade, store.engine)
    smtp = await listen_smtp(store, config)
    # Kept: each may run a process (composing, reading) to stop at the end.
    deliverer = Deliverer(store, config)
    mail_in = MailIn(store, config)
    heartbeat = await start_heartbeat(store, config, deliverer, mail_in)
    sweeper = build_sweeper(store, config, deliverer, mail_in)
    add_hooks(sweeper, store, config, heartbeat.worker_id)
    sweeper.start()
    watcher = CommitWatcher(store)  # the command line's commits wake the sweeps too
    watcher.start()
    imap = start_imap(store, config, heartbeat.worker_id)
    web = start_web(store, config, sweeper, stop)
    log.info("countersign serving (database %s)", store.engine.url.render_as_string())
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        # First: the outbox pass in hand ends after its claimed batches, not the whole backlog.
        deliverer.stop_claiming()
        stop.set()  # the web server stops on it too, after the requests in flight
        await asyncio.wait({web})
        smtp.close()
        if imap is not None:
            await asyncio.to_thread(imap.stop)
        await asyncio.to_thread(watcher.stop)
        await sweeper.drain(DRAIN_SECONDS)
        sweeper.shutdown()
        await asyncio.to_thread(heartbeat.stop)  # what is still claimed is free at once
        await asyncio.to_thread(deliverer.close)  # after the notices it is composing
        await asyncio.to_thread(mail_in.close)
        store.dispose()
    if not web.cancelled() and web.exception() is not None:
        raise StartupError(str(web.exception()))


async def serve_until_signalled(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await run_daemon(config, stop)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=LOG_FORMAT,
    )
    if not verbose:
        # APScheduler logs every run of every job at INFO: a line a second per sweep.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # flufl.bounce logs at ERROR whenever one of its detectors trips on odd mail;
    # reading.py already treats that mail as automated, so it is noise here.
    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
    # aiosmtpd logs every SMTP command at INFO: lines by the thousand under load.
    logging.getLogger("mail.log").setLevel(logging.DEBUG if verbose else logging.WARNING)
