"""What the timing scripts here share: the binaries to time, and waiting for an idle
machine before a timed run."""
import os
import time


def binaries(specs):
    """NAME=BINARY arguments as {name: absolute path}."""
    tools = {}
    for t in specs:
        name, _, binary = t.partition("=")
        tools[name] = os.path.abspath(binary)
    return tools


def enter(work):
    """Make the work directory, change into it and return its absolute path."""
    work = os.path.abspath(work)
    os.makedirs(work, exist_ok=True)
    os.chdir(work)
    return work


def idle_fraction(dt=0.3):
    """The fraction of CPU time all cores spent idle (or waiting for I/O) over `dt` s."""
    def snap():
        v = list(map(int, open("/proc/stat").readline().split()[1:]))
        return sum(v), v[3] + v[4]
    t1, i1 = snap()
    time.sleep(dt)
    t2, i2 = snap()
    return (i2 - i1) / max(1, t2 - t1)


def wait_idle(limit=120):
    """Wait until the machine is 85% idle; False when it still is not after `limit` s."""
    start = time.time()
    while idle_fraction() < 0.85:
        if time.time() - start > limit:
            return False
        time.sleep(0.5)
    return True
