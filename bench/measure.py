"""What every benchmark measures the same way: percentiles of latencies, and peak memory."""

from __future__ import annotations

import math
import resource
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

Number = TypeVar("Number", int, float)


def percentile(ordered: Sequence[Number], fraction: float) -> Number:
    """Nearest-rank percentile of sorted values (``fraction`` 0.5 is the median)."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def vmhwm_kb(pid: int | str = "self") -> int:
    """Peak resident set size (VmHWM) of a process in kB, 0 when it is gone.

    Unlike ``ru_maxrss``, which Linux carries over a fork and exec, VmHWM is the process's own
    peak.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def mb(kb: int) -> float:
    """kB -> MB (MiB, as the kernel counts)."""
    return kb / 1024


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's peak resident set size in MB; for this process without /proc, what
    getrusage says."""
    kb = vmhwm_kb(pid)
    if kb == 0 and pid == "self":
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return mb(kb)


def parent_pid(pid: int) -> int:
    """A process's parent, 0 when it is gone: a server's workers are its parent's children."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    return int(text[text.rfind(")") + 2 :].split()[1])
