"""Fault injection with strace on a forked copy of the test process (shared by the fault tests).

The test process has already imported torch, onnx and pandas (seconds on a loaded machine), so every trial
forks it: the child blocks on a pipe, ``strace -p`` attaches to it with one ``-e inject=...`` rule, and only
then is the child let go to run the code under test. A kill point is a counted event (``when=N``: the N-th
call of one syscall after the attach), never a timer, so the trials are the same on a fast and a slow
machine. The attach is awaited by polling ``/proc/PID/status`` for the tracer, not by sleeping a guess.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from onnxdual.errors import OnnxDualError

STRACE = shutil.which("strace")


def require_strace() -> None:
    """Skip unless strace exists and may trace a child here (containers may forbid ptrace); with
    ONNXDUAL_REQUIRE_STRACE=1 (CI) fail instead, so the fault tests cannot silently stop running."""
    why = None
    if STRACE is None or not sys.platform.startswith("linux"):
        why = "needs strace on Linux (apt-get install strace)"
    else:
        probe = subprocess.run([STRACE, "-qq", "-o", os.devnull, "-e", "trace=none", "true"],
                               capture_output=True)
        if probe.returncode != 0:
            why = f"strace cannot trace here: {probe.stderr.decode(errors='replace').strip()[:200]}"
    if why is not None:
        if os.environ.get("ONNXDUAL_REQUIRE_STRACE") == "1":
            pytest.fail(why)
        pytest.skip(why)


class Injected:
    """A forked child running ``work()`` under ``strace -e inject=INJECT`` (see :func:`run_injected`);
    :meth:`wait` returns its outcome."""

    def __init__(self, work: Callable[[], None], inject: str | None):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: wait until traced, run, leave without running the parent's exit handlers
            code = 1
            try:
                os.close(write_end)
                os.read(read_end, 1)
                work()
                code = 0
            except OnnxDualError:
                code = 2
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(read_end)
        self.pid, self.tracer = pid, None
        try:
            if inject is not None:
                command = [STRACE, "-qq", "-f", "-o", os.devnull, "-e", f"inject={inject}", "-p", str(pid)]
                self.tracer = subprocess.Popen(command, stdin=subprocess.DEVNULL)
                while _status(pid, "TracerPid:") in ("", "0"):
                    if self.tracer.poll() is not None:
                        raise RuntimeError(f"strace exited with {self.tracer.returncode} before attaching")
                    time.sleep(0.005)  # polling the attach, not timing the work
            os.write(write_end, b"x")
        except BaseException:
            self.kill()
            raise
        finally:
            os.close(write_end)

    def wait_until(self, condition: Callable[[], bool]) -> None:
        """Poll until ``condition()`` holds (e.g. a file the child makes exists); fail if the child ends
        first."""
        while not condition():
            if _status(self.pid, "State:")[:1] in ("Z", "X", ""):
                raise AssertionError("the child ended before the condition held")
            time.sleep(0.005)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.wait()

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        if self.tracer is not None:
            self.tracer.wait()
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _status(pid: int, key: str) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return line.split(None, 1)[1].strip()
    except OSError:
        pass
    return ""


def run_injected(work: Callable[[], None], inject: str | None) -> int:
    """Run ``work()`` in a forked child, under ``strace -e inject=INJECT`` when ``inject`` is given.

    Returns the child's outcome: 0 when ``work`` returned, 2 when it raised an :class:`OnnxDualError` (a
    user-facing error, as the CLI exits), 1 for any other exception (printed), ``-SIGNAL`` when killed.
    """
    return Injected(work, inject).wait()


def kill_points(work: Callable[[], None], syscalls: list[str], check: Callable[[str, int, int], None],
                reset: Callable[[], None] = lambda: None, errors: dict[str, str] | None = None,
                limit: int = 50) -> list[tuple[str, int, int]]:
    """For every syscall of ``syscalls`` and N = 1, 2, ...: ``reset()``, run ``work`` in a child killed
    (SIGKILL) at its N-th call of that syscall, then ``check(rule, N, outcome)``; the first N the child
    survives is one past its last call. ``errors`` (``{syscall: "EIO"}``) then injects that error at each
    of those calls in turn (a failed call need not end the work, so the count comes from the kill walk).
    Returns every ``(rule, N, outcome)`` tried."""
    tried: list[tuple[str, int, int]] = []

    def trial(rule: str, n: int) -> int:
        reset()
        outcome = run_injected(work, f"{rule}:when={n}")
        tried.append((rule, n, outcome))
        check(rule, n, outcome)
        return outcome

    calls = {}
    for syscall in syscalls:
        for n in range(1, limit + 1):
            if trial(f"{syscall}:signal=SIGKILL", n) == 0:
                calls[syscall] = n - 1
                break
        else:
            raise AssertionError(f"{syscall}: the work still made more than {limit} calls")
    for syscall, error in (errors or {}).items():
        for n in range(1, calls[syscall] + 1):
            trial(f"{syscall}:error={error}", n)
    return tried
