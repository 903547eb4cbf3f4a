"""Install the Debian packages that Qt WebEngine and the browser-mode tests need, once, when missing.

Run by `make` after the Python packages are installed. It is idempotent: when PySide6's WebEngine
already imports, it does nothing (a fraction of a second). On a bare Debian it installs the
libraries measured in shared/notes/qt-webengine.md, only when running as root with apt-get present;
otherwise it prints the command for the user to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# What QtWebEngine needs for import and offscreen WebGL (Mesa llvmpipe through ANGLE).
QT_PACKAGES = [
    "libgl1", "libegl1", "libgbm1", "libx11-6", "libxcb1", "libxcb-dri3-0", "libxcomposite1", "libxdamage1",
    "libxext6", "libxfixes3", "libxrandr2", "libxtst6", "libxkbcommon0", "libxkbfile1", "libasound2",
    "libbrotli1", "libdbus-1-3", "libfontconfig1", "libfreetype6", "libglib2.0-0", "libnspr4", "libnss3",
]

_PROBE = "import PySide6.QtWebEngineWidgets"


def webengine_imports() -> bool:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=120)
    return result.returncode == 0


def install(packages: list[str]) -> bool:
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        print(
            "Qt WebEngine cannot load its system libraries. Install them with:\n"
            f"  sudo apt-get install -y {' '.join(packages)}",
            file=sys.stderr,
        )
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([apt, "update", "-qq"], check=False, env=env)
    result = subprocess.run([apt, "install", "-y", "-qq", "--no-install-recommends", *packages], env=env)
    return result.returncode == 0


def main() -> int:
    # Headless Chromium drives the browser-mode tests (shared/notes/qt-webengine.md).
    if shutil.which("chromium") is None and os.environ.get("FOURD_SKIP_CHROMIUM") is None:
        print("Installing Debian's chromium for the browser-mode tests ...", file=sys.stderr)
        install(["chromium"])
    if webengine_imports():
        return 0
    print("Qt WebEngine does not import yet; installing its system libraries ...", file=sys.stderr)
    install(QT_PACKAGES)
    if not webengine_imports():
        print("Qt WebEngine still does not import; the desktop window will be unavailable "
              "(browser mode still works: `fourd-studio --browser`).", file=sys.stderr)
    # Never fail the build for this: the headless layers and browser mode work without Qt.
    return 0


if __name__ == "__main__":
    sys.exit(main())
