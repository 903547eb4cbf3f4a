"""Diffusion priors: one denoiser interface, a registry of named models, adapters and guidance losses.

Importing this package loads neither diffusers nor transformers; the adapters import them when a model loads.
"""

from pipelines.priors.denoiser import Conditioning, Denoiser, Prediction
from pipelines.priors.registry import (
    ModelNotFound,
    ModelSpec,
    NoNetwork,
    download,
    find_model,
    get_model_spec,
    list_models,
    load_prior,
    register_model,
)

__all__ = ["Conditioning", "Denoiser", "ModelNotFound", "ModelSpec", "NoNetwork", "Prediction", "download",
           "find_model", "get_model_spec", "list_models", "load_prior", "register_model"]
