"""Where the studio keeps things on disk.

- data folder: ``$FOURD_HOME``, else the platform's user data folder (``~/.local/share/fourd-studio``);
- runs: ``<data>/runs`` unless a project folder is chosen;
- models: ``$FOURD_MODELS_DIR``, else ``<data>/models``; the Hugging Face cache is searched after it.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "fourd-studio"


def data_dir() -> Path:
    if os.environ.get("FOURD_HOME"):
        return Path(os.environ["FOURD_HOME"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def runs_dir() -> Path:
    return data_dir() / "runs"


def models_dir() -> Path:
    if os.environ.get("FOURD_MODELS_DIR"):
        return Path(os.environ["FOURD_MODELS_DIR"]).expanduser()
    return data_dir() / "models"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, honouring ``HF_HUB_CACHE`` and ``HF_HOME`` as huggingface_hub does."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser()
    return home / "hub"
