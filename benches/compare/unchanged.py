#!/usr/bin/env python3
"""Unchanged re-backup, timed: cairn binaries (and bupstash) side by side, interleaved.

    benches/compare/unchanged.py [--rounds N] [--churn] [--bupstash] [--work DIR] NAME=BINARY...

Each NAME=BINARY gets its own repository and cache under DIR (default
/var/tmp/cairn-unchanged), set up with a first backup and one unchanged backup (which
lets a cairn that marks complete trees mark them). Then each round runs one unchanged
backup per tool, in alternating order, after `sync`, and waits for an idle machine (85%
idle over 0.3 s, at most 2 minutes) before it starts. The corpus is day 1 of
gen_corpus.py at scale 1 (20,005 files, 846 MB), made in DIR/corpus if missing.

--churn: before each timed backup the tool backs up fresh random data in DIR/churn
(untimed), so the index cache has new entries when the timed backup opens it (bupstash
is not comparable there: a put of another directory replaces its send log).

Prints the median, min and max wall time, the median CPU time (user + system) and the
median peak RSS of each. Compare binaries from the same build method, copied at the same
time: the peak RSS of the same binary moves by about 1.5 MiB with the page-cache state of
the binary file itself (a fresh copy maps more of its text).
"""
import argparse
import os
import statistics as st
import subprocess
import sys
import time

from timing import binaries, enter, wait_idle

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=11)
ap.add_argument("--churn", action="store_true")
ap.add_argument("--bupstash", action="store_true")
ap.add_argument("--work", default="/var/tmp/cairn-unchanged")
ap.add_argument("tools", nargs="*", metavar="NAME=BINARY")
a = ap.parse_args()

here = os.path.dirname(os.path.abspath(__file__))
tools = binaries(a.tools)
work = enter(a.work)
env = dict(os.environ, CAIRN_PASSWORD="bench-password")
benv = dict(env, BUPSTASH_REPOSITORY=f"{work}/repo-bupstash", BUPSTASH_KEY=f"{work}/bupstash.key")
if a.bupstash:
    tools["bupstash"] = None
if not tools:
    sys.exit("give at least one NAME=BINARY or --bupstash")

if not os.path.isdir("corpus"):
    subprocess.run([sys.executable, f"{here}/gen_corpus.py", "corpus", "1", "--scale", "1"], check=True)


def cmd(name, src="corpus"):
    if name == "bupstash":
        return ["bupstash", "put", "-q", "--compression", "zstd:3", "name=x", src]
    return [tools[name], "-q", "backup", "--repo", f"repo-{name}", "--cache-dir", f"cache-{name}", src]


def envof(name):
    return benv if name == "bupstash" else env


for name in tools:
    if name == "bupstash":
        if not os.path.isdir("repo-bupstash"):
            subprocess.run(["bupstash", "init", "-r", "repo-bupstash"], env=benv, check=True)
            subprocess.run(["bupstash", "new-key", "-o", "bupstash.key"], env=benv, check=True)
            for _ in range(2):
                subprocess.run(cmd(name), env=benv, check=True, stdout=subprocess.DEVNULL)
        continue
    if not os.path.isdir(f"repo-{name}"):
        subprocess.run([tools[name], "-q", "init", "--repo", f"repo-{name}", "--cache-dir", f"cache-{name}"], env=env, check=True)
        for _ in range(2):
            subprocess.run(cmd(name), env=env, check=True)


res = {k: [] for k in tools}
busy = 0
names = list(tools)
for i in range(a.rounds):
    if not wait_idle():
        busy += 1
    for name in names if i % 2 == 0 else names[::-1]:
        if a.churn:
            os.makedirs("churn", exist_ok=True)
            for j in range(300):
                with open(f"churn/f{j}", "wb") as f:
                    f.write(os.urandom(3000))
            with open("churn/big", "wb") as f:
                f.write(os.urandom(8 << 20))
            subprocess.run(cmd(name, "churn"), env=envof(name), check=True, stdout=subprocess.DEVNULL)
        os.sync()
        t = time.perf_counter()
        p = subprocess.Popen(cmd(name), env=envof(name), stdout=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        if status != 0:
            sys.exit(f"{name}: exit status {status}")
        res[name].append((wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss))

print(f"{a.rounds} rounds ({busy} started on a busy machine), churn: {a.churn}")
for name in names:
    w = [r[0] * 1000 for r in res[name]]
    c = [r[1] * 1000 for r in res[name]]
    m = [r[2] / 1024 for r in res[name]]
    print(f"{name:>10}: wall median {st.median(w):6.1f} ms (min {min(w):6.1f}, max {max(w):6.1f})"
          f"  cpu median {st.median(c):6.1f} ms  peak RSS median {st.median(m):5.1f} MiB")
