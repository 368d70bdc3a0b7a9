"""Fraud-detection benchmark: a real `gateway worker` reads N evaluations and flags what was planted.

On a fresh PostgreSQL database:
  1. seed a month of N evaluations (invitations, citizens by COPY with their numbers encrypted and hashed
     as the gateway does, page signals and SMS prompts), of which a known set was planted by each rule:
     bursts from one number, staff rating their own office, ratings seconds after the page or the prompt,
     rating farms on one device and one address, window staff with nothing but 5s, grudges against one
     staff member, and near-duplicate texts from several numbers; everything else is ordinary traffic;
  2. start `gateway worker` (the app's own background pass, from its cursor) and wait until its cursor
     has read the last evaluation: evaluations per second, and CPU per evaluation of the worker and of
     the PostgreSQL backends serving it;
  3. compare the flags with the planted set: per rule, recall (planted evaluations flagged by the rule)
     and precision (of the evaluations the rule flagged, those planted by it); false flags on the rest.

    python bench/fraud_bench.py --evaluations 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import time
from collections import defaultdict
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    SECRET,
    copy_citizens,
    cpu_seconds,
    database_name,
    fresh_database,
    gateway,
    machine,
    pg_connect,
    run,
)
from gateway.fraud.detect import RULES  # noqa: E402
from gateway.privacy import PhoneVault  # noqa: E402

COUNTIES = [f"6109{n:02d}" for n in (2, 21, 22, 23, 24, 25, 26, 27, 28, 29)]
UNITS_PER_COUNTY = 4
STAFF_PER_UNIT = 10
SPAN = timedelta(days=30)
WORDS = [
    a + b for a in "办事窗口服务材料效率态度流程大厅人员热情耐心快捷方便规范" for b in "好快细心到位清楚及时周到满意高"
]


def phone(i: int) -> str:
    return f"+86137{i:08d}"


def hexhash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class World:
    """What is seeded: evaluation specs in time order, and the planted ids by rule."""

    def __init__(self, n: int, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.n = n
        self.end = datetime.now(timezone.utc) - timedelta(hours=1)
        self.start = self.end - SPAN
        self.units = [(c, u) for c in COUNTIES for u in range(UNITS_PER_COUNTY)]  # (county, unit index)
        self.citizens = max(1000, n // 5)  # ordinary citizens: about five ratings each over the month
        self.fresh = self.citizens  # planted raters get citizens of their own after these
        self.specs: list[dict] = []
        self.planted: dict[str, list[int]] = defaultdict(list)  # rule -> spec indexes, turned into ids later
        self.staff_contacts: list[tuple[int, int]] = []  # (unit number, citizen id)

    def new_citizen(self) -> int:
        self.fresh += 1
        return self.fresh

    def at(self) -> datetime:
        return self.start + timedelta(seconds=self.rng.uniform(0, SPAN.total_seconds() - 86400))

    def add(self, rule: str | None, **spec: object) -> None:
        spec.setdefault("content", "")
        spec.setdefault("staff", None)
        spec.setdefault("level", 5)
        spec.setdefault("signal", None)
        spec.setdefault("prompt", None)
        self.specs.append(spec)
        if rule:
            self.planted[rule].append(len(self.specs) - 1)

    def build(self, planted_scale: float) -> None:
        rng = self.rng
        for i in range(self.n):
            t = self.start + SPAN * (i / self.n)
            citizen = (i * 7919) % self.citizens + 1
            unit = rng.randrange(len(self.units))
            channel = rng.choices(["web", "sms", "bot", "evaluator", "qr"], [0.4, 0.15, 0.1, 0.25, 0.1])[0]
            staff = (
                f"S{unit}-{rng.randrange(STAFF_PER_UNIT)}"
                if channel in ("evaluator", "qr") or rng.random() < 0.3
                else None
            )
            level = rng.choices([5, 4, 3, 2, 1], [0.6, 0.25, 0.1, 0.03, 0.02])[0]
            content = "".join(rng.sample(WORDS, 7)) if rng.random() < 0.05 else ""
            signal = prompt = None
            if channel in ("web", "qr"):
                signal = (f"dev{citizen}", f"addr{rng.randrange(self.n)}", rng.uniform(15, 300))
            elif channel in ("sms", "bot"):
                prompt = rng.uniform(60, 7200)
            self.add(
                None,
                at=t,
                citizen=citizen,
                unit=unit,
                channel=channel,
                staff=staff,
                level=level,
                content=content,
                signal=signal,
                prompt=prompt,
            )
        k = lambda base: max(1, round(base * planted_scale))  # noqa: E731
        for _ in range(k(50)):  # burst: six services within 15 minutes from one number
            citizen, t0 = self.new_citizen(), self.at()
            for j in range(6):
                self.add(
                    "burst",
                    at=t0 + timedelta(minutes=3 * j),
                    citizen=citizen,
                    unit=rng.randrange(40),
                    channel="evaluator",
                )
        for _ in range(k(100)):  # staff_rater: a staff member rates their own unit's service
            citizen, unit = self.new_citizen(), rng.randrange(40)
            self.staff_contacts.append((unit, citizen))
            self.add("staff_rater", at=self.at(), citizen=citizen, unit=unit, channel="evaluator")
        for _ in range(k(200)):  # fast: 1.5 s after the page was shown, 2 s after the prompt
            self.add(
                "fast",
                at=self.at(),
                citizen=self.new_citizen(),
                unit=rng.randrange(40),
                channel="web",
                signal=(f"fastdev{len(self.specs)}", f"fastaddr{len(self.specs)}", 1.5),
            )
            self.add(
                "fast", at=self.at(), citizen=self.new_citizen(), unit=rng.randrange(40), channel="sms", prompt=2.0
            )
        for d in range(k(30)):  # device: eight ratings within six hours from one browser
            t0 = self.at()
            for j in range(8):
                self.add(
                    "device",
                    at=t0 + timedelta(minutes=45 * j),
                    citizen=self.new_citizen(),
                    unit=rng.randrange(40),
                    channel="web",
                    signal=(f"farmdev{d}", f"farmaddr{d}-{j}", 40.0),
                )
        for a in range(k(10)):  # address: forty ratings within twelve hours from one address
            t0 = self.at()
            for j in range(40):
                self.add(
                    "address",
                    at=t0 + timedelta(minutes=18 * j),
                    citizen=self.new_citizen(),
                    unit=rng.randrange(40),
                    channel="web",
                    signal=(f"nat{a}-{j}", f"farm-nat{a}", 40.0),
                )
        for s in range(k(5)):  # staff_share: a window staff member with nothing but 5s all month
            unit = (s * 9) % 40
            for j in range(max(60, self.n // 1500)):
                self.add("staff_share", at=self.at(), citizen=None, unit=unit, channel="evaluator", staff=f"P{s}")
        for _ in range(k(40)):  # targeted: four bad reviews of one staff member within twenty days
            citizen, unit, t0 = self.new_citizen(), rng.randrange(40), self.at() - timedelta(days=20)
            staff = f"S{unit}-{rng.randrange(STAFF_PER_UNIT)}"
            for j in range(4):
                self.add(
                    "targeted",
                    at=t0 + timedelta(days=5 * j),
                    citizen=citizen,
                    unit=unit,
                    channel="evaluator",
                    staff=staff,
                    level=1,
                )
        for _ in range(k(20)):  # near_duplicate: one template from five numbers, a character changed here and there
            template, t0 = "".join(rng.sample(WORDS, 10)), self.at()
            for j in range(5):
                # j = 0: the template with an exclamation mark; then one character replaced, at a different place each
                text = template[: 3 * j] + rng.choice("的了很也都还") + template[3 * j + 1 :] if j else template + "！"
                self.add(
                    "near_duplicate",
                    at=t0 + timedelta(hours=j),
                    citizen=self.new_citizen(),
                    unit=rng.randrange(40),
                    channel="evaluator",
                    content=text,
                    level=4,
                )


LOADED = ("citizen", "staff_contact", "invitation", "evaluation", "rating_signal", "outbound_message")


@asynccontextmanager
async def bulk_load(conn, tables: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """Load the tables without their secondary indexes, unique and foreign-key constraints, then put every
    one back as the migrations made it (a bulk load's usual order: one sorted build per index and one
    validating scan per constraint instead of a B-tree insert and a trigger per row). The primary keys
    stay. What the deployment has at the end is exactly what the migrations left."""
    constraints = await conn.fetch(
        "SELECT conrelid::regclass::text AS tab, conname, pg_get_constraintdef(oid) AS def, contype::text AS contype "
        "FROM pg_constraint WHERE conrelid::regclass::text = ANY($1::text[]) AND contype IN ('f', 'u')",
        list(tables),
    )
    indexes = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes i WHERE tablename = ANY($1::text[]) AND schemaname = 'public' "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
        list(tables),
    )
    for c in constraints:
        if c["contype"] == "f":
            await conn.execute(f'ALTER TABLE {c["tab"]} DROP CONSTRAINT "{c["conname"]}"')
    for c in constraints:
        if c["contype"] == "u":
            await conn.execute(f'ALTER TABLE {c["tab"]} DROP CONSTRAINT "{c["conname"]}"')
    for i in indexes:
        await conn.execute(f'DROP INDEX "{i["indexname"]}"')
    yield
    await conn.execute("SET maintenance_work_mem = '256MB'")
    t0 = time.perf_counter()
    for c in constraints:
        if c["contype"] == "u":
            await conn.execute(f'ALTER TABLE {c["tab"]} ADD CONSTRAINT "{c["conname"]}" {c["def"]}')
    for i in indexes:
        await conn.execute(i["indexdef"])
    t1 = time.perf_counter()
    for c in constraints:
        if c["contype"] == "f":
            await conn.execute(f'ALTER TABLE {c["tab"]} ADD CONSTRAINT "{c["conname"]}" {c["def"]}')
    print(
        f"  {len(indexes)} indexes and {sum(c['contype'] == 'u' for c in constraints)} unique constraints built "
        f"in {t1 - t0:.0f} s, {sum(c['contype'] == 'f' for c in constraints)} foreign keys validated in "
        f"{time.perf_counter() - t1:.0f} s",
        flush=True,
    )


async def seed(db_url: str, world: World) -> dict[str, set[int]]:
    """COPY everything in time order; returns the planted evaluation ids by rule."""
    order = sorted(range(len(world.specs)), key=lambda s: world.specs[s]["at"])
    id_of = {spec_index: n for n, spec_index in enumerate(order, start=1)}
    conn = await pg_connect(db_url)
    try:
        async with bulk_load(conn, LOADED):
            await _load(conn, world, order, id_of)
        t0 = time.perf_counter()
        await conn.execute("ANALYZE")
        print(f"  analysed in {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        await conn.close()
    return {rule: {id_of[s] for s in specs} for rule, specs in world.planted.items()}


async def _load(conn, world: World, order: list[int], id_of: dict[int, int]) -> None:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    now = datetime.now(timezone.utc)
    await conn.execute(
        "INSERT INTO organisation (id, code, name, kind, region_code, created_at) VALUES "
        "(1, 'city', '安康市行政审批服务局', 'city_bureau', '610900', $1)",
        now,
    )
    orgs = [
        (2 + c, f"county{c}", f"县区审批局{c}", "county_dept", county, now) for c, county in enumerate(COUNTIES)
    ]
    units = [
        (100 + u, f"unit{u}", f"承办单位{u}", "unit", county, now) for u, (county, _) in enumerate(world.units)
    ]
    await conn.copy_records_to_table(
        "organisation", records=orgs + units, columns=["id", "code", "name", "kind", "region_code", "created_at"]
    )
    await copy_citizens(conn, [phone(i) for i in range(1, world.fresh + 1)], SECRET)
    vault = PhoneVault(SECRET)
    await conn.copy_records_to_table(
        "staff_contact",
        records=[
            (100 + unit, "STAFF", vault.lookup_hash(phone(citizen)), now) for unit, citizen in world.staff_contacts
        ],
        columns=["org_id", "staff_id", "phone_hash", "created_at"],
    )
    invitations, evaluations, signals, prompts = [], [], [], []
    for spec_index in order:
        spec, n = world.specs[spec_index], id_of[spec_index]
        county = world.units[spec["unit"]][0]
        at = spec["at"]
        invitations.append(
            (
                n,
                f"b{n:015d}",
                100 + spec["unit"],
                spec["citizen"],
                "single",
                f"B-{n}",
                county,
                "个体工商户设立登记",
                "承办单位",
                "window" if spec["staff"] else "online",
                at,
                at + timedelta(days=10),
                False,
                "rated",
                at,
                at,
            )
        )
        evaluations.append(
            (n, n, "all", spec["citizen"], spec["level"], "[]", spec["content"], spec["staff"], spec["channel"], at)
        )
        if spec["signal"]:
            device, address, seconds = spec["signal"]
            signals.append((n, hexhash(address), hexhash(device), at - timedelta(seconds=seconds), at))
        if spec["prompt"] and spec["citizen"]:
            sent = at - timedelta(seconds=spec["prompt"])
            prompts.append(
                (
                    n,
                    "sms",
                    spec["citizen"],
                    "prompt",
                    10,
                    "…",
                    "delivered",
                    sent,
                    1,
                    f"prompt:{n}",
                    n,
                    sent,
                    sent,
                    sent + timedelta(seconds=min(1.0, spec["prompt"] / 2)),
                )
            )
    await conn.copy_records_to_table(
        "invitation",
        records=invitations,
        columns=[
            "id",
            "token",
            "org_id",
            "citizen_id",
            "kind",
            "group_no",
            "region_code",
            "item_name",
            "office_name",
            "service_channel",
            "completed_at",
            "expires_at",
            "expires_provisional",
            "status",
            "rated_at",
            "created_at",
        ],
    )
    await conn.copy_records_to_table(
        "evaluation",
        records=evaluations,
        columns=[
            "id",
            "invitation_id",
            "scope",
            "citizen_id",
            "level",
            "reason_codes",
            "content",
            "staff_id",
            "channel",
            "created_at",
        ],
    )
    await conn.copy_records_to_table(
        "rating_signal",
        records=signals,
        columns=["evaluation_id", "address_hash", "device_hash", "opened_at", "created_at"],
    )
    await conn.copy_records_to_table(
        "outbound_message",
        records=prompts,
        columns=[
            "id",
            "channel",
            "citizen_id",
            "purpose",
            "priority",
            "body",
            "status",
            "next_attempt_at",
            "attempts",
            "dedupe_key",
            "invitation_id",
            "created_at",
            "sent_at",
            "updated_at",
        ],
    )
    for table in ("invitation", "evaluation", "outbound_message"):
        await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    print(f"  rows copied in {time.perf_counter() - t0:.0f} s", flush=True)


async def backend_cpu(conn, database: str) -> float:  # type: ignore[no-untyped-def]
    """CPU seconds so far of the PostgreSQL backends serving this database (other than this connection)."""
    pids = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", database)
    return sum(cpu_seconds(r["pid"]) or 0.0 for r in pids)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluations", type=int, default=1_000_000)
    parser.add_argument("--planted-scale", type=float, default=1.0, help="multiply the planted counts")
    parser.add_argument("--batch", type=int, default=10000, help="GATEWAY_FRAUD_BATCH_SIZE of the worker")
    args = parser.parse_args()
    world = World(args.evaluations)
    t0 = time.perf_counter()
    world.build(args.planted_scale)
    async with fresh_database("bench_fraud_") as db_url:
        env = {
            "GATEWAY_DATABASE_URL": db_url,
            "GATEWAY_SECRET_KEY": SECRET,
            "GATEWAY_REDIS_URL": "",
            "GATEWAY_FRAUD_BATCH_SIZE": str(args.batch),
            "GATEWAY_FRAUD_INTERVAL_SECONDS": "1",
            "GATEWAY_DB_POOL_SIZE": "5",
        }
        run(["migrate"], env)
        planted = await seed(db_url, world)
        seeded = time.perf_counter() - t0
        total = len(world.specs)
        print(
            f"seeded {total} evaluations ({sum(len(v) for v in planted.values())} planted) in {seeded:.0f} s",
            flush=True,
        )
        watch = await pg_connect(db_url)
        database = database_name(db_url)
        worker = gateway(["worker"], env)
        try:
            started = None
            cpu0 = pg0 = 0.0
            first = 0
            last = 0
            loads: list[float] = []
            while last < total:
                await asyncio.sleep(0.5)
                if started is not None:
                    loads.append(float(Path("/proc/loadavg").read_text().split()[0]))
                if worker.poll() is not None:
                    raise RuntimeError("the worker stopped: see /tmp/gateway-bench-worker.log")
                last = await watch.fetchval("SELECT last_id FROM fraud_cursor WHERE name = 'evaluation'") or 0
                if started is None and last > 0:
                    # From the first pass on: start-up and migration checks are not detection.
                    started, cpu0, pg0, first = (
                        time.perf_counter(),
                        cpu_seconds(worker.pid) or 0.0,
                        await backend_cpu(watch, database),
                        last,
                    )
            elapsed = time.perf_counter() - (started or time.perf_counter())
            worker_cpu = (cpu_seconds(worker.pid) or 0.0) - cpu0
            pg_cpu = await backend_cpu(watch, database) - pg0
            measured = total - first
            flagged: dict[str, set[int]] = defaultdict(set)
            for r in await watch.fetch("SELECT rule, evaluation_id FROM fraud_flag_evaluation"):
                flagged[r["rule"]].add(r["evaluation_id"])
            flags = await watch.fetchval("SELECT count(*) FROM fraud_flag")
            # staff_share flags a staff member (with the 5s given by the time it fires): count staff members too.
            staff_flags = [
                r["subject"] for r in await watch.fetch("SELECT subject FROM fraud_flag WHERE rule = 'staff_share'")
            ]
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            await watch.close()
    all_planted = set().union(*planted.values())
    rules = {}
    for rule in RULES:
        mine, got = planted.get(rule, set()), flagged.get(rule, set())
        rules[rule] = {
            "planted": len(mine),
            "flagged": len(got),
            "recall": round(len(mine & got) / len(mine), 4) if mine else None,
            "precision": round(len(mine & got) / len(got), 4) if got else None,
            "false_on_rest": len(got - all_planted),
        }
    planted_staff = {f"unit{(s * 9) % 40}/P{s}" for s in range(max(1, round(5 * args.planted_scale)))}
    flagged_staff = {subject.split(" ")[1] for subject in staff_flags}
    rules["staff_share"]["staff_members"] = {
        "planted": len(planted_staff),
        "flagged": len(flagged_staff),
        "recall": round(len(planted_staff & flagged_staff) / len(planted_staff), 4),
        "precision": round(len(planted_staff & flagged_staff) / len(flagged_staff), 4) if flagged_staff else None,
    }
    everything = set().union(*flagged.values()) if flagged else set()
    report = {
        "machine": machine(),
        "evaluations": total,
        "planted": len(all_planted),
        "seed_seconds": round(seeded, 1),
        "measured_evaluations": measured,
        "detect_seconds": round(elapsed, 1),
        "evaluations_per_second": round(measured / elapsed) if elapsed else None,
        "worker_cpu_us_per_evaluation": round(worker_cpu / measured * 1e6, 1) if measured else None,
        "postgres_cpu_us_per_evaluation": round(pg_cpu / measured * 1e6, 1) if measured else None,
        "load_average_1min": {
            "mean": round(sum(loads) / len(loads), 2) if loads else None,
            "min": min(loads, default=None),
            "max": max(loads, default=None),
        },
        "flags": flags,
        "rules": rules,
        "false_flagged_evaluations_on_rest": len(everything - all_planted),
        "rest": total - len(all_planted),
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    asyncio.run(main())
