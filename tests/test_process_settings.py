"""Process-level CPU settings (renderers.allocator): the entry points make OpenMP's idle threads sleep
before torch loads, so a job next to another busy program is not slowed ~10x by spinning waits."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = ("import os, sys, {module}; "
         "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")


@pytest.mark.parametrize("module", ["pipelines.cli", "studio.app", "benchmarks"])
def test_entry_points_set_the_wait_policy_before_torch_loads(module):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", CHECK.format(module=module)], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["PASSIVE", "False"]


def test_a_policy_the_user_set_wins():
    env = {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}
    out = subprocess.run([sys.executable, "-c", CHECK.format(module="pipelines.cli")], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "ACTIVE"
