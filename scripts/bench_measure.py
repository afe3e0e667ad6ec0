"""Run one command in a fresh child process and measure it: wall time, peak RSS, and a verdict.

The child gets a wall-clock limit and a resident-memory limit. Its resident set is polled from
/proc while it runs, so a child that grows past the limit is killed and reported as "OOM" before
it can take the machine down; a child killed by the kernel's OOM killer (SIGKILL we did not send)
is reported the same way. Peak RSS is the kernel's own ru_maxrss of that one child (os.wait4), so
it is exact and per process, unlike RUSAGE_CHILDREN which mixes every child ever waited for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

OK, TIMEOUT, OOM, ERROR = "ok", "timeout", "OOM", "error"
POLL_SECONDS = 0.05


@dataclass
class Measured:
    status: str            # ok | timeout | OOM | error
    seconds: float         # wall time from start to exit (or to the kill)
    peak_rss_mb: float     # the child's peak resident set, MiB
    cpu_seconds: float = 0.0  # user + system CPU time of the child (all its threads)
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None
    parts: dict = field(default_factory=dict)  # seconds of named steps, when several ran

    @property
    def ok(self) -> bool:
        return self.status == OK

    def reason(self) -> str:
        """One line saying why the run did not succeed (empty when it did)."""
        if self.ok:
            return ""
        if self.status != ERROR:
            return self.status
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else f"exit status {self.returncode}"


def rss_mb(pid: int) -> float:
    """Current resident set of a live process in MiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def run_measured(command: list[str], *, timeout_s: float, mem_limit_mb: float,
                 cwd: str | None = None, env: dict | None = None) -> Measured:
    # Output goes to files, not pipes: a chatty child can never block on a full pipe.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, cwd=cwd, env=env,
                                 stdin=subprocess.DEVNULL)
        killed_for = None
        peak_polled = 0.0
        try:
            while True:
                pid, status, usage = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    break
                elapsed = time.perf_counter() - start
                current = rss_mb(child.pid)
                peak_polled = max(peak_polled, current)
                if killed_for is None and current > mem_limit_mb:
                    killed_for = OOM
                elif killed_for is None and elapsed > timeout_s:
                    killed_for = TIMEOUT
                if killed_for is not None:
                    child.send_signal(signal.SIGKILL)
                    pid, status, usage = os.wait4(child.pid, 0)
                    break
                time.sleep(POLL_SECONDS)
        except BaseException:
            # Interrupted or terminated: never leave the child running on its own.
            child.kill()
            child.wait()
            raise
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    peak = max(usage.ru_maxrss / 1024.0, peak_polled)
    if killed_for is not None:
        verdict = killed_for
    elif child.returncode == -signal.SIGKILL:
        verdict = OOM  # killed by someone else: on this machine, the kernel's OOM killer
    elif child.returncode != 0:
        verdict = ERROR
    else:
        verdict = OK
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(verdict, seconds, peak, cpu, stdout, stderr, child.returncode)


def combine(steps: list[Measured]) -> Measured:
    """Several processes run one after the other as one tool run: times add, the peak is the
    largest, the first failure is the verdict (later steps are not run after a failure)."""
    failed = next((s for s in steps if not s.ok), None)
    last = failed or steps[-1]
    return Measured(last.status, sum(s.seconds for s in steps), max(s.peak_rss_mb for s in steps),
                    sum(s.cpu_seconds for s in steps), "".join(s.stdout for s in steps),
                    "".join(s.stderr for s in steps), last.returncode)
