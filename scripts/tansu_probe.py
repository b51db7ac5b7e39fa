#!/usr/bin/env python3
"""Probe what a Kafka broker (tansu, from scripts/broker.sh) supports, through
librdkafka: confluent-kafka bundles the same C library the rdkafka crate uses.

    python3 scripts/tansu_probe.py 127.0.0.1:9092 [--messages N]

Needs confluent-kafka; if this python lacks it, a venv is made in
$RECUR_PROBE_VENV (default /tmp/recur-probe-venv) and the script re-runs there,
so nothing is installed into the project or the system python.

Every check prints one line with what it saw: `ok` (behaves like Kafka), `DIFF`
(works, but differs from Kafka: a known tansu limitation that tests must work
around), `note` (informational) or `FAIL` (broken). Topics are named
recur-probe-<run id>-..., so re-runs against one broker don't clash.
Exit status: 1 if any check FAILed, else 0.
"""

import os
import subprocess
import sys
import time
import uuid

VENV = os.environ.get("RECUR_PROBE_VENV", "/tmp/recur-probe-venv")


def ensure_confluent_kafka():
    try:
        import confluent_kafka  # noqa: F401
        return
    except ImportError:
        pass
    if os.environ.get("RECUR_PROBE_REEXEC"):
        sys.exit("tansu_probe.py: confluent-kafka still missing after installing it in " + VENV)
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        print(f"[setup] creating venv {VENV}", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", VENV], stdin=subprocess.DEVNULL)
    ok = subprocess.call([py, "-c", "import confluent_kafka"], stdin=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL) == 0
    if not ok:
        print("[setup] pip install confluent-kafka", file=sys.stderr)
        subprocess.check_call([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "confluent-kafka"], stdin=subprocess.DEVNULL, stdout=sys.stderr)
    env = dict(os.environ, RECUR_PROBE_REEXEC="1")
    os.execve(py, [py] + sys.argv, env)


ensure_confluent_kafka()

import confluent_kafka  # noqa: E402
from confluent_kafka import (  # noqa: E402
    Consumer, KafkaError, KafkaException, OFFSET_BEGINNING, OFFSET_END, Producer, TopicPartition,
)
from confluent_kafka.admin import (  # noqa: E402
    AdminClient, ConfigResource, NewTopic, OffsetSpec, ResourceType,
)

RESULTS = []  # (status, name, detail)


def report(status, name, detail=""):
    RESULTS.append((status, name, detail))
    print(f"{status:4} {name}: {detail}", flush=True)


def check(name, critical=True):
    """Decorator: run a check, turning exceptions into FAIL lines."""
    def wrap(fn):
        def run(*a, **kw):
            t0 = time.monotonic()
            try:
                return fn(*a, **kw)
            except Exception as e:  # noqa: BLE001
                report("FAIL" if critical else "note", name,
                       f"{type(e).__name__}: {e} (after {time.monotonic() - t0:.1f}s)")
                return None
        run.__name__ = fn.__name__
        return run
    return wrap


class Probe:
    def __init__(self, brokers, n_messages):
        self.brokers = brokers
        self.n = n_messages
        self.run_id = uuid.uuid4().hex[:8]
        self.admin = AdminClient({"bootstrap.servers": brokers})

    def topic(self, name):
        return f"recur-probe-{self.run_id}-{name}"

    def conf(self, **kw):
        c = {"bootstrap.servers": self.brokers}
        c.update({k.replace("_", "."): v for k, v in kw.items()})
        return c

    def consumer(self, group, **kw):
        # tansu completes a JoinGroup only after ~session.timeout.ms / 2 (see
        # join_latency), so group members here use 6 s (Kafka's minimum by default).
        c = self.conf(**{"group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 6000,
                         "heartbeat.interval.ms": 500})
        c.update(kw)
        return Consumer(c)

    def produce_n(self, topic, n, partition=None, **kw):
        p = Producer(self.conf(**kw))
        for i in range(n):
            args = dict(key=f"k{i}".encode(), value=f"v{i}".encode())
            if partition is not None:
                args["partition"] = partition
            p.produce(topic, **args)
        left = p.flush(30)
        if left:
            raise RuntimeError(f"{left} messages not delivered")

    def consume_all(self, c, expected, timeout=20):
        msgs = []
        deadline = time.monotonic() + timeout
        while len(msgs) < expected and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(m.error())
            msgs.append(m)
        return msgs

    # ------------------------------------------------------------------ admin

    @check("broker metadata")
    def metadata(self):
        md = self.admin.list_topics(timeout=10)
        brokers = {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()}
        report("ok", "broker metadata",
               f"cluster_id={md.cluster_id} controller={md.controller_id} brokers={brokers}; "
               f"librdkafka {confluent_kafka.libversion()[0]}")

    @check("create topic (4 partitions)")
    def create_topic(self):
        t = self.topic("main")
        t0 = time.monotonic()
        futs = self.admin.create_topics([NewTopic(t, num_partitions=4, replication_factor=1)],
                                        operation_timeout=10, request_timeout=15)
        futs[t].result()
        dt = time.monotonic() - t0
        md = self.admin.list_topics(t, timeout=10).topics[t]
        parts = sorted(md.partitions)
        leaders = {p: md.partitions[p].leader for p in parts}
        status = "ok" if len(parts) == 4 and md.error is None else "FAIL"
        report(status, "create topic (4 partitions)",
               f"created in {dt * 1000:.0f} ms; metadata partitions={parts} leaders={leaders}")
        # Creating it again must fail with TOPIC_ALREADY_EXISTS.
        try:
            self.admin.create_topics([NewTopic(t, num_partitions=4, replication_factor=1)])[t].result()
            report("note", "create existing topic", "accepted silently (no TOPIC_ALREADY_EXISTS)")
        except KafkaException as e:
            report("ok", "create existing topic", f"rejected: {e.args[0].name()}")
        # Produce immediately after creation: is a delay needed?
        p = Producer(self.conf())
        t0 = time.monotonic()
        errs = []
        p.produce(t, key=b"first", value=b"x", partition=3,
                  on_delivery=lambda err, msg: errs.append(err))
        p.flush(10)
        report("ok" if errs == [None] else "FAIL", "produce right after create",
               f"delivery={errs} in {(time.monotonic() - t0) * 1000:.0f} ms (no sleep)")
        return t

    @check("compacted topic", critical=False)
    def compacted_topic(self):
        t = self.topic("compact")
        cfg = {"cleanup.policy": "compact", "retention.ms": "-1"}
        self.admin.create_topics([NewTopic(t, 4, 1, config=cfg)])[t].result()
        detail = "create with cleanup.policy=compact accepted"
        try:
            res = ConfigResource(ResourceType.TOPIC, t)
            conf = self.admin.describe_configs([res])[res].result(timeout=10)
            got = conf.get("cleanup.policy")
            detail += f"; describe_configs cleanup.policy={got.value if got else None}"
            detail += f" ({len(conf)} entries)"
        except Exception as e:  # noqa: BLE001
            detail += f"; describe_configs failed: {type(e).__name__}: {e}"
        # Same key twice: does the reader see both (no compaction) or one?
        p = Producer(self.conf())
        for v in (b"old", b"new"):
            p.produce(t, key=b"same", value=v, partition=0)
        p.flush(10)
        c = self.consumer("g-compact-" + self.run_id)
        c.assign([TopicPartition(t, 0, OFFSET_BEGINNING)])
        got = [m.value() for m in self.consume_all(c, 2, timeout=10)]
        c.close()
        detail += f"; two writes of one key read back as {got}"
        report("ok", "compacted topic", detail)

    @check("delete topic", critical=False)
    def delete_topic(self):
        t = self.topic("deleteme")
        self.admin.create_topics([NewTopic(t, 1, 1)])[t].result()
        self.admin.delete_topics([t], operation_timeout=10)[t].result()
        time.sleep(0.5)
        exists = t in self.admin.list_topics(timeout=10).topics
        report("ok" if not exists else "note", "delete topic",
               "deleted" if not exists else "still listed 0.5 s after delete")

    @check("auto-create topics", critical=False)
    def auto_create(self):
        t = self.topic("auto")
        p = Producer(self.conf(**{"message.timeout.ms": 8000}))
        errs = []
        p.produce(t, value=b"x", on_delivery=lambda err, msg: errs.append(err))
        p.flush(10)
        md = self.admin.list_topics(timeout=10).topics.get(t)
        parts = len(md.partitions) if md else 0
        report("note", "auto-create topics",
               f"produce to a missing topic: delivery={errs}; topic exists after={md is not None}"
               f" partitions={parts}")

    # --------------------------------------------------------- produce/consume

    @check("produce keys + headers, consume")
    def keys_headers(self, t):
        p = Producer(self.conf(**{"linger.ms": 5}))
        before_ms = int(time.time() * 1000)
        n = 400
        for i in range(n):
            p.produce(t, key=f"series-{i % 20}".encode(), value=f"{i}".encode(),
                      headers=[("schema", b"v1"), ("seq", str(i).encode()), ("empty", b"")])
        assert p.flush(15) == 0
        self.keys_headers_n = n + 1  # +1: the message from produce-right-after-create
        c = self.consumer("g-read-" + self.run_id)
        c.assign([TopicPartition(t, i, OFFSET_BEGINNING) for i in range(4)])
        msgs = self.consume_all(c, n + 1)
        c.close()
        per_part = {}
        key_parts = {}
        for m in msgs:
            per_part[m.partition()] = per_part.get(m.partition(), 0) + 1
            if m.key() and m.key().startswith(b"series-"):
                key_parts.setdefault(m.key(), set()).add(m.partition())
        sample = next(m for m in msgs if m.headers())
        hdrs = sample.headers()
        ts_type, ts = sample.timestamp()
        ts_name = {0: "NOT_AVAILABLE", 1: "CREATE_TIME", 2: "LOG_APPEND_TIME"}[ts_type]
        sticky = all(len(s) == 1 for s in key_parts.values())
        ok = len(msgs) == n + 1 and hdrs == [("schema", b"v1"), ("seq", sample.headers()[1][1]),
                                              ("empty", b"")] and sticky
        report("ok" if ok else "FAIL", "produce keys + headers, consume",
               f"{len(msgs)}/{n + 1} back, per partition {dict(sorted(per_part.items()))}, "
               f"same key->same partition={sticky}; headers={hdrs}; "
               f"timestamp {ts_name} {ts} (produced at ~{before_ms})")

    @check("manual commit + resume")
    def commit_resume(self, t):
        group = "g-commit-" + self.run_id
        total = self.keys_headers_n
        c = self.consumer(group)
        c.subscribe([t])
        msgs = self.consume_all(c, total)
        # Commit "processed up to" a chosen point per partition: offset = next to read.
        last = {}
        for m in msgs:
            last[m.partition()] = max(last.get(m.partition(), -1), m.offset())
        target = {p: max(0, (o + 1) // 2) for p, o in last.items()}
        offs = [TopicPartition(t, p, o) for p, o in sorted(target.items())]
        res = c.commit(offsets=offs, asynchronous=False)
        committed = {tp.partition: tp.offset for tp in c.committed(offs, timeout=10)}
        c.close()
        report("ok" if committed == target else "FAIL", "commit(offsets, sync) + committed()",
               f"committed {target}; committed() -> {committed}; commit returned "
               f"{[(x.partition, x.offset, x.error) for x in res]}")
        # A new member of the same group resumes at the committed offsets.
        c2 = self.consumer(group)
        c2.subscribe([t])
        expect_n = sum(last[p] + 1 - target[p] for p in last)
        msgs2 = self.consume_all(c2, expect_n, timeout=20)
        first = {}
        for m in msgs2:
            first.setdefault(m.partition(), m.offset())
        extra = self.consume_all(c2, 1, timeout=2)
        c2.close()
        ok = first == {p: o for p, o in target.items() if o <= last[p]} and not extra
        report("ok" if ok else "FAIL", "new consumer resumes at committed offsets",
               f"first offsets read {dict(sorted(first.items()))}, {len(msgs2)} msgs "
               f"(expected {expect_n}), extra after={len(extra)}")
        # Same via the admin API.
        try:
            from confluent_kafka import ConsumerGroupTopicPartitions
            f = self.admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for p in range(4)])])
            r = f[group].result()
            got = {tp.partition: tp.offset for tp in r.topic_partitions}
            report("ok" if got == target else "note", "admin list_consumer_group_offsets", f"{got}")
        except Exception as e:  # noqa: BLE001
            report("note", "admin list_consumer_group_offsets", f"{type(e).__name__}: {e}")
        return msgs

    @check("store_offsets + auto commit (rdkafka at-least-once pattern)")
    def store_offsets_autocommit(self, t):
        group = "g-store-" + self.run_id
        c = self.consumer(group, **{"enable.auto.commit": True, "auto.commit.interval.ms": 200,
                                    "enable.auto.offset.store": False})
        c.subscribe([t])
        msgs = self.consume_all(c, self.keys_headers_n)
        stored = {}
        for m in msgs[: len(msgs) // 2]:
            c.store_offsets(message=m)
            stored[m.partition()] = m.offset() + 1
        time.sleep(1.0)  # > auto.commit.interval.ms
        got = {tp.partition: tp.offset for tp in
               c.committed([TopicPartition(t, p) for p in stored], timeout=10)}
        c.close()
        report("ok" if got == stored else "FAIL",
               "store_offsets + auto commit (rdkafka at-least-once pattern)",
               f"stored {dict(sorted(stored.items()))}, committed {dict(sorted(got.items()))}")

    @check("watermarks / list_offsets / offsets_for_times")
    def offsets(self):
        # One partition, three producer batches of 10 records, timestamps set
        # explicitly: batch b holds offsets 10b..10b+9 and times ts0+1000b+i.
        t = self.topic("offsets")
        self.admin.create_topics([NewTopic(t, 1, 1)])[t].result()
        p = Producer(self.conf(**{"linger.ms": 50}))
        ts0 = int(time.time() * 1000) - 60_000
        for bt in range(3):
            for i in range(10):
                p.produce(t, key=b"k", value=b"%d" % (10 * bt + i), partition=0,
                          timestamp=ts0 + 1000 * bt + i)
            assert p.flush(10) == 0
        c = self.consumer("g-wm-" + self.run_id, **{"enable.partition.eof": True})
        tp = TopicPartition(t, 0)
        queried = c.get_watermark_offsets(tp, timeout=10, cached=False)  # ListOffsets
        try:
            res = self.admin.list_offsets({TopicPartition(t, 0): OffsetSpec.latest()},
                                          request_timeout=10)
            admin_latest = next(iter(res.values())).result().offset
        except Exception as e:  # noqa: BLE001
            admin_latest = f"{type(e).__name__}: {e}"
        # The high watermark in Fetch responses, as the consumer caches it.
        c.assign([TopicPartition(t, 0, OFFSET_BEGINNING)])
        got, eof_at = [], None
        deadline = time.monotonic() + 10
        while eof_at is None and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof_at = m.offset()
                continue
            got.append((m.offset(), m.timestamp()))
        cached = c.get_watermark_offsets(tp, cached=True)
        offsets_ok = [o for o, _ in got] == list(range(30))
        ts_ok = all(ts == (1, ts0 + 1000 * (o // 10) + o % 10) for o, ts in got)
        report("ok" if offsets_ok and ts_ok and cached == (0, 30) else "FAIL",
               "fetch high watermark (cached watermarks, EOF)",
               f"30 records in 3 batches read as offsets 0..{got[-1][0] if got else None}, "
               f"CreateTime kept={ts_ok}; EOF at {eof_at}; get_watermark_offsets(cached=True)={cached}")
        report("ok" if queried == (0, 30) else "DIFF", "ListOffsets latest (query watermarks)",
               f"get_watermark_offsets(cached=False)={queried}, admin list_offsets latest="
               f"{admin_latest}; Kafka gives (0, 30)"
               + ("" if queried == (0, 30) else
                  " -- tansu answers the LAST BATCH'S BASE OFFSET + 1, not the log end offset"))
        q = [(ts0 + 5, 5), (ts0 + 1000, 10), (ts0 + 2009, 29), (0, 0), (ts0 + 3_600_000, -1)]
        ans = c.offsets_for_times([TopicPartition(t, 0, ts) for ts, _ in q], timeout=10)
        pairs = [f"{ts - ts0 if ts else 'ts=0'}ms->{a.offset} (want {want})"
                 for (ts, want), a in zip(q, ans)]
        ok = all(a.offset == want for (_, want), a in zip(q, ans))
        report("ok" if ok else "DIFF", "offsets_for_times",
               "; ".join(pairs) + ("" if ok else " -- timestamp ignored"))
        c.close()
        # A new group with auto.offset.reset=latest starts at ListOffsets' answer.
        c = self.consumer("g-latest-" + self.run_id, **{"auto.offset.reset": "latest"})
        c.assign([TopicPartition(t, 0)])
        seen = self.consume_all(c, 100, timeout=3)
        c.close()
        report("ok" if not seen else "DIFF", "auto.offset.reset=latest",
               f"new reader re-read {len(seen)} old records"
               + (f" from offset {seen[0].offset()}" if seen else ""))

    # --------------------------------------------------------------- groups

    def _rebalance(self, t, strategy):
        group = f"g-reb-{strategy}-{self.run_id}"
        events = {"a": [], "b": []}

        def cbs(name):
            def on_assign(c, parts):
                events[name].append(("assign", sorted(p.partition for p in parts)))
            def on_revoke(c, parts):
                events[name].append(("revoke", sorted(p.partition for p in parts)))
            return on_assign, on_revoke

        extra = {"partition.assignment.strategy": strategy}
        a = self.consumer(group, **extra)
        oa, ra = cbs("a")
        a.subscribe([t], on_assign=oa, on_revoke=ra)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 15 and len(a.assignment()) < 4:
            a.poll(0.1)
        t_first = time.monotonic() - t0
        asg_a1 = sorted(p.partition for p in a.assignment())
        b = self.consumer(group, **extra)
        ob, rb = cbs("b")
        b.subscribe([t], on_assign=ob, on_revoke=rb)
        t1 = time.monotonic()
        split = False
        while time.monotonic() - t1 < 30:
            a.poll(0.05)
            b.poll(0.05)
            pa = sorted(p.partition for p in a.assignment())
            pb = sorted(p.partition for p in b.assignment())
            if pa and pb and len(pa) + len(pb) == 4 and not set(pa) & set(pb):
                split = True
                break
        t_split = time.monotonic() - t1
        pa = sorted(p.partition for p in a.assignment())
        pb = sorted(p.partition for p in b.assignment())
        b.close()
        t2 = time.monotonic()
        while time.monotonic() - t2 < 30 and len(a.assignment()) < 4:
            a.poll(0.1)
        t_back = time.monotonic() - t2
        back = sorted(p.partition for p in a.assignment())
        a.close()
        detail = (f"A alone got {asg_a1} in {t_first:.1f}s; after B joined "
                  f"A={pa} B={pb} in {t_split:.1f}s; after B left A={back} in {t_back:.1f}s; "
                  f"callbacks A={events['a']} B={events['b']}")
        report("ok" if split and len(back) == 4 else "FAIL",
               f"2-member rebalance ({strategy})", detail)

    @check("group join latency", critical=False)
    def join_latency(self, t):
        out = []
        for sto in (45000, 6000, 2000):
            c = self.consumer(f"g-join{sto}-{self.run_id}", **{"session.timeout.ms": sto,
                                                                "heartbeat.interval.ms": 500})
            t0 = time.monotonic()
            c.subscribe([t])
            while time.monotonic() - t0 < 60 and not c.assignment():
                c.poll(0.05)
            out.append(f"session.timeout.ms={sto}: {time.monotonic() - t0:.1f}s")
            c.close()
        report("note", "group join latency",
               "first assignment of a lone member after subscribe: " + ", ".join(out))

    @check("2-member rebalance (range,roundrobin)")
    def rebalance_eager(self, t):
        self._rebalance(t, "range,roundrobin")

    @check("2-member rebalance (cooperative-sticky)")
    def rebalance_coop(self, t):
        self._rebalance(t, "cooperative-sticky")

    @check("list/describe consumer groups", critical=False)
    def groups(self):
        r = self.admin.list_consumer_groups(request_timeout=10).result()
        ours = [g.group_id for g in r.valid if self.run_id in g.group_id]
        detail = f"list_consumer_groups: {len(r.valid)} groups ({len(ours)} from this run)"
        try:
            gid = "g-commit-" + self.run_id
            d = self.admin.describe_consumer_groups([gid], request_timeout=10)[gid].result()
            detail += f"; describe {gid}: state={d.state} members={len(d.members)}"
        except Exception as e:  # noqa: BLE001
            detail += f"; describe_consumer_groups: {type(e).__name__}: {e}"
        report("note", "list/describe consumer groups", detail)

    # ---------------------------------------------------------- transactions

    @check("transactions")
    def transactions(self, src):
        out = self.topic("txn-out")
        self.admin.create_topics([NewTopic(out, 4, 1)])[out].result()
        group = "g-txn-" + self.run_id
        c = self.consumer(group, **{"isolation.level": "read_committed"})
        c.assign([TopicPartition(src, p, OFFSET_BEGINNING) for p in range(4)])
        msgs = self.consume_all(c, 20, timeout=10)
        p = Producer(self.conf(**{"transactional.id": "recur-probe-" + self.run_id,
                                  "transaction.timeout.ms": 30000}))
        t0 = time.monotonic()
        p.init_transactions(15)
        steps = [f"init_transactions {1000 * (time.monotonic() - t0):.0f} ms"]
        p.begin_transaction()
        for m in msgs:
            p.produce(out, key=m.key(), value=m.value(), headers=[("txn", b"1")])
        offs = {}
        for m in msgs:
            offs[m.partition()] = max(offs.get(m.partition(), 0), m.offset() + 1)
        tps = [TopicPartition(src, pp, o) for pp, o in sorted(offs.items())]
        p.send_offsets_to_transaction(tps, c.consumer_group_metadata(), 15)
        steps.append("send_offsets_to_transaction ok")
        t0 = time.monotonic()
        p.commit_transaction(15)
        steps.append(f"commit_transaction ok ({1000 * (time.monotonic() - t0):.0f} ms)")
        committed = {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
        steps.append(f"group offsets after commit {committed} (sent {dict(sorted(offs.items()))})")
        c.close()
        n_out = len(self._read(out, "read_committed"))
        steps.append(f"read_committed reader sees {n_out}/{len(msgs)} committed messages")
        report("ok" if committed == offs and n_out == len(msgs) else "FAIL", "transactions",
               "; ".join(steps))
        self.txn = (p, out, len(msgs))

    def _read(self, topic, level, expect=10_000, timeout=4):
        rc = self.consumer(f"g-read-{level}-{uuid.uuid4().hex[:6]}", **{"isolation.level": level})
        rc.assign([TopicPartition(topic, pp, OFFSET_BEGINNING) for pp in range(4)])
        got = self.consume_all(rc, expect, timeout=timeout)
        rc.close()
        return got

    @check("transactions: open/aborted visibility", critical=False)
    def txn_visibility(self):
        p, out, base = self.txn
        # An open transaction must be invisible to read_committed readers (LSO).
        p.begin_transaction()
        for i in range(5):
            p.produce(out, key=b"open", value=str(i).encode(), partition=0)
        p.flush(10)
        n_open = sum(m.key() == b"open" for m in self._read(out, "read_committed"))
        p.commit_transaction(15)
        # An aborted transaction must stay invisible to read_committed readers.
        p.begin_transaction()
        for i in range(5):
            p.produce(out, key=b"aborted", value=str(i).encode(), partition=0)
        p.flush(10)
        p.abort_transaction(15)
        p.begin_transaction()
        p.produce(out, key=b"after-abort", value=b"x", partition=0)
        p.commit_transaction(15)
        rc = self._read(out, "read_committed")
        ru = self._read(out, "read_uncommitted")
        ab_rc = sum(m.key() == b"aborted" for m in rc)
        ab_ru = sum(m.key() == b"aborted" for m in ru)
        kafka_like = n_open == 0 and ab_rc == 0
        report("ok" if kafka_like else "DIFF", "transactions: open/aborted visibility",
               f"read_committed sees {n_open}/5 messages of an OPEN transaction; after an abort, "
               f"read_committed sees {ab_rc}/5 aborted messages, read_uncommitted {ab_ru}/5"
               + ("" if kafka_like else " -- DIFFERS FROM KAFKA (no LSO / abort filtering)"))

    @check("idempotent producer")
    def idempotent(self, t):
        p = Producer(self.conf(**{"enable.idempotence": True, "linger.ms": 5}))
        errs = []
        for i in range(1000):
            p.produce(t, key=f"idem{i % 7}".encode(), value=b"x",
                      on_delivery=lambda err, msg: errs.append(err))
        p.flush(15)
        bad = [e for e in errs if e is not None]
        report("ok" if len(errs) == 1000 and not bad else "FAIL", "idempotent producer",
               f"{len(errs)} delivered, errors {bad[:3]}")

    # ---------------------------------------------------------- compression

    @check("compression codecs")
    def compression(self):
        t = self.topic("codecs")
        self.admin.create_topics([NewTopic(t, 1, 1)])[t].result()
        res = []
        all_ok = True
        for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
            p = Producer(self.conf(**{"compression.codec": codec, "linger.ms": 20,
                                      "message.timeout.ms": 10000}))
            errs = []
            payload = (codec.encode() + b"-") * 40
            for i in range(200):
                p.produce(t, key=codec.encode(), value=payload + str(i).encode(),
                          on_delivery=lambda err, msg: errs.append(err))
            p.flush(15)
            bad = [e for e in errs if e is not None]
            if bad:
                all_ok = all_ok and codec not in ("zstd", "lz4", "gzip", "none")
                res.append(f"{codec}: produce error {bad[0]}")
            else:
                res.append(f"{codec}: produced")
        c = self.consumer("g-codec-" + self.run_id)
        c.assign([TopicPartition(t, 0, OFFSET_BEGINNING)])
        msgs = self.consume_all(c, 1000, timeout=15)
        c.close()
        per = {}
        for m in msgs:
            k = m.key().decode()
            if m.value().startswith(k.encode() + b"-"):
                per[k] = per.get(k, 0) + 1
        res.append(f"read back {per}")
        ok = all_ok and all(per.get(k) == 200 for k in ("none", "gzip", "lz4", "zstd"))
        report("ok" if ok else "FAIL", "compression codecs", "; ".join(res))

    @check("end-to-end latency", critical=False)
    def latency(self):
        import statistics
        t = self.topic("latency")
        self.admin.create_topics([NewTopic(t, 1, 1)])[t].result()
        p = Producer(self.conf(**{"linger.ms": 0}))
        out = []
        for wait in (500, 20):
            c = self.consumer(f"g-lat{wait}-{self.run_id}", **{"fetch.wait.max.ms": wait})
            c.assign([TopicPartition(t, 0, OFFSET_END)])
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.0:
                c.poll(0.1)
            lat = []
            for _ in range(10):
                s0 = time.monotonic()
                p.produce(t, value=b"x")
                p.flush(5)
                while time.monotonic() - s0 < 5:
                    m = c.poll(0.5)
                    if m is not None and not m.error():
                        break
                lat.append(1000 * (time.monotonic() - s0))
                time.sleep(0.037)
            c.close()
            out.append(f"fetch.wait.max.ms={wait}: median {statistics.median(lat):.0f} ms, "
                       f"max {max(lat):.0f} ms")
        report("note", "end-to-end latency",
               "produce->poll of one record to a caught-up consumer: " + "; ".join(out))

    # ---------------------------------------------------------- throughput

    @check("throughput")
    def throughput(self):
        t = self.topic("bench")
        self.admin.create_topics([NewTopic(t, 4, 1)])[t].result()
        n = self.n
        for codec in ("none", "zstd"):
            p = Producer(self.conf(**{"linger.ms": 5, "batch.size": 1_000_000,
                                      "queue.buffering.max.messages": 1_000_000,
                                      "compression.codec": codec}))
            val = b'{"series":"s0000","t":1700000000,"y":[0.1234,5.678]}'
            t0 = time.monotonic()
            for i in range(n):
                while True:
                    try:
                        p.produce(t, key=b"s%04d" % (i % 1000), value=val)
                        break
                    except BufferError:
                        p.poll(0.01)
                if i % 10000 == 0:
                    p.poll(0)
            left = p.flush(120)
            dt = time.monotonic() - t0
            report("ok" if left == 0 else "FAIL", f"produce {n} x {len(val)} B ({codec})",
                   f"{dt:.2f}s = {n / dt:,.0f} msg/s, undelivered {left}")
        total = 2 * n
        c = self.consumer("g-bench-" + self.run_id, **{"fetch.max.bytes": 52428800,
                                                        "max.partition.fetch.bytes": 10485760})
        c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for p in range(4)])
        got = 0
        t0 = time.monotonic()
        t_first = None
        while got < total and time.monotonic() - t0 < 180:
            batch = c.consume(10000, 1.0)
            for m in batch:
                if m.error() is None:
                    if t_first is None:
                        t_first = time.monotonic()
                    got += 1
        dt = time.monotonic() - t0
        c.close()
        report("ok" if got == total else "FAIL", f"consume {total} (half zstd)",
               f"{dt:.2f}s = {got / dt:,.0f} msg/s ({got} read; first message after "
               f"{(t_first or t0) - t0:.2f}s)")

    def summary(self):
        n = {k: sum(r[0] == k for r in RESULTS) for k in ("ok", "FAIL", "DIFF", "note")}
        print(f"\ntansu_probe: {n['ok']} ok, {n['FAIL']} FAIL, {n['DIFF']} DIFF (differs from "
              f"Kafka), {n['note']} note (run {self.run_id})")
        return 1 if n["FAIL"] else 0


def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("brokers", nargs="?", default="127.0.0.1:9092")
    ap.add_argument("--messages", type=int, default=200_000,
                    help="messages per throughput run (default 200000)")
    args = ap.parse_args()
    brokers, n = args.brokers, args.messages
    pr = Probe(brokers, n)
    print(f"tansu_probe: {brokers}, confluent-kafka {confluent_kafka.__version__}, "
          f"librdkafka {confluent_kafka.libversion()[0]}, run {pr.run_id}", flush=True)
    pr.metadata()
    t = pr.create_topic()
    pr.compacted_topic()
    pr.delete_topic()
    pr.auto_create()
    if t:
        pr.keys_headers(t)
        pr.commit_resume(t)
        pr.store_offsets_autocommit(t)
        pr.offsets()
        pr.join_latency(t)
        pr.rebalance_eager(t)
        pr.rebalance_coop(t)
        pr.groups()
        pr.transactions(t)
        if getattr(pr, "txn", None):
            pr.txn_visibility()
        pr.idempotent(t)
    pr.compression()
    pr.latency()
    pr.throughput()
    sys.exit(pr.summary())


if __name__ == "__main__":
    main()
