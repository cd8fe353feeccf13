"""CPU of an Encrypt 1 KiB with many preloaded keys, in process: first touch, second touch, one key.

    python -m benchmarks.keys_micro [--keys 100000] [--requests 2000] [--rounds 5] [--profile 25]
                                    [--out FILE.json]

Not part of ``make test``. It answers one question of issue 15's "100,000 keys" target: what does
the first request on a key cost, right after a restart (every key preloaded, nothing used yet),
beyond a request on a key already used, and what does a request on one key out of 100,000 cost
beyond one on a single key.

How: a local PostgreSQL (loopback, ``regiond.devtools.postgres``) gets an account and the bench
user (``benchmarks.identity``) and one key made through ``CreateKey``; the other keys are copies of
its row written in bulk (the same default key policy, each with its own freshly wrapped backing
key, as ``CreateKey`` would write them: it is the same rows, minus 100,000 round trips). Then the
application is started again on that database, as a restarted worker is, with
``regiond.runtime.heap`` enabled as ``regiond serve`` enables it, and the micro waits for its
preload. Requests are pre-signed and wrapped in aiohttp mocked requests before timing (as
``benchmarks.hotpath_micro``, whose ``Bench`` this uses), and ``routes.handle`` is timed with
``time.process_time``. Each round runs, interleaved:

- ``one key``: the same key every request (the 1-key figure: every memo hit);
- ``first touch``: each request on a key no request has used yet (right after a restart);
- ``second touch``: the same keys again, in another order (each used once before);
- ``random of all``: keys drawn at random from every key, after a pass that used each key once
  (the steady state).

The result is the best round of each (the least disturbed), with the median beside it, and per
scenario the policy evaluations and key loads per request and the full collections during it; the
process's RSS after the preload and once every key was used. A batch of prebuilt requests that a
full collection froze (``heap``: a slow one freezes its survivors) is collected and the heap frozen
again after the batch, since 2,000 requests held at once are not what a server has in flight.
``--profile N`` adds cProfile's top N functions (self time) over a batch of first touches and one
of second touches, so the difference says what a first touch spends its time on.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from benchmarks.hotpath_micro import (  # noqa: E402
    Bench,
    InProcessRegion,
    _b64,
    _identity,
    in_process_region,
    profile_requests,
)
from regiond import logging as regiond_logging  # noqa: E402
from regiond.app import PRELOADER  # noqa: E402
from regiond.crypto import import_wrap, wrap  # noqa: E402
from regiond.crypto.keyring import RootKeyring  # noqa: E402
from regiond.protocol import routes  # noqa: E402
from regiond.runtime import heap  # noqa: E402
from regiond.store import keys as key_store  # noqa: E402
from regiond.store.pool import create_pool, transaction  # noqa: E402

BULK_KEYS = 5000
PLAINTEXT = _b64(b"\x07" * 1024)


async def _clone_keys(database_url: str, keyring: RootKeyring, template: str, count: int) -> list[str]:
    """``count`` copies of ``template``'s key row, each with its own backing key (version 1)."""
    columns = key_store._COLUMNS.replace("key_id, ", "")
    pool = await create_pool(database_url, min_size=1, max_size=1)
    made: list[str] = []
    try:
        while len(made) < count:
            ids, wrapped, material_ids = [], [], []
            for _ in range(min(BULK_KEYS, count - len(made))):
                key_id = str(uuid.uuid4())
                material = wrap.new_backing_key()
                ids.append(key_id)
                wrapped.append(wrap.wrap(keyring, key_id, 1, material))
                material_ids.append(import_wrap.key_material_id(key_id, material))
            now = dt.datetime.now(dt.UTC)
            async with transaction(pool) as con:
                await con.execute(
                    f"INSERT INTO keys (key_id, {columns}, multi_region) SELECT u.id, {columns}, multi_region"
                    " FROM keys, unnest($1::text[]) AS u(id) WHERE keys.key_id = $2",
                    ids, template,
                )  # fmt: skip
                await con.execute(
                    "INSERT INTO key_materials (key_id, version, key_material_id, created_at)"
                    " SELECT u.id, 1, u.mid, $3 FROM unnest($1::text[], $2::text[]) AS u(id, mid)",
                    ids, material_ids, now,
                )  # fmt: skip
                await con.execute(
                    "INSERT INTO key_versions (key_id, version, material_wrapped, created_at)"
                    " SELECT u.id, 1, u.w, $3 FROM unnest($1::text[], $2::bytea[]) AS u(id, w)",
                    ids, wrapped, now,
                )  # fmt: skip
            made.extend(ids)
    finally:
        await pool.close()
    return made


COUNTS: dict[str, list[float]] = {}
"""Per scenario: [requests, policy evaluations, key loads, full collections] over its timed runs."""


async def _timed(bench: Bench, key_ids: list[str], name: str = "") -> float:
    """CPU us per ``handle`` call of one Encrypt 1 KiB on each of ``key_ids`` (built in advance)."""
    requests = [bench.request(*bench.signed("Encrypt", {"KeyId": k, "Plaintext": PLAINTEXT})) for k in key_ids]
    services = bench.app[routes.SERVICES]
    gc.collect(0)  # not a full collection: that would walk what a serving worker has not frozen yet
    evaluations, loads, full = services.authz.evaluations, services.keys.cache.loads, gc.get_stats()[2]["collections"]
    frozen = gc.get_freeze_count()
    start = time.process_time()
    for request in requests:
        response = await routes.handle(request)
        assert response.status == 200, getattr(response, "body", b"")
    elapsed = time.process_time() - start
    if name:
        counts = COUNTS.setdefault(name, [0, 0, 0, 0])
        counts[0] += len(key_ids)
        counts[1] += services.authz.evaluations - evaluations
        counts[2] += services.keys.cache.loads - loads
        counts[3] += gc.get_stats()[2]["collections"] - full
    del requests, response
    if gc.get_freeze_count() != frozen:
        # A slow full collection froze its survivors (``heap``), this batch's prebuilt requests
        # (reference cycles) among them: collect them and freeze again, as a server's few
        # requests in flight would not have stayed, so that memory holds the caches alone.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
    return elapsed / len(key_ids) * 1e6


def _rss_mib() -> float:
    """This process's resident memory (Linux), MiB."""
    with open("/proc/self/statm") as statm:
        return round(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def _profiled(bench: Bench, key_ids: list[str], top: int) -> str:
    requests = [bench.request(*bench.signed("Encrypt", {"KeyId": k, "Plaintext": PLAINTEXT})) for k in key_ids]
    return profile_requests(requests, top)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    async with in_process_region("keys-micro-") as region:
        return await _measure(region, args)


async def _measure(region: InProcessRegion, args: argparse.Namespace) -> dict[str, Any]:
    admin_url, keyring = region.admin_url, region.keyring
    runner: web.AppRunner | None = None
    try:
        app = region.app()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        credentials = await _identity(admin_url, keyring)
        template = (await Bench(app, credentials).call("CreateKey", {}))["KeyMetadata"]["KeyId"]
        await runner.cleanup()
        runner = None
        started = time.process_time()
        key_ids = [template, *await _clone_keys(admin_url, keyring, template, args.keys - 1)]
        made_s = time.process_time() - started

        heap.enable()  # as a serving worker (regiond serve): the preload freezes the heap
        app = region.app()  # a restarted worker
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        bench = Bench(app, credentials)
        preloader = app[PRELOADER]
        started = time.monotonic()
        while preloader.passes == 0:  # noqa: ASYNC110 - the preloader sets no event
            await asyncio.sleep(0.05)
        preload_s = time.monotonic() - started
        assert preloader.last is not None and preloader.last.stored == args.keys, preloader.last
        rss = {"after_preload": _rss_mib()}

        rng = random.Random(15)
        unused = key_ids[1:]
        rng.shuffle(unused)
        one = [template] * args.requests
        await _timed(bench, one[:200])  # the one key, the credentials, the identity policies
        await _timed(bench, unused[-200:])  # warm-up of the code paths (these keys are then used)
        del unused[-200:]
        timings: dict[str, list[float]] = {"one key": [], "first touch": [], "second touch": []}
        for _ in range(args.rounds):
            fresh, unused = unused[: args.requests], unused[args.requests :]
            timings["one key"].append(await _timed(bench, one, "one key"))
            timings["first touch"].append(await _timed(bench, fresh, "first touch"))
            again = fresh[:]
            rng.shuffle(again)
            timings["second touch"].append(await _timed(bench, again, "second touch"))
        profile = ""
        if args.profile:
            fresh, unused = unused[: args.requests], unused[args.requests :]
            profile = "first touch\n" + _profiled(bench, fresh, args.profile)
            rng.shuffle(fresh)
            profile += "\nsecond touch\n" + _profiled(bench, fresh, args.profile)
        started = time.process_time()
        for start in range(0, len(unused), 2000):  # every key used once: the steady state
            await _timed(bench, unused[start : start + 2000])
        warm_s = time.process_time() - started
        rss["every_key_used"] = _rss_mib()
        if args.profile:
            drawn = [rng.choice(key_ids) for _ in range(args.requests)]
            profile += "\nrandom of all\n" + _profiled(bench, drawn, args.profile)
            profile += "\none key (all warm)\n" + _profiled(bench, one, args.profile)
        timings["random of all"] = []
        timings["one key (all warm)"] = []
        for _ in range(args.rounds):
            drawn = [rng.choice(key_ids) for _ in range(args.requests)]
            timings["random of all"].append(await _timed(bench, drawn, "random of all"))
            timings["one key (all warm)"].append(await _timed(bench, one, "one key (all warm)"))
        return {
            "keys": args.keys,
            "requests": args.requests,
            "rounds": args.rounds,
            "setup_cpu_s": {"clone_keys": round(made_s, 1), "warm_every_key": round(warm_s, 1)},
            "preload_s": round(preload_s, 2),
            "gc_frozen": gc.get_freeze_count(),
            "rss_mib": rss,
            "us_per_request": {
                name: {"min": round(min(v), 1), "median": round(statistics.median(v), 1)} for name, v in timings.items()
            },
            "per_request": {
                name: {
                    "evaluations": round(c[1] / c[0], 3),
                    "key_loads": round(c[2] / c[0], 3),
                    "full_collections": int(c[3]),
                }
                for name, c in COUNTS.items()
            },
            "profile": profile,
        }
    finally:
        if runner is not None:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print cProfile's top N functions")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args()
    regiond_logging.configure("warning")
    results = asyncio.run(main_async(args))
    profile = results.pop("profile")
    rss = results["rss_mib"]
    print(
        f"{args.keys:,} keys, preload {results['preload_s']} s, RSS {rss['after_preload']} MiB after it and"
        f" {rss['every_key_used']} MiB once every key was used; handle() CPU per Encrypt 1 KiB (us)"
    )
    print(f"  {'':<22} {'best':>8} {'median':>8} {'evals/req':>10} {'loads/req':>10} {'full GCs':>9}")
    for name, v in results["us_per_request"].items():
        c = results["per_request"][name]
        print(
            f"  {name:<22} {v['min']:8.1f} {v['median']:8.1f} {c['evaluations']:10.3f} {c['key_loads']:10.3f}"
            f" {c['full_collections']:9d}"
        )
    if profile:
        print(profile)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
