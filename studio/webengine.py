"""When Qt WebEngine needs software-WebGL Chromium flags, and setting them without overriding the user.

Measured in shared/notes/qt-webengine.md: as root Chromium needs ``--no-sandbox``; on software GL
(no GPU, offscreen, Xvfb) WebGL needs ``--ignore-gpu-blocklist`` and grabs need
``--disable-gpu-compositing``. A desktop user with a GPU gets none of these, and a
``QTWEBENGINE_CHROMIUM_FLAGS`` already in the environment always wins.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, MutableMapping

ENV_FLAGS = "QTWEBENGINE_CHROMIUM_FLAGS"
SOFTWARE_GL_FLAGS = ("--ignore-gpu-blocklist", "--disable-gpu-compositing")


def has_gpu() -> bool:
    """A GPU the browser engine can use: a DRM render node or an NVIDIA device."""
    return bool(glob.glob("/dev/dri/renderD*") or glob.glob("/dev/nvidia[0-9]*"))


def has_display(env: Mapping[str, str]) -> bool:
    """A window can open: an X or Wayland display, or Qt told to render offscreen."""
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")) or env.get("QT_QPA_PLATFORM") == "offscreen"


def chromium_flags(env: Mapping[str, str], *, is_root: bool, gpu: bool) -> list[str]:
    """The flags this machine needs (empty for a normal user on a GPU desktop)."""
    flags = []
    if is_root:
        flags.append("--no-sandbox")
    if not gpu or env.get("QT_QPA_PLATFORM") == "offscreen":
        flags.extend(SOFTWARE_GL_FLAGS)
    return flags


def apply_chromium_flags(env: MutableMapping[str, str] | None = None) -> str | None:
    """Set ``QTWEBENGINE_CHROMIUM_FLAGS`` when this machine needs flags and the user set none.

    Call before the QApplication starts. Returns the flags now in effect (None when none).
    """
    env = os.environ if env is None else env
    if ENV_FLAGS in env:
        return env[ENV_FLAGS]
    flags = chromium_flags(env, is_root=hasattr(os, "geteuid") and os.geteuid() == 0, gpu=has_gpu())
    if not flags:
        return None
    env[ENV_FLAGS] = " ".join(flags)
    return env[ENV_FLAGS]
