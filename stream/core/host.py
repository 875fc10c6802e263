"""What this host offers the process: its CPU (flags, clock), its usable CPUs and how busy other
processes keep them."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
CPUFREQ_MAX = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")


def parse_cpuinfo(text: str) -> tuple[set[str], str, float | None]:
    """The first CPU's flags and vendor, and the highest clock in MHz, from /proc/cpuinfo's text."""
    flags: set[str] = set()
    vendor, mhz = "", 0.0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and not flags:
            flags = set(value.split())
        elif key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "cpu MHz":
            with contextlib.suppress(ValueError):
                mhz = max(mhz, float(value))
    return flags, vendor, mhz or None


def cpu_flags() -> tuple[set[str], str, float | None]:
    """This host's flags, vendor and clock (cpufreq's maximum where the kernel exposes one)."""
    try:
        flags, vendor, mhz = parse_cpuinfo(CPUINFO.read_text(encoding="utf-8"))
    except OSError:  # not Linux: no flags, rather than guessed ones
        return set(), "", None
    with contextlib.suppress(OSError, ValueError):
        mhz = int(CPUFREQ_MAX.read_text()) / 1000
    return flags, vendor, mhz


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _busy_ticks() -> int:
    """Clock ticks every CPU has spent busy since boot, from /proc/stat's first line."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(v) for v in fh.readline().split()[1:9]]  # user .. steal; guest is inside user
    return sum(fields) - fields[3] - fields[4]  # less idle and iowait


def busy_elsewhere(window_s: float = 0.5) -> float | None:
    """CPUs that other processes keep busy now: the machine's busy time over a short window, less
    this process's own (its other threads may run meanwhile).  Not the load average: that decays
    over a minute, so right after this process's own data preparation it reads as one busy core
    and training would start on half the machine.  None where /proc/stat is missing."""
    try:
        busy0 = _busy_ticks()
        own0, wall0 = time.process_time(), time.monotonic()
        time.sleep(window_s)
        busy1 = _busy_ticks()
        own1, wall1 = time.process_time(), time.monotonic()
    except (OSError, ValueError, IndexError):
        return None
    wall = max(wall1 - wall0, 1e-6)
    machine = (busy1 - busy0) / os.sysconf("SC_CLK_TCK") / wall
    return max(0.0, machine - (own1 - own0) / wall)
