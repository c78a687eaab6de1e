"""A WAL-mode SQLite database with a concurrent writer and reader (used by tests/sqlite_wal.rs).

    sqlite_wal.py init   DB                  create table t, journal_mode=WAL
    sqlite_wal.py reader DB N BATCH READY    read snapshots until N rows are seen; create READY
                                             after the first read; check every snapshot
    sqlite_wal.py writer DB N BATCH READY    wait for READY, insert N rows, BATCH per transaction
    sqlite_wal.py verify DB                  integrity_check, journal mode, row count, digest

Each mode prints one JSON object and exits 1 on any inconsistency.
"""

import hashlib
import json
import os
import sqlite3
import sys
import time


def payload(i):
    return ("row-%06d-" % i) * 8


def init(db):
    os.makedirs(os.path.dirname(db), exist_ok=True)
    conn = sqlite3.connect(db, timeout=30)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL, payload TEXT NOT NULL)")
    conn.commit()
    conn.close()
    print(json.dumps({"journal_mode": mode}))
    return mode == "wal"


def reader(db, n, batch, ready):
    conn = sqlite3.connect(db, timeout=30)
    errors = []
    counts = []
    deadline = time.time() + 240
    while time.time() < deadline:
        # One statement: one snapshot.
        count, sum_v, sum_id, max_id = conn.execute(
            "SELECT count(*), coalesce(sum(v), 0), coalesce(sum(id), 0), coalesce(max(id), 0) FROM t"
        ).fetchone()
        if count % batch != 0:
            errors.append("saw %d rows: half a transaction" % count)
        if sum_v != 2 * sum_id or max_id != count:
            errors.append("inconsistent snapshot: count=%d sum_v=%d sum_id=%d max_id=%d" % (count, sum_v, sum_id, max_id))
        if counts and count < counts[-1]:
            errors.append("row count went back from %d to %d" % (counts[-1], count))
        counts.append(count)
        if not os.path.exists(ready):
            with open(ready, "w") as f:
                f.write("ready\n")
        if count >= n or errors:
            break
        time.sleep(0.002)
    conn.close()
    result = {"reads": len(counts), "distinct": len(set(counts)), "final": counts[-1], "errors": errors}
    print(json.dumps(result))
    return not errors and counts[-1] == n


def writer(db, n, batch, ready):
    deadline = time.time() + 60
    while not os.path.exists(ready):
        if time.time() > deadline:
            print(json.dumps({"error": "the reader never became ready"}))
            return False
        time.sleep(0.01)
    conn = sqlite3.connect(db, timeout=30)
    checkpoints = 0
    for b in range(n // batch):
        with conn:  # one transaction
            conn.executemany(
                "INSERT INTO t (id, v, payload) VALUES (?, ?, ?)",
                [(i, 2 * i, payload(i)) for i in range(b * batch + 1, (b + 1) * batch + 1)],
            )
        if b % 10 == 9:
            # Move pages into the main file while the reader reads.
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            checkpoints += 1
        time.sleep(0.005)
    conn.close()
    print(json.dumps({"inserted": n, "checkpoints": checkpoints}))
    return True


def verify(db):
    conn = sqlite3.connect(db, timeout=30)
    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    digest = hashlib.sha256()
    count = 0
    for row in conn.execute("SELECT id, v, payload FROM t ORDER BY id"):
        digest.update(("%d|%d|%s\n" % row).encode())
        count += 1
    conn.close()
    print(json.dumps({"integrity": integrity, "journal_mode": mode, "count": count, "digest": digest.hexdigest()}))
    return integrity == "ok"


def main(argv):
    mode, db = argv[1], argv[2]
    if mode == "init":
        return init(db)
    if mode == "reader":
        return reader(db, int(argv[3]), int(argv[4]), argv[5])
    if mode == "writer":
        return writer(db, int(argv[3]), int(argv[4]), argv[5])
    if mode == "verify":
        return verify(db)
    raise SystemExit("unknown mode " + mode)


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv) else 1)
