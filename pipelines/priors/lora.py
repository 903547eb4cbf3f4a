"""A camera-conditioned LoRA on a diffusers UNet: the variational score estimator of VSD.

ProlificDreamer / 4D-fy fine-tune a low-rank copy of the prior during distillation, conditioned on the
rendering camera: rank-r adapters on every attention projection, and the flattened 4x4 camera-to-world
matrix passed through a small MLP and added to the timestep embedding. Here the adapters wrap the base
UNet's own Linear layers (no second UNet) and are switched on only inside :meth:`CameraLoRA.active`, so one
set of base weights serves both the pretrained and the LoRA score.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


class LoRALinear(nn.Module):
    """``base(x) + scale * up(down(x))`` with ``up`` zero-initialised, so a fresh LoRA changes nothing."""

    def __init__(self, base: nn.Linear, rank: int, scale: float = 1.0):
        super().__init__()
        self.base, self.scale, self.enabled = base, scale, False
        self.down = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device)
        self.up = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device)
        nn.init.kaiming_uniform_(self.down.weight, a=5 ** 0.5)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.enabled:
            y = y + self.scale * self.up(self.down(x.to(self.down.weight.dtype))).to(y.dtype)
        return y


class CameraLoRA(nn.Module):
    """LoRA adapters on ``unet``'s attention projections plus a camera embedding into its time embedding.

    The LoRA weights are float32 whatever the UNet's dtype (they are trained). ``camera_dim`` is 16 for a
    flattened 4x4 pose.
    """

    def __init__(self, unet: nn.Module, rank: int = 4, camera_dim: int = 16, *,
                 projections: tuple[str, ...] = ATTENTION_PROJECTIONS, time_embedding: nn.Module | None = None):
        """``projections`` name the Linear layers of an attention module (the first one identifies it) and
        ``time_embedding`` the module whose output the camera embedding is added to (default the diffusers
        UNet's ``time_embedding``), so that non-UNet denoisers (the in-house DiT) can host the LoRA too."""
        super().__init__()
        self.layers = nn.ModuleDict()
        for name, module in list(unet.named_modules()):
            if not hasattr(module, projections[0]):
                continue
            for proj in projections:
                parent = module.get_submodule(proj.rpartition(".")[0]) if "." in proj else module
                leaf = proj.rpartition(".")[2]
                base = getattr(parent, leaf) if leaf != "0" else parent[0]
                if isinstance(base, LoRALinear) or not isinstance(base, nn.Linear):
                    continue
                wrapped = LoRALinear(base, rank)
                if leaf == "0":
                    parent[0] = wrapped
                else:
                    setattr(parent, leaf, wrapped)
                self.layers[f"{name}.{proj}".replace(".", "_")] = wrapped
        if not self.layers:
            raise ValueError("the UNet has no attention projections to attach a LoRA to")
        time_embedding = time_embedding if time_embedding is not None else unet.time_embedding
        last = [m for m in time_embedding.modules() if isinstance(m, nn.Linear)][-1]
        emb_dim, device = last.out_features, last.weight.device
        self.camera_embedding = nn.Sequential(nn.Linear(camera_dim, emb_dim), nn.SiLU(),
                                              nn.Linear(emb_dim, emb_dim)).to(device)
        nn.init.zeros_(self.camera_embedding[2].weight)
        nn.init.zeros_(self.camera_embedding[2].bias)
        self._camera: torch.Tensor | None = None
        self._hook = time_embedding.register_forward_hook(self._add_camera)

    def _add_camera(self, module, inputs, output):
        if self._camera is None:
            return output
        cam = self.camera_embedding(self._camera.to(self.camera_embedding[0].weight))
        if cam.shape[0] != output.shape[0]:  # cameras [B] for B*V*F flattened images
            cam = cam.repeat_interleave(output.shape[0] // cam.shape[0], 0)
        return output + cam.to(output.dtype)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if ".base." not in n]

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the adapter and camera weights (what a checkpoint needs; the base UNet is frozen)."""
        return {k: v for k, v in self.state_dict().items() if ".base." not in k}

    @contextmanager
    def active(self, cameras: torch.Tensor | None):
        """Within the block the UNet computes the LoRA score for ``cameras`` [B, 16] (zeros: unconditional)."""
        for layer in self.layers.values():
            layer.enabled = True
        self._camera = cameras
        try:
            yield self
        finally:
            for layer in self.layers.values():
                layer.enabled = False
            self._camera = None
