"""The application factory: one ``web.Application`` per worker process.

Startup and teardown are written together in ``cleanup_ctx`` (aiohttp): the pool, the
LISTEN/NOTIFY listener, the services, the audit writer and the background tasks are
created before ``yield`` and closed after it, in reverse order.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web

from regiond.audit import load_signer
from regiond.audit.anchors import V2_ANCHOR_FILE_NAME
from regiond.audit.calls import AuditSink
from regiond.audit.digests import DigestTask
from regiond.auth.authn import Authenticator
from regiond.auth.failures import FailureThrottle
from regiond.background.import_expiry import ImportExpirySweeper
from regiond.background.leadership import Leadership
from regiond.background.periodic import run_periodically
from regiond.background.rotation_scheduler import RotationScheduler
from regiond.background.sweeper import DeletionSweeper
from regiond.clock import Clock, SystemClock
from regiond.config import Settings
from regiond.crypto.keyring import AesRootKeyring, KeyringError, RootKeyring, env_keyring, load_file_keyring
from regiond.protocol.refused_http import quiet_refused_http
from regiond.protocol.routes import (
    AUDIT,
    FORWARDER,
    MAX_BODY_BYTES,
    SERVICES,
    expect_continue,
    handle,
    serve_forwarded,
)
from regiond.runtime import metrics
from regiond.service.aliases import AliasService
from regiond.service.asymmetric import AsymmetricService
from regiond.service.authz import Authorizer
from regiond.service.container import Services
from regiond.service.cryptops import CryptoService
from regiond.service.datakeypairs import DataKeyPairService
from regiond.service.grants import CHANNEL as GRANTS_CHANNEL
from regiond.service.grants import GrantCache, GrantService
from regiond.service.iam import IamService
from regiond.service.iam_authz import IamAuthorizer
from regiond.service.importing import ImportService
from regiond.service.keycache import CHANNEL as KEYS_CHANNEL
from regiond.service.keycache import KeyCache
from regiond.service.keys import KeyService, UsageTracker
from regiond.service.mac import MacService
from regiond.service.multiregion import MultiRegionService
from regiond.service.peer_authz import PeerAuthorizationAnswerer
from regiond.service.policies import KeyPolicyService
from regiond.service.preload import Preloader
from regiond.service.readiness import Readiness
from regiond.service.rotation import RotationService
from regiond.store import migrate as migrations
from regiond.store.notify import Listener
from regiond.store.pool import Pool, create_pool
from replication.channel import Transport
from replication.runtime import OUTBOX_CHANNEL, ReplicationNode, load_cluster, outbox_for

log = structlog.get_logger(__name__)

POOL: web.AppKey[Pool] = web.AppKey("pool")
LISTENER = web.AppKey("listener", Listener)
SWEEPER = web.AppKey("sweeper", DeletionSweeper)
ROTATION_SCHEDULER = web.AppKey("rotation_scheduler", RotationScheduler)
IMPORT_EXPIRY = web.AppKey("import_expiry", ImportExpirySweeper)
REPLICATION = web.AppKey("replication", ReplicationNode)
PRELOADER = web.AppKey("preloader", Preloader)
LEADERSHIP = web.AppKey("leadership", Leadership)
READINESS = web.AppKey("readiness", Readiness)

AuditFactory = Callable[[Pool, Settings], Awaitable[AuditSink]]
IAM_CHANNEL = "regionkms_iam"


def _interval_s(settings: Settings, name: str, default: float) -> float:
    """A background interval from ``settings.extra`` (tests lengthen them to keep the DB quiet)."""
    return float(settings.extra.get(name, default))


async def _flush_usage(keys: KeyService, pool: Pool, clock: Clock, stop: asyncio.Event, interval_s: float) -> None:
    """Write GetKeyLastUsage data in batches, off the hot path; a last flush on shutdown."""

    async def flush(_now: dt.datetime) -> None:
        await keys.usage.flush(pool)

    await run_periodically("key_usage", flush, clock=clock, interval_s=interval_s, stop=stop, final_round=True)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness (regiond.service.readiness): 200 when this worker can serve, 503 with the reason otherwise."""
    readiness = request.app.get(READINESS)
    if readiness is None:  # still starting
        return web.json_response({"status": "unavailable", "reason": "starting"}, status=503)
    ready, body = await readiness.check()
    return web.json_response(body, status=200 if ready else 503)


async def metrics_handler(_request: web.Request) -> web.Response:
    return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")


def create_app(
    settings: Settings,
    keyring: RootKeyring,
    *,
    clock: Clock | None = None,
    audit_factory: AuditFactory | None = None,
    migrate: bool = True,
    replication_transport: Transport | None = None,
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    quiet_refused_http()
    the_clock = clock or SystemClock()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url, max_size=settings.pool_max_size)
        if migrate:
            await migrations.migrate(pool)
        listener = Listener(settings.database_url)
        topology = load_cluster(settings)  # None: this node does not replicate
        outbox = outbox_for(settings, topology)
        iam = IamService(pool, keyring, outbox=outbox)
        throttle = FailureThrottle(burst=settings.auth_failure_burst, refill_per_s=settings.auth_failure_refill_per_s)
        authn = Authenticator(
            pool, keyring, region=settings.region, max_skew_s=settings.max_clock_skew_s, ttl_s=settings.cache_ttl_s,
            throttle=throttle,
        )  # fmt: skip
        iam_authz = IamAuthorizer(iam, ttl_s=settings.cache_ttl_s)
        listener.subscribe(IAM_CHANNEL, authn.invalidate)
        listener.subscribe(IAM_CHANNEL, iam_authz.invalidate)
        iam.on_change += [authn.invalidate, iam_authz.invalidate]  # this process at once, before the NOTIFY
        grant_cache = GrantCache(pool, ttl_s=settings.cache_ttl_s)
        key_cache = KeyCache(pool, keyring, ttl_s=settings.cache_ttl_s, grants=grant_cache)
        listener.subscribe(KEYS_CHANNEL, key_cache.invalidate)
        listener.subscribe(GRANTS_CHANNEL, grant_cache.invalidate)
        # Bulk-fills both caches off the request path; the listener's first "drop everything"
        # (on connecting) starts it, and each later one (a lost connection) runs it again.
        preloader = Preloader(pool, key_cache, grant_cache, max_keys=settings.cache_preload_max_keys)
        listener.subscribe(KEYS_CHANNEL, preloader.request)
        authz = Authorizer(iam_authz, key_cache, grant_cache, ttl_s=settings.cache_ttl_s, region=settings.region)
        usage = UsageTracker(the_clock)
        keys = KeyService(pool, keyring, key_cache, authz, region=settings.region, clock=the_clock, usage=usage)
        # Each service gets the collaborators it uses, not a way to reach them through KeyService.
        asymmetric = AsymmetricService(keys, authz=authz, usage=usage)
        cryptops = CryptoService(keys, asymmetric, authz=authz, cache=key_cache, usage=usage)
        replication = None
        if topology is not None:
            answerer = PeerAuthorizationAnswerer(iam, authz=authz, cache=key_cache)
            replication = ReplicationNode(
                settings=settings, topology=topology, keyring=keyring, pool=pool, clock=the_clock, outbox=outbox,
                transport=replication_transport,
                authorize=lambda q: answerer.decide(
                    source=q.source, principal_arn=q.principal_arn, action=q.action, key_id=q.key_id, values=q.values,
                ),
                # A request another region relays is served here as this region's own call.
                forward=lambda peer, address, envelope: serve_forwarded(app, peer, address, envelope),
            )  # fmt: skip
        rotation = RotationService(pool, keyring, keys, authz=authz, cache=key_cache, material_listener=outbox)
        importing = ImportService(pool, keyring, keys, authz=authz, cache=key_cache)
        services = Services(
            settings=settings, clock=the_clock, authn=authn, iam=iam, iam_authz=iam_authz, authz=authz,
            keys=keys, aliases=AliasService(pool, keys, authz=authz, cache=key_cache), cryptops=cryptops,
            grants=GrantService(pool, keys, grant_cache, authz=authz, key_cache=key_cache),
            policies=KeyPolicyService(pool, keys, authz=authz, cache=key_cache),
            macs=MacService(keys, authz=authz, usage=usage), asymmetric=asymmetric,
            data_key_pairs=DataKeyPairService(cryptops),
            # UpdatePrimaryRegion asks the replica's region through the replication node (None: no peers)
            multiregion=MultiRegionService(pool, keys, outbox, authz=authz, cache=key_cache, peers=replication),
            rotation=rotation, importing=importing,
        )  # fmt: skip
        rotation_scheduler = RotationScheduler(
            pool, rotation, the_clock, interval_s=_interval_s(settings, "rotation_interval_s", 300.0)
        )
        import_expiry = ImportExpirySweeper(
            pool, importing, the_clock, interval_s=_interval_s(settings, "import_expiry_interval_s", 60.0)
        )
        sweeper = DeletionSweeper(
            pool, the_clock, interval_s=_interval_s(settings, "sweeper_interval_s", 60.0),
            on_destroyed=key_cache.invalidate, outbox=outbox,
        )  # fmt: skip
        audit: AuditSink
        if audit_factory is not None:
            audit = await audit_factory(pool, settings)
        else:
            from regiond.audit.calls import NullAuditSink

            audit = NullAuditSink()
        app[POOL] = pool
        app[LISTENER] = listener
        app[SERVICES] = services
        app[AUDIT] = audit
        app[SWEEPER] = sweeper
        app[ROTATION_SCHEDULER] = rotation_scheduler
        app[IMPORT_EXPIRY] = import_expiry
        app[PRELOADER] = preloader
        if replication is not None:
            listener.subscribe(OUTBOX_CHANNEL, replication.on_outbox_notify)
            app[REPLICATION] = replication
            app[FORWARDER] = replication  # any node serves any region of its cluster
        await listener.start()
        if replication is not None:
            await replication.start()
        stop = asyncio.Event()
        # Region-wide tasks: one process of the region runs each (regiond.background.leadership).
        leadership = Leadership(settings.database_url, region=settings.region, poll_s=settings.leader_poll_s)
        leadership.add("deletion-sweeper", sweeper.run)
        leadership.add("rotation-scheduler", rotation_scheduler.run)
        leadership.add("import-expiry-sweeper", import_expiry.run)
        leadership.add("audit-digests", DigestTask(
            pool, settings.region, load_signer(settings) if audit_factory is not None else None,
            interval_s=settings.audit_digest_interval_s, close_after_s=settings.audit_writer_close_after_s,
            clock=the_clock, anchor_path=settings.state_dir / V2_ANCHOR_FILE_NAME if settings.state_dir else None,
        ).run)  # fmt: skip
        app[LEADERSHIP] = leadership
        # Per-process tasks: every worker flushes its own usage counts and fills its own caches.
        tasks = [
            asyncio.create_task(leadership.run(stop), name="background-leadership"),
            asyncio.create_task(
                _flush_usage(keys, pool, the_clock, stop, _interval_s(settings, "usage_flush_interval_s", 5.0)),
                name="key-usage-flusher",
            ),
            asyncio.create_task(preloader.run(stop), name="cache-preloader"),
        ]
        app[READINESS] = Readiness(pool, listener, preloader, audit)
        log.info("node.started", region=settings.region)
        yield
        if replication is not None:
            await replication.stop()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await listener.stop()
        closer = getattr(audit, "close", None)
        if closer is not None:
            await closer()
        await pool.close()
        log.info("node.stopped", region=settings.region)

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/", handle, expect_handler=expect_continue)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    return app


def load_keyring(settings: Settings) -> AesRootKeyring:
    """The region root key: ``REGIOND_ROOT_KEY`` when set, else the state directory's key file."""
    if settings.root_key_b64:
        return env_keyring(settings.root_key_b64)
    if settings.root_key_path is None:
        raise KeyringError("no root key: give --state-dir (made by `regiond init`) or REGIOND_ROOT_KEY")
    return load_file_keyring(settings.root_key_path)


def build_app(settings: Settings) -> web.Application:
    """The production wiring (module-level so the spawned worker processes can import it)."""
    from regiond.audit import make_audit_sink

    audit_factory = make_audit_sink if settings.audit_enabled else None
    return create_app(settings, load_keyring(settings), audit_factory=audit_factory)
