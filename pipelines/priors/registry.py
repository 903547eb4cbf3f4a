"""Named priors: where their weights come from, where they are looked for, and how they are loaded.

Lookup order for a model folder: an explicit path, ``<models_dir>/<name>`` (``FOURD_MODELS_DIR``), then the
Hugging Face hub cache. Loading never touches the network; ``download`` is the only function that does.
"""

from __future__ import annotations

import importlib
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from pipelines.paths import hf_cache_dir, models_dir


class ModelNotFound(Exception):
    """A prior's weights are not on this machine; the message says where they were looked for and the fix."""


class NoNetwork(Exception):
    """``download`` cannot reach the Hugging Face hub."""


@dataclass(frozen=True)
class ModelSpec:
    """A named prior: ``loader`` is ``"module:function"`` taking ``(path, **options)`` -> Denoiser.

    ``repo_id`` is the Hugging Face repository its weights come from, ``files`` the patterns fetched
    from it (empty: the whole diffusers folder), ``needs`` other named models it borrows parts from.
    """

    name: str
    title: str
    task: str
    loader: str
    repo_id: str | None = None
    files: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    bundled: str | None = None  # a folder under assets/checkpoints that ships with the studio


_DIFFUSERS_FILES = ("model_index.json", "*/config.json", "*/*.txt", "*/tokenizer*.json", "*/vocab.json",
                    "*/special_tokens_map.json", "*/scheduler_config.json", "*/preprocessor_config.json",
                    "*/diffusion_pytorch_model.safetensors", "*/model.safetensors")

_MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> None:
    """Add or replace a named prior (the in-house priors register themselves this way)."""
    _MODELS[spec.name] = spec


def list_models() -> list[ModelSpec]:
    return sorted(_MODELS.values(), key=lambda s: s.name)


def get_model_spec(name: str) -> ModelSpec:
    if name not in _MODELS:
        known = ", ".join(sorted(_MODELS))
        raise ModelNotFound(f"There is no prior named {name!r}; the known priors are: {known}.")
    return _MODELS[name]


for _spec in (
    ModelSpec("sd21-base", "Stable Diffusion 2.1-base", "text-to-image",
              "pipelines.priors.stable_diffusion:load_sd", "stabilityai/stable-diffusion-2-1-base",
              _DIFFUSERS_FILES),
    ModelSpec("mvdream-sd21", "MVDream (SD 2.1, 4 views)", "text-to-multiview",
              "pipelines.priors.mvdream:load_mvdream", "MVDream/MVDream", ("sd-v2.1-base-4view.pt",),
              needs=("sd21-base",)),
    ModelSpec("zeroscope-v2-576w", "Zeroscope v2 576w", "text-to-video",
              "pipelines.priors.zeroscope:load_zeroscope", "cerspense/zeroscope_v2_576w",
              _DIFFUSERS_FILES + ("*/diffusion_pytorch_model.bin", "*/pytorch_model.bin")),
    ModelSpec("svd-xt", "Stable Video Diffusion XT", "image-to-video",
              "pipelines.priors.video_diffusion:load_svd", "stabilityai/stable-video-diffusion-img2vid-xt",
              _DIFFUSERS_FILES),
    ModelSpec("sv3d-p", "SV3D_p (orbit from an image)", "image-to-orbit",
              "pipelines.priors.video_diffusion:load_sv3d", "stabilityai/sv3d", ("sv3d_p.safetensors",),
              needs=("svd-xt",)),
    *(ModelSpec(_name, f"In-house field prior ({_task})", _task,
                f"pipelines.priors.inhouse:load_{_name.replace('-', '_')}", bundled="inhouse-field-prior")
      for _name, _task in (("inhouse-t2i", "text-to-image"), ("inhouse-t2mv", "text-to-multiview"),
                           ("inhouse-t2v", "text-to-video"), ("inhouse-i2v", "image-to-video"),
                           ("inhouse-i2orbit", "image-to-orbit"))),
):
    register_model(_spec)


def _hf_snapshot(repo_id: str) -> Path | None:
    """The snapshot folder of ``repo_id`` in the HF hub cache (the ``main`` ref, else the newest)."""
    root = hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    snapshots = root / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = root / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
        return snapshots / ref.read_text().strip()
    found = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def candidate_paths(name: str) -> list[Path]:
    """Where ``name`` is looked for, in order (the explicit path is checked before these)."""
    spec = get_model_spec(name)
    places = [models_dir() / name]
    if spec.repo_id:
        places.append(hf_cache_dir() / ("models--" + spec.repo_id.replace("/", "--")))
    return places


def installed_path(name: str) -> Path | None:
    """The folder holding ``name``'s weights, or None when it is not on this machine."""
    spec = get_model_spec(name)
    local = models_dir() / name
    if _has_files(local):
        return local
    if spec.bundled:
        from assets import asset_path

        try:
            return asset_path("checkpoints", spec.bundled)
        except FileNotFoundError:
            pass
    if spec.repo_id:
        snap = _hf_snapshot(spec.repo_id)
        if snap is not None and _has_files(snap):
            return snap
    return None


def find_model(name: str, path: str | os.PathLike | None = None) -> Path:
    """The weights folder of ``name``: ``path`` if given, else models dir, else HF cache.

    Raises ModelNotFound with one sentence naming the model, the places searched and the download command.
    """
    spec = get_model_spec(name)
    if path is not None:
        path = Path(path).expanduser()
        if _has_files(path) or path.is_file():
            return path
        raise ModelNotFound(f"The weights for prior {name!r} ({spec.title}) are not at {path}; "
                            f"point to a folder that holds them, or run `fourd models download {name}` "
                            "on a machine with network access.")
    found = installed_path(name)
    if found is not None:
        return found
    places = " and ".join(str(p) for p in candidate_paths(name))
    raise ModelNotFound(f"The weights for prior {name!r} ({spec.title}) were not found in {places}; "
                        f"run `fourd models download {name}` on a machine with network access "
                        "(or set FOURD_MODELS_DIR to a folder that holds them).")


def load_prior(name: str, path: str | os.PathLike | None = None, **options):
    """Load a named prior as a :class:`~pipelines.priors.denoiser.Denoiser`, offline.

    ``options`` go to the adapter's loader (``device``, ``dtype``, ``text_device``, ...).
    """
    spec = get_model_spec(name)
    folder = find_model(name, path)
    module, _, function = spec.loader.partition(":")
    loader = getattr(importlib.import_module(module), function)
    return loader(folder, **options)


def _offline_reason() -> str | None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "FOURD_OFFLINE"):
        if os.environ.get(var, "").lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    return None


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host``:443 opens within ``timeout`` seconds (DNS included).

    The lookup runs in a daemon thread because name resolution ignores socket timeouts.
    """
    result: list[bool] = []

    def probe():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def download(name: str, dest: str | os.PathLike | None = None, timeout: float = 10.0) -> Path:
    """Fetch ``name`` (and the models it borrows from) into ``<models_dir>/<name>`` with huggingface_hub.

    Raises NoNetwork quickly (no hanging) when offline mode is set or the hub cannot be reached.
    """
    spec = get_model_spec(name)
    if spec.repo_id is None:
        raise ModelNotFound(f"Prior {name!r} is not downloadable: it ships with the studio or is trained locally.")
    reason = _offline_reason()
    if reason is None and not hub_reachable(timeout=min(timeout, 5.0)):
        reason = "huggingface.co cannot be reached"
    if reason is not None:
        raise NoNetwork(f"Cannot download prior {name!r}: {reason}; run `fourd models download {name}` on a "
                        f"machine with network access and copy {models_dir() / name} here.")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(timeout)))  # read when huggingface_hub loads
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    for other in spec.needs:
        if installed_path(other) is None:
            download(other, timeout=timeout)
    target = Path(dest) if dest is not None else models_dir() / name
    target.mkdir(parents=True, exist_ok=True)
    page = f"https://huggingface.co/{spec.repo_id}"
    try:
        snapshot_download(spec.repo_id, local_dir=target, allow_patterns=list(spec.files) or None,
                          etag_timeout=timeout)
    except GatedRepoError as err:
        raise ModelNotFound(f"Prior {name!r} comes from a gated repository: accept its licence at {page}, log in "
                            f"with `hf auth login`, then run `fourd models download {name}` again.") from err
    except RepositoryNotFoundError as err:
        raise ModelNotFound(f"The repository {spec.repo_id} of prior {name!r} was not found on huggingface.co; "
                            f"put its files in {target} by hand.") from err
    except OSError as err:  # connection, timeout and HTTP errors
        raise NoNetwork(f"Downloading prior {name!r} from {page} failed ({type(err).__name__}); check the "
                        f"connection and run `fourd models download {name}` again.") from err
    return target
