"""Process-level CPU settings (renderers.allocator): `fourd` and the benchmarks bound OpenMP's spin waits before
torch loads, so a job next to another busy program is not slowed ~10x by spinning threads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = ("import os, sys, {module}; "
         "print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)")


@pytest.mark.parametrize("module", ["pipelines.cli", "benchmarks"])
def test_entry_points_set_the_wait_policy_before_torch_loads(module):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", CHECK.format(module=module)], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["3000", "False"]


@pytest.mark.parametrize("user", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "50"}])
def test_a_policy_the_user_set_wins(user):
    env = {**{k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}, **user}
    out = subprocess.run([sys.executable, "-c", CHECK.format(module="pipelines.cli")], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == user.get("GOMP_SPINCOUNT", "None")
