"""cli/allocator: the train command's malloc settings, applied only on glibc and never over the user's own."""

import ctypes.util
import os
import subprocess
import sys

import pytest

PROBE = "from onnxdual_cli.allocator import keep_freed_blocks; print(keep_freed_blocks())"


def _probe(extra_env: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    return subprocess.run([sys.executable, "-c", PROBE], env={**env, **extra_env}, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux") or "libc.so" not in str(ctypes.util.find_library("c")),
                    reason="glibc's mallopt exists only on Linux with glibc")
def test_applied_on_glibc():
    assert _probe({}) == "True"


def test_the_users_own_malloc_settings_are_kept():
    assert _probe({"MALLOC_ARENA_MAX": "2"}) == "False"
