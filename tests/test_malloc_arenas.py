"""rscore caps glibc's malloc arenas so threads share them (rscore/malloc.py; the 16384 px landslide run's peak RSS
768 -> 691 MiB, benchmarks/bench_earth_scale.py) - unless the user chose MALLOC_ARENA_MAX, which glibc already
applied at start and which must win."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CODE = "from rscore.malloc import cap_malloc_arenas; print(cap_malloc_arenas(), cap_malloc_arenas())"


def _run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env_extra
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_cap_is_set_once_on_glibc_and_the_users_choice_wins():
    assert _run({}).split() == ["True", "True"]
    assert _run({"MALLOC_ARENA_MAX": "8"}).split() == ["False", "False"]  # left as the user set it

