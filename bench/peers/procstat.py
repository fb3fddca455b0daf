"""Reading a server's process tree and the machine's load from /proc (Linux only, standard library only).

A server is its root process and every descendant (BentoML's and Ray's workers, uvicorn's
workers): CPU time counts all of them, those reaped during a window through their parent's
cutime/cstime; memory is summed over the live tree (RSS double-counts pages shared between
processes, so PSS from smaps_rollup is kept beside it).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards), or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].decode().split()


def descendants(root: int) -> list[int]:
    """`root` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


@dataclass(frozen=True)
class TreeCpu:
    """CPU seconds per process of a tree: own (utime + stime) and reaped children's (cutime + cstime)."""

    own: dict[int, float]
    reaped: dict[int, float]

    def seconds_since(self, before: TreeCpu) -> float:
        """CPU seconds the tree spent between `before` and this sample."""
        total = 0.0
        for pid, seconds in self.own.items():
            total += seconds - before.own.get(pid, 0.0)
        for pid, seconds in self.reaped.items():
            total += seconds - before.reaped.get(pid, 0.0)
        return total


def tree_cpu(root: int) -> TreeCpu:
    """A CPU-time sample of `root`'s process tree."""
    own, reaped = {}, {}
    for pid in descendants(root):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # Fields 14-17 of /proc/PID/stat (utime, stime, cutime, cstime); index 0 here is field 3.
        own[pid] = (int(fields[11]) + int(fields[12])) / TICKS
        reaped[pid] = (int(fields[13]) + int(fields[14])) / TICKS
    return TreeCpu(own, reaped)


@dataclass(frozen=True)
class TreeMemory:
    """Resident memory of a process tree, summed over its live processes."""

    rss_bytes: int
    pss_bytes: int
    processes: int


def tree_memory(root: int) -> TreeMemory:
    """RSS (VmRSS) and PSS of `root`'s live process tree."""
    rss = pss = count = 0
    for pid in descendants(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            statm = Path(f"/proc/{pid}/statm").read_text().split()
            rss += int(statm[1]) * PAGE
            count += 1
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                    break
    return TreeMemory(rss, pss, count)


@dataclass(frozen=True)
class MachineCpu:
    """Jiffies of all CPUs from /proc/stat: busy (not idle, not iowait) and total, with the time taken."""

    busy: int
    total: int
    at: float


def machine_cpu() -> MachineCpu:
    """A sample of the aggregate `cpu` line of /proc/stat."""
    line = Path("/proc/stat").read_text().split("\n", 1)[0]
    values = [int(v) for v in line.split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already inside user).
    idle = values[3] + values[4]
    total = sum(values[:8])
    return MachineCpu(total - idle, total, time.monotonic())


def busy_fraction(before: MachineCpu, after: MachineCpu) -> float:
    """Share of all CPUs busy between two samples (0..1)."""
    total = after.total - before.total
    return (after.busy - before.busy) / total if total > 0 else 0.0


def loadavg() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])
