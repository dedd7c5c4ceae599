#!/usr/bin/env python3
"""Deterministic ops corpus for the side-by-side comparison, one "day" at a time.

    gen_corpus.py DIR DAY [--scale S]

Day 1 creates DIR; each later day changes it the way the systems in the seeds change:

- pg/registry.sql   a pg_dump-like plain SQL dump that grows each day and has rows edited
                    in place (Harbor's registry database);
- etcd/member.db    an etcd-like B+tree file with scattered 4 KiB pages rewritten;
- nexus/blobs/...   a Nexus blob store: .bytes (incompressible, like jars) beside
                    .properties (small text), artifacts added and deleted each day;
- logs/*.log        append-only text logs.

Everything is a function of (DAY, scale), so two runs produce the same bytes. Sizes at
scale 1: about 1.1 GB on day 1.
"""
import os
import random
import sys

PAGE = 4096


def rng(*key):
    return random.Random("/".join(str(k) for k in key))


def sql_rows(start, count, day_edit):
    r = rng("sql", start, count)
    out = []
    for i in range(start, start + count):
        edited = day_edit.get(i)
        repo = "library/app-%d" % (i % 997)
        digest = "%064x" % r.getrandbits(256)
        size = r.randint(1000, 90_000_000)
        tag = "v%d.%d.%d" % (i % 7, i % 13, edited if edited else 0)
        out.append("%d\t%s\t%s\tsha256:%s\t%d\t2026-0%d-1%d 0%d:%02d:%02d+00\n"
                   % (i, repo, tag, digest, size, 1 + i % 9, i % 10, i % 10, i % 60, (i * 7) % 60))
    return "".join(out)


def write_sql(path, day, scale):
    rows_day1 = int(1_600_000 * scale)
    rows = rows_day1 + (day - 1) * int(60_000 * scale)
    # Each day edits rows scattered through the table (updated tags).
    edits = {}
    for d in range(2, day + 1):
        r = rng("edits", d)
        for _ in range(int(2000 * scale)):
            edits[r.randrange(rows_day1)] = d
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n\n")
        f.write("COPY public.artifact (id, repository, tag, digest, size, push_time) FROM stdin;\n")
        step = 50_000
        for start in range(0, rows, step):
            n = min(step, rows - start)
            chunk_edits = {k: v for k, v in edits.items() if start <= k < start + n}
            f.write(sql_rows(start, n, chunk_edits))
        f.write("\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n")


def write_etcd(path, day, scale):
    pages = int(65_536 * scale)  # 256 MiB at scale 1
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if day == 1 or not os.path.exists(path):
        r = rng("etcd-base")
        with open(path, "wb") as f:
            for p in range(pages):
                # Half-full pages: key/value text then zero padding, like bbolt pages.
                body = r.randbytes(PAGE // 2)
                f.write(body + bytes(PAGE - len(body)))
    if day > 1:
        r = rng("etcd-day", day)
        with open(path, "r+b") as f:
            for _ in range(int(600 * scale)):
                p = r.randrange(pages)
                f.seek(p * PAGE)
                body = r.randbytes(PAGE // 2)
                f.write(body + bytes(PAGE - len(body)))


def artifact(root, i):
    r = rng("artifact", i)
    size = int(r.paretovariate(1.2) * 6_000)
    size = min(size, 8_000_000)
    d = os.path.join(root, "content", "vol-%02d" % (i % 43), "chap-%02d" % (i % 47))
    os.makedirs(d, exist_ok=True)
    base = os.path.join(d, "%08x-%04x" % (r.getrandbits(32), i & 0xFFFF))
    with open(base + ".bytes", "wb") as f:
        f.write(r.randbytes(size))
    with open(base + ".properties", "w") as f:
        f.write("#%s\nsize=%d\nsha1=%040x\ncreationTime=%d\n@BlobStore.blob-name=org/acme/lib%d/%d/lib-%d.jar\n"
                "@BlobStore.content-type=application/java-archive\n@Bucket.repo-name=maven-releases\n"
                % ("Mon Jan 05 2026", size, r.getrandbits(160), 1700000000 + i, i % 500, i, i))
    return base


def write_nexus(root, day, scale):
    per_day = int(400 * scale)
    first = int(10_000 * scale)  # 10k pairs = 20k files
    if day == 1:
        for i in range(first):
            artifact(root, i)
        return
    start = first + (day - 2) * per_day
    for i in range(start, start + per_day):
        artifact(root, i)
    # Cleanup policies delete old snapshots' artifacts.
    r = rng("nexus-delete", day)
    for i in r.sample(range(first), int(100 * scale)):
        base = artifact_path(root, i)
        for ext in (".bytes", ".properties"):
            try:
                os.remove(base + ext)
            except FileNotFoundError:
                pass


def artifact_path(root, i):
    r = rng("artifact", i)
    r.paretovariate(1.2)
    d = os.path.join(root, "content", "vol-%02d" % (i % 43), "chap-%02d" % (i % 47))
    return os.path.join(d, "%08x-%04x" % (r.getrandbits(32), i & 0xFFFF))


def write_logs(root, day, scale):
    os.makedirs(root, exist_ok=True)
    for name in ("nexus.log", "request.log", "audit.log"):
        r = rng("log", name, day)
        lines = []
        for n in range(int(120_000 * scale)):
            lines.append("2026-11-%02d %02d:%02d:%02d,%03d+0000 INFO  [qtp-%d] *SYSTEM org.sonatype.nexus.%s - request %d took %dms\n"
                         % (day, n % 24, n % 60, (n * 7) % 60, n % 1000, r.randrange(200), name[:-4], r.getrandbits(32), r.randrange(5000)))
        with open(os.path.join(root, name), "a") as f:
            f.write("".join(lines))


def main():
    args = sys.argv[1:]
    scale = 1.0
    if "--scale" in args:
        i = args.index("--scale")
        scale = float(args[i + 1])
        del args[i:i + 2]
    root, day = args[0], int(args[1])
    write_sql(os.path.join(root, "pg", "registry.sql"), day, scale)
    write_etcd(os.path.join(root, "etcd", "member.db"), day, scale)
    write_nexus(os.path.join(root, "nexus", "blobs", "default"), day, scale)
    write_logs(os.path.join(root, "logs"), day, scale)


if __name__ == "__main__":
    main()
