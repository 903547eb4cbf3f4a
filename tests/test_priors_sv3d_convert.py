"""SV3D_p's original sgm checkpoint -> diffusers: key names, shapes, forward equality, and the registry path.

The sgm key list is built here independently of the converter, by walking the block structure the way
generative-models' VideoUNet constructor does (sgm/modules/diffusionmodules/video_model.py with the
ResBlock of openaimodel.py and SpatialVideoTransformer of video_attention.py).
"""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from pipelines.priors import load_prior
from pipelines.priors.sgm_convert import (
    CHECKPOINT_NAME,
    SOURCE_RECORD,
    UNET_PREFIX,
    VAE_DECODER_PREFIX,
    VAE_ENCODER_PREFIX,
    WEIGHTS_NAME,
    BadCheckpoint,
    block_map,
    convert_sv3d_unet,
    convert_sv3d_vae,
    diffusers_name,
    sv3d_unet_config,
)
from pipelines.priors.tiny_models import write_tiny_svd
from pipelines.priors.video_diffusion import sv3d_unet_class

# configs/inference/sv3d_p.yaml: model_channels 320, channel_mult [1, 2, 4, 4], num_res_blocks 2,
# attention_resolutions [4, 2, 1] (levels 0-2), transformer_depth 1, context_dim 1024, adm_in_channels 1280.
SV3D_P = {"model_channels": 320, "channel_mult": (1, 2, 4, 4), "num_res_blocks": 2,
          "attention": (True, True, True, False), "depth": 1, "context_dim": 1024, "adm_in_channels": 1280}
SV3D_P_VAE = {"ch": 128, "ch_mult": (1, 2, 4, 4), "num_res_blocks": 2}  # sv3d_p.yaml ddconfig, z_channels 4
TINY_VAE = {"ch": 32, "ch_mult": (1, 2, 2, 2), "num_res_blocks": 1}
TINY = {"model_channels": 64, "channel_mult": (1, 2), "num_res_blocks": 1, "attention": (True, False), "depth": 1,
        "context_dim": 32, "adm_in_channels": 20}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _resblock(prefix: str, cin: int, cout: int, emb: int) -> dict[str, tuple]:
    """sgm ResBlock (image part, 3x3 convs) and its time_stack (3x1x1 convs) inside a VideoResBlock."""
    keys = {}
    for stack, kernel, c in (("", (3, 3), cin), ("time_stack.", (3, 1, 1), cout)):
        keys |= {f"{prefix}{stack}in_layers.0.weight": (c,), f"{prefix}{stack}in_layers.0.bias": (c,),
                 f"{prefix}{stack}in_layers.2.weight": (cout, c, *kernel), f"{prefix}{stack}in_layers.2.bias": (cout,),
                 f"{prefix}{stack}emb_layers.1.weight": (cout, emb), f"{prefix}{stack}emb_layers.1.bias": (cout,),
                 f"{prefix}{stack}out_layers.0.weight": (cout,), f"{prefix}{stack}out_layers.0.bias": (cout,),
                 f"{prefix}{stack}out_layers.3.weight": (cout, cout, *kernel),
                 f"{prefix}{stack}out_layers.3.bias": (cout,)}
    if cin != cout:
        keys |= {f"{prefix}skip_connection.weight": (cout, cin, 1, 1), f"{prefix}skip_connection.bias": (cout,)}
    return keys | {f"{prefix}time_mixer.mix_factor": (1,)}


def _attention(prefix: str, c: int, context: int) -> dict[str, tuple]:
    keys = {f"{prefix}to_q.weight": (c, c), f"{prefix}to_k.weight": (c, context), f"{prefix}to_v.weight": (c, context),
            f"{prefix}to_out.0.weight": (c, c), f"{prefix}to_out.0.bias": (c,)}
    return keys


def _feed_forward(prefix: str, c: int) -> dict[str, tuple]:
    """GEGLU feed-forward: net.0.proj doubles the 4c inner width for the gate."""
    return {f"{prefix}net.0.proj.weight": (8 * c, c), f"{prefix}net.0.proj.bias": (8 * c,),
            f"{prefix}net.2.weight": (c, 4 * c), f"{prefix}net.2.bias": (c,)}


def _transformer(prefix: str, c: int, depth: int, context: int) -> dict[str, tuple]:
    """SpatialVideoTransformer with use_linear, extra_ff_mix_layer (ff_in) and use_spatial_context."""
    keys = {f"{prefix}norm.weight": (c,), f"{prefix}norm.bias": (c,), f"{prefix}proj_in.weight": (c, c),
            f"{prefix}proj_in.bias": (c,), f"{prefix}proj_out.weight": (c, c), f"{prefix}proj_out.bias": (c,),
            f"{prefix}time_pos_embed.0.weight": (4 * c, c), f"{prefix}time_pos_embed.0.bias": (4 * c,),
            f"{prefix}time_pos_embed.2.weight": (c, 4 * c), f"{prefix}time_pos_embed.2.bias": (c,),
            f"{prefix}time_mixer.mix_factor": (1,)}
    for k in range(depth):
        for stack in ("transformer_blocks", "time_stack"):
            block = f"{prefix}{stack}.{k}."
            keys |= _attention(block + "attn1.", c, c) | _attention(block + "attn2.", c, context)
            keys |= _feed_forward(block + "ff.", c)
            keys |= {f"{block}norm{i}.{p}": (c,) for i in (1, 2, 3) for p in ("weight", "bias")}
            if stack == "time_stack":
                keys |= _feed_forward(block + "ff_in.", c)
                keys |= {f"{block}norm_in.weight": (c,), f"{block}norm_in.bias": (c,)}
    return keys


def sgm_unet_keys(model_channels, channel_mult, num_res_blocks, attention, depth, context_dim, adm_in_channels,
                  in_channels=8, out_channels=4) -> dict[str, tuple]:
    """Every key (with its shape) of sgm's VideoUNet for this architecture, as its constructor names them."""
    mc, emb = model_channels, 4 * model_channels
    keys = {"input_blocks.0.0.weight": (mc, in_channels, 3, 3), "input_blocks.0.0.bias": (mc,),
            "time_embed.0.weight": (emb, mc), "time_embed.0.bias": (emb,), "time_embed.2.weight": (emb, emb),
            "time_embed.2.bias": (emb,), "label_emb.0.0.weight": (emb, adm_in_channels), "label_emb.0.0.bias": (emb,),
            "label_emb.0.2.weight": (emb, emb), "label_emb.0.2.bias": (emb,), "out.0.weight": (mc,),
            "out.0.bias": (mc,), "out.2.weight": (out_channels, mc, 3, 3), "out.2.bias": (out_channels,)}
    ch, chans, index = mc, [mc], 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            keys |= _resblock(f"input_blocks.{index}.0.", ch, mult * mc, emb)
            ch = mult * mc
            if attention[level]:
                keys |= _transformer(f"input_blocks.{index}.1.", ch, depth, context_dim)
            chans.append(ch)
            index += 1
        if level != len(channel_mult) - 1:
            keys |= {f"input_blocks.{index}.0.op.weight": (ch, ch, 3, 3), f"input_blocks.{index}.0.op.bias": (ch,)}
            chans.append(ch)
            index += 1
    keys |= _resblock("middle_block.0.", ch, ch, emb) | _transformer("middle_block.1.", ch, depth, context_dim)
    keys |= _resblock("middle_block.2.", ch, ch, emb)
    index = 0
    for level, mult in reversed(list(enumerate(channel_mult))):
        for i in range(num_res_blocks + 1):
            keys |= _resblock(f"output_blocks.{index}.0.", ch + chans.pop(), mult * mc, emb)
            ch, slot = mult * mc, 1
            if attention[level]:
                keys |= _transformer(f"output_blocks.{index}.1.", ch, depth, context_dim)
                slot = 2
            if level and i == num_res_blocks:
                keys |= {f"output_blocks.{index}.{slot}.conv.weight": (ch, ch, 3, 3),
                         f"output_blocks.{index}.{slot}.conv.bias": (ch,)}
            index += 1
    return keys


def _vae_resnet(prefix: str, cin: int, cout: int) -> dict[str, tuple]:
    keys = {f"{prefix}norm1.weight": (cin,), f"{prefix}norm1.bias": (cin,), f"{prefix}conv1.weight": (cout, cin, 3, 3),
            f"{prefix}conv1.bias": (cout,), f"{prefix}norm2.weight": (cout,), f"{prefix}norm2.bias": (cout,),
            f"{prefix}conv2.weight": (cout, cout, 3, 3), f"{prefix}conv2.bias": (cout,)}
    if cin != cout:
        keys |= {f"{prefix}nin_shortcut.weight": (cout, cin, 1, 1), f"{prefix}nin_shortcut.bias": (cout,)}
    return keys


def _vae_mid(prefix: str, c: int) -> dict[str, tuple]:
    keys = _vae_resnet(prefix + "block_1.", c, c) | _vae_resnet(prefix + "block_2.", c, c)
    keys |= {f"{prefix}attn_1.norm.weight": (c,), f"{prefix}attn_1.norm.bias": (c,)}
    return keys | {f"{prefix}attn_1.{n}.{p}": (c, c, 1, 1) if p == "weight" else (c,)
                   for n in ("q", "k", "v", "proj_out") for p in ("weight", "bias")}


def sgm_vae_keys(ch, ch_mult, num_res_blocks, z=4) -> dict[str, tuple]:
    """SV3D's VAE keys: sgm Encoder in conditioner.embedders.1 (with quant_conv), Decoder in first_stage_model
    (sgm/modules/diffusionmodules/model.py; no attention outside the mid block, no post_quant_conv)."""
    enc, dec = VAE_ENCODER_PREFIX + "encoder.", VAE_DECODER_PREFIX + "decoder."
    keys = {f"{enc}conv_in.weight": (ch, 3, 3, 3), f"{enc}conv_in.bias": (ch,),
            f"{VAE_ENCODER_PREFIX}quant_conv.weight": (2 * z, 2 * z, 1, 1),
            f"{VAE_ENCODER_PREFIX}quant_conv.bias": (2 * z,)}
    c = ch
    for i, mult in enumerate(ch_mult):
        for j in range(num_res_blocks):
            keys |= _vae_resnet(f"{enc}down.{i}.block.{j}.", c, ch * mult)
            c = ch * mult
        if i != len(ch_mult) - 1:
            keys |= {f"{enc}down.{i}.downsample.conv.weight": (c, c, 3, 3), f"{enc}down.{i}.downsample.conv.bias": (c,)}
    keys |= _vae_mid(enc + "mid.", c) | {f"{enc}norm_out.weight": (c,), f"{enc}norm_out.bias": (c,),
                                          f"{enc}conv_out.weight": (2 * z, c, 3, 3), f"{enc}conv_out.bias": (2 * z,)}
    keys |= {f"{dec}conv_in.weight": (c, z, 3, 3), f"{dec}conv_in.bias": (c,)} | _vae_mid(dec + "mid.", c)
    for i, mult in reversed(list(enumerate(ch_mult))):
        for j in range(num_res_blocks + 1):
            keys |= _vae_resnet(f"{dec}up.{i}.block.{j}.", c, ch * mult)
            c = ch * mult
        if i != 0:
            keys |= {f"{dec}up.{i}.upsample.conv.weight": (c, c, 3, 3), f"{dec}up.{i}.upsample.conv.bias": (c,)}
    return keys | {f"{dec}norm_out.weight": (c,), f"{dec}norm_out.bias": (c,), f"{dec}conv_out.weight": (3, c, 3, 3),
                   f"{dec}conv_out.bias": (3,)}


def random_checkpoint(arch: dict, seed: int = 0, device: str = "cpu", vae: dict | None = None,
                      ) -> dict[str, torch.Tensor]:
    """A whole-engine state dict in sgm layout: the UNet (and the VAE halves), plus parts the converter skips."""
    g = torch.Generator().manual_seed(seed)
    keys = sgm_unet_keys(**arch) | (sgm_vae_keys(**vae) if vae else {})
    state = {(k if k.startswith(("first_stage", "conditioner")) else UNET_PREFIX + k):
             (torch.randn(s, generator=g) * 0.2 if device == "cpu" else torch.empty(s, device=device))
             for k, s in keys.items()}
    return state | {"conditioner.embedders.0.open_clip.model.visual.proj": torch.zeros(2, 2, device=device),
                    "denoiser.sigmas": torch.zeros(3, device=device)}


def test_real_sgm_names_map_to_diffusers_names():
    """Literal key names of the published checkpoint (sv3d_p.yaml architecture) and where they land."""
    state = random_checkpoint(SV3D_P, device="meta")
    blocks = block_map(sv3d_unet_config({k[len(UNET_PREFIX):]: v for k, v in state.items()
                                         if k.startswith(UNET_PREFIX)}))
    expected = {
        "input_blocks.0.0.weight": "conv_in.weight",
        "time_embed.2.bias": "time_embedding.linear_2.bias",
        "label_emb.0.0.weight": "add_embedding.linear_1.weight",
        "input_blocks.1.0.in_layers.0.weight": "down_blocks.0.resnets.0.spatial_res_block.norm1.weight",
        "input_blocks.1.0.time_stack.in_layers.2.weight": "down_blocks.0.resnets.0.temporal_res_block.conv1.weight",
        "input_blocks.1.0.time_stack.emb_layers.1.bias":
            "down_blocks.0.resnets.0.temporal_res_block.time_emb_proj.bias",
        "input_blocks.1.0.time_mixer.mix_factor": "down_blocks.0.resnets.0.time_mixer.mix_factor",
        "input_blocks.2.1.time_mixer.mix_factor": "down_blocks.0.attentions.1.time_mixer.mix_factor",
        "input_blocks.3.0.op.weight": "down_blocks.0.downsamplers.0.conv.weight",
        "input_blocks.4.0.skip_connection.weight": "down_blocks.1.resnets.0.spatial_res_block.conv_shortcut.weight",
        "input_blocks.5.1.time_stack.0.ff_in.net.0.proj.weight":
            "down_blocks.1.attentions.1.temporal_transformer_blocks.0.ff_in.net.0.proj.weight",
        "input_blocks.7.1.time_pos_embed.0.weight": "down_blocks.2.attentions.0.time_pos_embed.linear_1.weight",
        "input_blocks.9.0.op.bias": "down_blocks.2.downsamplers.0.conv.bias",
        "input_blocks.11.0.out_layers.3.weight": "down_blocks.3.resnets.1.spatial_res_block.conv2.weight",
        "middle_block.0.time_stack.out_layers.0.bias": "mid_block.resnets.0.temporal_res_block.norm2.bias",
        "middle_block.1.transformer_blocks.0.attn2.to_k.weight":
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        "middle_block.1.time_pos_embed.2.bias": "mid_block.attentions.0.time_pos_embed.linear_2.bias",
        "middle_block.2.emb_layers.1.weight": "mid_block.resnets.1.spatial_res_block.time_emb_proj.weight",
        "output_blocks.0.0.skip_connection.weight": "up_blocks.0.resnets.0.spatial_res_block.conv_shortcut.weight",
        "output_blocks.2.1.conv.weight": "up_blocks.0.upsamplers.0.conv.weight",
        "output_blocks.5.2.conv.weight": "up_blocks.1.upsamplers.0.conv.weight",
        "output_blocks.8.1.time_stack.0.attn1.to_v.weight":
            "up_blocks.2.attentions.2.temporal_transformer_blocks.0.attn1.to_v.weight",
        "output_blocks.11.1.proj_out.weight": "up_blocks.3.attentions.2.proj_out.weight",
        "out.0.bias": "conv_norm_out.bias",
        "out.2.weight": "conv_out.weight",
    }
    assert {k: diffusers_name(k, blocks) for k in expected} == expected
    for key in expected:  # each literal is a real key of the enumerated architecture
        assert UNET_PREFIX + key in state


def test_full_size_sv3d_p_converts_to_svd_xt_unet_with_camera_vector():
    """The whole sv3d_p.yaml UNet on the meta device: every key placed, every shape matching diffusers."""
    converted, config = convert_sv3d_unet(random_checkpoint(SV3D_P, device="meta"))
    # stabilityai/stable-video-diffusion-img2vid-xt unet/config.json, but for the camera vector width.
    svd_xt = {"in_channels": 8, "out_channels": 4, "block_out_channels": [320, 640, 1280, 1280],
              "layers_per_block": 2, "cross_attention_dim": 1024, "transformer_layers_per_block": 1,
              "num_attention_heads": [5, 10, 20, 20], "addition_time_embed_dim": 256,
              "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
              "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3}
    assert {k: config[k] for k in svd_xt} == svd_xt
    assert config["projection_class_embeddings_input_dim"] == 1280  # 256 + 512 + 512; SVD's is 768
    assert len(converted) == len(sgm_unet_keys(**SV3D_P)) == 1428  # the real VideoUNet(sv3d_p.yaml) has 1428


def test_converted_checkpoint_loads_strictly_and_every_tensor_lands_once():
    state = random_checkpoint(TINY | {"channel_mult": (1, 2, 2), "num_res_blocks": 2, "depth": 2,
                                      "attention": (True, True, False)})
    converted, config = convert_sv3d_unet(state)
    assert config["block_out_channels"] == [64, 128, 128] and config["layers_per_block"] == 2
    assert config["transformer_layers_per_block"] == 2 and config["addition_time_embed_dim"] == 4
    model = sv3d_unet_class().from_config(config)
    model.load_state_dict(converted, strict=True)
    loaded = model.state_dict()
    sources = {id(v): k for k, v in state.items()}
    assert len({sources[id(v)] for v in converted.values()}) == len(converted)  # a bijection, no duplicates
    assert all(torch.equal(loaded[k], v) for k, v in converted.items())


def test_vae_halves_convert_to_one_autoencoder_kl_with_the_right_names():
    """Each sgm tensor carries its own index, so the literal names below check where each one lands."""
    from diffusers import AutoencoderKL

    keys = sgm_vae_keys(**TINY_VAE)
    state = {k: torch.full(shape, float(i)) for i, (k, shape) in enumerate(keys.items())}
    converted, config = convert_sv3d_vae(state)
    vae = AutoencoderKL.from_config(config)
    vae.load_state_dict(converted, strict=True)
    assert not config["use_post_quant_conv"] and config["scaling_factor"] == 0.18215
    index = {k: i for i, k in enumerate(keys)}
    expected = {
        "first_stage_model.decoder.up.3.block.0.conv1.weight": "decoder.up_blocks.0.resnets.0.conv1.weight",
        "first_stage_model.decoder.up.1.upsample.conv.weight": "decoder.up_blocks.2.upsamplers.0.conv.weight",
        "first_stage_model.decoder.up.0.block.1.norm2.bias": "decoder.up_blocks.3.resnets.1.norm2.bias",
        "first_stage_model.decoder.mid.attn_1.q.weight": "decoder.mid_block.attentions.0.to_q.weight",
        "first_stage_model.decoder.mid.attn_1.proj_out.bias": "decoder.mid_block.attentions.0.to_out.0.bias",
        "first_stage_model.decoder.norm_out.weight": "decoder.conv_norm_out.weight",
        "conditioner.embedders.1.encoder.encoder.down.0.downsample.conv.weight":
            "encoder.down_blocks.0.downsamplers.0.conv.weight",
        "conditioner.embedders.1.encoder.encoder.down.1.block.0.nin_shortcut.weight":
            "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
        "conditioner.embedders.1.encoder.encoder.mid.block_2.conv1.bias": "encoder.mid_block.resnets.1.conv1.bias",
        "conditioner.embedders.1.encoder.quant_conv.weight": "quant_conv.weight",
    }
    for sgm_key, diffusers_key in expected.items():
        assert converted[diffusers_key].flatten()[0].item() == index[sgm_key], sgm_key
    assert converted["decoder.mid_block.attentions.0.to_q.weight"].ndim == 2  # 1x1 conv -> linear

    decoder_only = {k: v for k, v in state.items() if k.startswith(VAE_DECODER_PREFIX)}
    assert convert_sv3d_vae(decoder_only) is None  # the loader then borrows svd-xt's VAE

    full, full_config = convert_sv3d_vae(random_checkpoint(SV3D_P, device="meta", vae=SV3D_P_VAE))
    assert full_config["block_out_channels"] == [128, 256, 512, 512] and full_config["layers_per_block"] == 2
    assert len(full) == 246  # every key of the real sgm Encoder + quant_conv + Decoder placed


def _to_sgm(diffusers_state: dict, arch: dict) -> dict:
    """diffusers keys -> sgm keys by inverting the converter's name map over the enumerated sgm key list."""
    keys = sgm_unet_keys(**arch)
    config = sv3d_unet_config({k: torch.empty(s, device="meta") for k, s in keys.items()})
    blocks = block_map(config)
    inverse = {diffusers_name(k, blocks): k for k in keys}
    return {UNET_PREFIX + inverse[k]: v.clone() for k, v in diffusers_state.items()}


def _cameras(batch: int, views: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.stack([torch.full((batch, views), 1e-5), torch.rand(batch, views, generator=g) * 3,
                        torch.rand(batch, views, generator=g) * 6.28], -1)


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    """svd-xt (tiny, diffusers layout) and sv3d-p as Stability ships it: only sv3d_p.safetensors."""
    root = tmp_path_factory.mktemp("models")
    write_tiny_svd(root / "svd-xt")
    torch.manual_seed(7)
    config = sv3d_unet_config({k: torch.empty(s, device="meta") for k, s in sgm_unet_keys(**TINY).items()})
    reference = sv3d_unet_class().from_config(config).eval()
    with torch.no_grad():
        for p in reference.parameters():  # zero-initialised output convs and mix factors would hide mistakes
            p.normal_(0, 0.2)
    (root / "sv3d-p").mkdir()
    g = torch.Generator().manual_seed(8)
    vae = {k: torch.randn(shape, generator=g) * 0.1 for k, shape in sgm_vae_keys(**TINY_VAE).items()}
    checkpoint = _to_sgm(reference.state_dict(), TINY) | vae | {"denoiser.sigmas": torch.ones(3)}
    save_file(checkpoint, root / "sv3d-p" / CHECKPOINT_NAME)
    torch.save(reference.state_dict(), root / "reference.pt")
    return root


def test_load_prior_converts_once_and_matches_the_source_model(models_root, monkeypatch):
    monkeypatch.setenv("FOURD_MODELS_DIR", str(models_root))
    model = load_prior("sv3d-p")
    unet_dir = models_root / "sv3d-p" / "unet"
    assert json.loads((unet_dir / SOURCE_RECORD).read_text())["checkpoint"] == CHECKPOINT_NAME
    assert type(model.vae).__name__ == "AutoencoderKL"  # the checkpoint's own image VAE, not svd-xt's
    assert not any(p.name.startswith(".unet.tmp") for p in unet_dir.parent.iterdir())

    reference = sv3d_unet_class().from_pretrained(unet_dir)
    reference.load_state_dict(torch.load(models_root / "reference.pt", weights_only=True), strict=True)
    x = torch.randn(1, 5, 8, 16, 16, generator=torch.Generator().manual_seed(1))
    args = (x, torch.tensor([0.5]), torch.randn(1, 1, 32, generator=torch.Generator().manual_seed(2)), _cameras(1, 5))
    with torch.no_grad():
        expected = reference(*args).sample
        assert expected.abs().max() > 0.1
        torch.testing.assert_close(model.unet(*args).sample, expected, rtol=0, atol=1e-5)

    # One denoising step through the adapter, as a pipeline calls it.
    cond = model.encode_image_condition(torch.rand(1, 3, 128, 128), noise_aug=1e-5)  # VAE: 8x down
    cond.elevations = torch.full((1, 5), 0.2)
    cond.azimuths = torch.linspace(0, 2 * torch.pi, 6)[None, 1:]
    noisy = torch.randn(1, 5, 1, 4, 16, 16, generator=torch.Generator().manual_seed(3)) * 5.0
    pred = model.predict(noisy, torch.tensor([5.0]), cond)
    assert pred.x0.shape == noisy.shape and torch.isfinite(pred.x0).all()
    frames = model.decode_latents(pred.x0.flatten(0, 2))
    assert frames.shape == (5, 3, 128, 128) and torch.isfinite(frames).all()

    stamp = (unet_dir / WEIGHTS_NAME).stat().st_mtime_ns
    load_prior("sv3d-p")  # cached: no second conversion
    assert (unet_dir / WEIGHTS_NAME).stat().st_mtime_ns == stamp
    checkpoint = models_root / "sv3d-p" / CHECKPOINT_NAME
    os.utime(checkpoint, ns=(stamp + 10**9, stamp + 10**9))  # a new download of the checkpoint
    load_prior("sv3d-p")
    assert (unet_dir / WEIGHTS_NAME).stat().st_mtime_ns != stamp


def test_checkpoint_in_the_hf_cache_converts_into_the_data_dir(models_root, tmp_path, monkeypatch):
    from pipelines.paths import data_dir
    from pipelines.priors.video_diffusion import sv3d_model_root

    snapshot = tmp_path / "hub" / "models--stabilityai--sv3d" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / CHECKPOINT_NAME).symlink_to(models_root / "sv3d-p" / CHECKPOINT_NAME)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    root = sv3d_model_root(snapshot)
    assert root == data_dir() / "converted" / "sv3d-p"
    assert (root / "unet" / WEIGHTS_NAME).is_file() and (root / "vae" / WEIGHTS_NAME).is_file()
    assert not (snapshot / "unet").exists()


def test_a_unet_only_checkpoint_given_by_path_borrows_svd_xt_vae(models_root, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("FOURD_MODELS_DIR", str(models_root))
    full = load_file(models_root / "sv3d-p" / CHECKPOINT_NAME)
    save_file({k: v for k, v in full.items() if k.startswith(UNET_PREFIX)}, tmp_path / CHECKPOINT_NAME)
    model = load_prior("sv3d-p", tmp_path / CHECKPOINT_NAME)
    assert type(model.vae).__name__ == "AutoencoderKLTemporalDecoder" and not (tmp_path / "vae").exists()
    assert (tmp_path / "unet" / WEIGHTS_NAME).is_file()


def test_a_checkpoint_with_missing_or_foreign_keys_names_them(tmp_path):
    state = random_checkpoint(TINY)
    del state[UNET_PREFIX + "input_blocks.1.0.time_stack.in_layers.2.weight"]
    state[UNET_PREFIX + "input_blocks.1.0.lora_up.weight"] = torch.zeros(1)
    with pytest.raises(BadCheckpoint) as err:
        convert_sv3d_unet(state)
    message = str(err.value)
    assert "down_blocks.0.resnets.0.temporal_res_block.conv1.weight" in message
    assert "model.diffusion_model.input_blocks.1.0.lora_up.weight" in message
    assert message.count(". ") == 0 and "\n" not in message  # one sentence

    with pytest.raises(BadCheckpoint, match="no sgm VideoUNet"):
        convert_sv3d_unet({"first_stage_model.decoder.conv_in.weight": torch.zeros(1)})
    from pipelines.priors.registry import ModelNotFound
    from pipelines.priors.video_diffusion import load_sv3d

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="sv3d_p.safetensors"):
        load_sv3d(tmp_path / "empty")
