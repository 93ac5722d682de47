"""Process set-up: the fast malloc for a child process, and OpenMP threads that share the cores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adapters.runtime import SHARED_CPU_ENV, allocator_env, allocator_library, share_cpu


def test_the_web_apps_processes_spin_briefly_unless_the_user_chose_how_openmp_waits():
    assert share_cpu({}) == SHARED_CPU_ENV == {"GOMP_SPINCOUNT": "2000"}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "50"}):
        assert share_cpu(dict(chosen)) == chosen
    env = {"PATH": "/bin"}
    assert share_cpu(env) is env and env["GOMP_SPINCOUNT"] == "2000"  # set in place, before torch starts


def test_a_child_gets_the_fast_malloc_once():
    lib = allocator_library()
    if lib is None:
        pytest.skip("no tcmalloc or jemalloc installed")
    env = allocator_env({"PATH": "/bin"})
    assert env["LD_PRELOAD"] == lib
    assert allocator_env(env)["LD_PRELOAD"] == lib  # not twice
    assert "LD_PRELOAD" not in allocator_env({"LORAEQ_NO_PRELOAD": "1"})
    code = "from adapters.runtime import active_allocator; print(active_allocator())"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": "."}, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == lib.rsplit("/", 1)[-1], out.stderr
