#!/usr/bin/env python3
"""First backup of day 1, timed over several rounds: cairn binaries side by side.

    benches/compare/first.py [--rounds N] [--work DIR] NAME=BINARY...

Each round backs up day 1 of gen_corpus.py at scale 1 (20,005 files, 820 MB of file
content; made in DIR/corpus if missing, default DIR /var/tmp/cairn-first) into a fresh
local repository per binary, in alternating order, after `sync` and a wait for an idle
machine (85% idle over 0.3 s, at most 2 minutes). Prints the median, min and max wall
time, the median CPU time (user + system) and peak RSS of each, and the median
throughput in MB/s of file content. Divide that by the bound `cargo run --release
--example stage_limit -- DIR/corpus` prints for the pipeline efficiency
(docs/benchmarks.md, "Pipeline efficiency").
"""
import argparse
import os
import shutil
import statistics as st
import subprocess
import sys
import time

from timing import binaries, enter, wait_idle

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=7)
ap.add_argument("--work", default="/var/tmp/cairn-first")
ap.add_argument("--warm", action="store_true",
                help="read the corpus again before every backup (this VM drops page cache)")
ap.add_argument("tools", nargs="+", metavar="NAME=BINARY")
a = ap.parse_args()

here = os.path.dirname(os.path.abspath(__file__))
tools = binaries(a.tools)
work = enter(a.work)
env = dict(os.environ, CAIRN_PASSWORD="bench-password")

if not os.path.isdir("corpus"):
    subprocess.run([sys.executable, f"{here}/gen_corpus.py", "corpus", "1", "--scale", "1"], check=True)
content = 0
for root, _, files in os.walk("corpus"):
    for f in files:
        content += os.lstat(os.path.join(root, f)).st_size


def warm():
    """Read the corpus, so the backup finds it in the page cache (through a pipe: GNU tar
    reads nothing when it writes to /dev/null; and not into this process, whose size a
    forked child's peak RSS would include)."""
    subprocess.run("tar cf - corpus | cat > /dev/null", shell=True, check=True)


warm()


res = {k: [] for k in tools}
busy = 0
names = list(tools)
for i in range(a.rounds):
    for name in names if i % 2 == 0 else names[::-1]:
        repo, cache = f"repo-{name}", f"cache-{name}"
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        subprocess.run([tools[name], "-q", "init", "--repo", repo, "--cache-dir", cache],
                       env=env, check=True)
        if a.warm:
            warm()
        os.sync()
        if not wait_idle():
            busy += 1
        t = time.perf_counter()
        p = subprocess.Popen([tools[name], "-q", "backup", "--repo", repo, "--cache-dir", cache,
                              "corpus"], env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        if status != 0:
            sys.exit(f"{name}: exit status {status}")
        res[name].append((wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss))

print(f"{a.rounds} rounds ({busy} backups started on a busy machine), "
      f"{content / 1e6:.1f} MB of file content")
for name in names:
    w = [r[0] for r in res[name]]
    c = [r[1] for r in res[name]]
    m = [r[2] / 1024 for r in res[name]]
    print(f"{name:>10}: wall median {st.median(w):5.2f} s (min {min(w):5.2f}, max {max(w):5.2f})"
          f"  cpu median {st.median(c):5.2f} s  peak RSS median {st.median(m):5.1f} MiB"
          f"  {content / 1e6 / st.median(w):6.0f} MB/s")
