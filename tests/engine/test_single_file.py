"""Single-file checkpoints: tiny random-weight SD 1.x, SD 2.x and SDXL models saved in the original
(LDM / SGM) key layout, loaded back through generation.engine.checkpoints, fully offline."""

from __future__ import annotations

import copy
import importlib.util
import json
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from generation.engine import checkpoints, clip_tokenizer
from generation.engine.checkpoints import CheckpointError

torch.set_num_threads(1)
VOCAB = clip_tokenizer.VOCAB_SIZE


# --- tiny configs: the shipped ones, shrunk --------------------------------------------------

def _load(family: str, part: str) -> dict:
    name = "scheduler/scheduler_config.json" if part == "scheduler" else f"{part}/config.json"
    return json.loads((checkpoints.CONFIGS / family / name).read_text())


def _tiny_text(family: str, part: str, width: int, projection: int) -> dict:
    config = _load(family, part)
    config.update(hidden_size=width, intermediate_size=2 * width, num_attention_heads=2, num_hidden_layers=2,
                  projection_dim=projection, vocab_size=VOCAB)
    return config


def _tiny_unet(family: str, context: int) -> dict:
    config = _load(family, "unet")
    config.update(block_out_channels=[32, 64], layers_per_block=1, sample_size=32, cross_attention_dim=context)
    if family == "sdxl":
        config.update(down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                      up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], attention_head_dim=[2, 4],
                      transformer_layers_per_block=[1, 2], addition_time_embed_dim=8,
                      projection_class_embeddings_input_dim=8 * 6 + 16)
    else:
        config.update(down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                      up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"])
        if isinstance(config["attention_head_dim"], list):
            config["attention_head_dim"] = [2, 4]
    return config


def _tiny_vae(family: str) -> dict:
    config = _load(family, "vae")
    config.update(block_out_channels=[32, 32], down_block_types=["DownEncoderBlock2D"] * 2,
                  up_block_types=["UpDecoderBlock2D"] * 2, layers_per_block=1, sample_size=16)
    return config


def write_tiny_configs(family: str, folder: Path) -> Path:
    """A diffusers config folder like model_configs/<family>, at a few thousandths of the size."""
    parts = {"scheduler": _load(family, "scheduler"), "vae": _tiny_vae(family)}
    if family == "sdxl":
        parts.update(text_encoder=_tiny_text(family, "text_encoder", 32, 32),
                     text_encoder_2=_tiny_text(family, "text_encoder_2", 48, 16), unet=_tiny_unet(family, 32 + 48))
    else:
        parts.update(text_encoder=_tiny_text(family, "text_encoder", 32, 32), unet=_tiny_unet(family, 32))
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text((checkpoints.CONFIGS / family / "model_index.json").read_text())
    for part, config in parts.items():
        name = "scheduler_config.json" if part == "scheduler" else "config.json"
        (folder / part).mkdir()
        (folder / part / name).write_text(json.dumps(config))
    return folder


# --- diffusers -> original single-file key layout (the inverse of diffusers' conversion) -----------

RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
          ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def unet_to_ldm(state: dict, config: dict) -> dict:
    per = config["layers_per_block"]
    blocks = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
              "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2.",
              "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
              "mid_block.attentions.0.": "middle_block.1."}
    for j in range(2):
        blocks[f"mid_block.resnets.{j}."] = f"middle_block.{2 * j}."
    for i, kind in enumerate(config["down_block_types"]):
        for j in range(per):
            n = 1 + i * (per + 1) + j
            blocks[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{n}.0."
            blocks[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{n}.1."
        blocks[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(i + 1) * (per + 1)}.0.op."
    for i, kind in enumerate(config["up_block_types"]):
        for j in range(per + 1):
            n = i * (per + 1) + j
            blocks[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{n}.0."
            blocks[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{n}.1."
        blocks[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{i * (per + 1) + per}.{2 if 'CrossAttn' in kind else 1}."
    out = {}
    for key, value in state.items():
        prefix = next(p for p in sorted(blocks, key=len, reverse=True) if key.startswith(p))
        rest = key[len(prefix):]
        if ".resnets." in prefix:
            rest = _rename(rest, RESNET)
        out["model.diffusion_model." + blocks[prefix] + rest] = value
    return out


def _rename(rest: str, pairs) -> str:
    for new, old in pairs:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def vae_to_ldm(state: dict, config: dict) -> dict:
    last = len(config["up_block_types"]) - 1
    out = {}
    for key, value in state.items():
        k = key.replace("mid_block.attentions.0.", "mid.attn_1.").replace("conv_norm_out", "norm_out")
        k = k.replace("conv_shortcut", "nin_shortcut")
        for j in range(2):
            k = k.replace(f"mid_block.resnets.{j}.", f"mid.block_{j + 1}.")
        for i in range(last + 1):
            k = k.replace(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
            k = k.replace(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            k = k.replace(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{last - i}.block.")
            k = k.replace(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{last - i}.upsample.")
        if ".attn_1." in k:
            k = (k.replace("group_norm", "norm").replace("to_q", "q").replace("to_k", "k").replace("to_v", "v")
                 .replace("to_out.0", "proj_out"))
            if value.ndim == 2:
                value = value[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        out["first_stage_model." + k] = value
    return out


OPEN_CLIP = [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
             ("self_attn.out_proj", "attn.out_proj")]


def open_clip_to_ldm(state: dict, prefix: str, width: int) -> dict:
    out = {prefix + "text_projection": state.pop("text_projection.weight").T.contiguous()
           if "text_projection.weight" in state else torch.randn(width, width)}
    top = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
           "text_model.embeddings.position_embedding.weight": "positional_embedding",
           "text_model.final_layer_norm.weight": "ln_final.weight", "text_model.final_layer_norm.bias": "ln_final.bias"}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key in top:
            out[prefix + top[key]] = value
            continue
        if not key.startswith("text_model.encoder.layers."):
            continue
        layer, rest = key[len("text_model.encoder.layers."):].split(".", 1)
        block = f"{prefix}transformer.resblocks.{layer}."
        if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
            qkv.setdefault(block + "attn.in_proj_" + rest.rsplit(".", 1)[1], {})[rest.split(".")[1]] = value
            continue
        out[block + _rename(rest, OPEN_CLIP)] = value
    for key, parts in qkv.items():
        out[key] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return out


def _clip_state(model) -> dict:
    """A CLIP text model's weights named as in transformers 4 (text_model.*), as the files have them."""
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("position_ids"):
            continue
        text_model_part = not key.startswith(("text_model.", "text_projection."))
        state[("text_model." if text_model_part else "") + key] = value
    return state


def save_single_file(pipe, family: str, path: Path) -> Path:
    """The pipeline's weights under the key names an original SD 1.x / 2.x / SDXL file uses."""
    state = {**unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config),
             **vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config)}
    text = _clip_state(pipe.text_encoder)
    if family == "sd1":
        state.update({"cond_stage_model.transformer." + k: v for k, v in text.items()})
    elif family == "sd2":
        state.update(open_clip_to_ldm(text, "cond_stage_model.model.", pipe.text_encoder.config.hidden_size))
    else:
        state.update({"conditioner.embedders.0.transformer." + k: v for k, v in text.items()})
        state.update(open_clip_to_ldm(_clip_state(pipe.text_encoder_2), "conditioner.embedders.1.model.",
                                      pipe.text_encoder_2.config.hidden_size))
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def build_tiny_pipeline(family: str, configs: Path, tokenizers: Path):
    from diffusers import (
        AutoencoderKL,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    parts = {"unet": UNet2DConditionModel.from_config(json.loads((configs / "unet/config.json").read_text())),
             "vae": AutoencoderKL.from_config(json.loads((configs / "vae/config.json").read_text())),
             "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder"))}
    scheduler_config = json.loads((configs / "scheduler/scheduler_config.json").read_text())
    import diffusers
    parts["scheduler"] = getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config)
    if family == "sdxl":
        parts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(configs / "text_encoder_2"))
        return StableDiffusionXLPipeline(**parts, tokenizer=clip_tokenizer.load_clip_tokenizer("clip", tokenizers),
                                         tokenizer_2=clip_tokenizer.load_clip_tokenizer("open_clip", tokenizers))
    return StableDiffusionPipeline(**parts, tokenizer=clip_tokenizer.load_clip_tokenizer("clip", tokenizers),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


SHIPPED = {"sd1": "sd15", "sd2": "sd21", "sdxl": "sdxl"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Offline like a studio without internet: any connection attempt fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    return clip_tokenizer.tokenizer_folder(tmp_path_factory.mktemp("clip-tokenizer"))


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory, tokenizers):
    """family -> (checkpoint path, tiny config folder, the diffusers pipeline it was saved from)."""
    root = tmp_path_factory.mktemp("single-file")
    files = {}
    for family, shipped in SHIPPED.items():
        configs = write_tiny_configs(shipped, root / f"{family}-configs")
        pipe = build_tiny_pipeline(family, configs, tokenizers)
        files[family] = (save_single_file(pipe, family, root / f"tiny-{family}-model.safetensors"), configs, pipe)
    return files


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_each_family_is_detected_loaded_and_generates(tiny_files, tokenizers, family):
    path, configs, original = tiny_files[family]
    # a misleading name proves the family comes from the tensors
    misnamed = path.with_name("sdxl-v1-5-pruned.safetensors" if family != "sdxl" else "sd15-pruned.safetensors")
    misnamed.unlink(missing_ok=True)
    misnamed.symlink_to(path)
    checkpoint = checkpoints.detect(misnamed)
    assert checkpoint.family == family
    assert checkpoint.config_dir == checkpoints.CONFIGS / {"sd1": "sd15", "sd2": "sd21", "sdxl": "sdxl"}[family]

    pipe = checkpoints.load_pipeline(misnamed, config_dir=configs, tokenizer_cache=tokenizers)
    assert type(pipe).__name__ == checkpoint.pipeline_class
    # every weight came back where diffusers keeps it
    for name in ("unet", "vae", "text_encoder") + (("text_encoder_2",) if family == "sdxl" else ()):
        loaded, saved = getattr(pipe, name).state_dict(), getattr(original, name).state_dict()
        for key, value in saved.items():
            if not key.endswith("position_ids"):
                assert torch.equal(loaded[key], value), f"{name}.{key}"
    image = pipe("a red cube", num_inference_steps=2, height=48, width=32, guidance_scale=5.0,
                 generator=torch.Generator().manual_seed(1)).images[0]
    assert image.size == (32, 48)


def test_sd2_prediction_rule_and_overrides(tiny_files, tokenizers, tmp_path):
    path, configs, _ = tiny_files["sd2"]
    assert checkpoints.detect(path).prediction == "v_prediction"
    assert checkpoints.detect(path).native_size == 768
    eps = checkpoints.detect(path, prediction="epsilon")
    assert (eps.prediction, eps.native_size, eps.config_dir.name) == ("epsilon", 512, "sd21-base")
    pipe = checkpoints.load_pipeline(path, config_dir=configs, tokenizer_cache=tokenizers, prediction="epsilon")
    assert pipe.scheduler.config.prediction_type == "epsilon"
    # an A1111-style YAML beside the file decides too
    beside = tmp_path / "model.safetensors"
    beside.symlink_to(path)
    (tmp_path / "model.yaml").write_text("model:\n  params:\n    parameterization: \"v\"\n")
    assert checkpoints.detect(beside).prediction == "v_prediction"
    (tmp_path / "model.yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    assert checkpoints.detect(beside).prediction == "epsilon"
    assert checkpoints.detect(tiny_files["sd1"][0]).prediction == "epsilon"
    with pytest.raises(CheckpointError, match="prediction must be"):
        checkpoints.detect(path, prediction="v")


def test_pickle_checkpoints_are_refused_unread(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"PK\x03\x04 a pickle would run code here")
    with pytest.raises(CheckpointError, match=r"pickle checkpoints \(\.ckpt\) are refused"):
        checkpoints.load_pipeline(ckpt)
    with pytest.raises(CheckpointError, match="must be a .safetensors"):
        checkpoints.detect(tmp_path / "model.gguf")


def test_garbage_truncated_and_foreign_files_are_refused(tiny_files, tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x80\x02}q\x00" + bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        checkpoints.load_pipeline(garbage)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="only 0 bytes"):
        checkpoints.detect(empty)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(tiny_files["sd1"][0].read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="is truncated"):
        checkpoints.load_pipeline(truncated)
    foreign = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.lora_up.weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(CheckpointError, match="no Stable Diffusion UNet"):
        checkpoints.detect(foreign)
    with pytest.raises(CheckpointError, match="cannot read"):
        checkpoints.detect(tmp_path / "missing.safetensors")


def test_mismatched_text_encoder_and_unet_are_refused(tiny_files, tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(tiny_files["sd1"][0]))
    key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    state[key] = torch.zeros(VOCAB, 40)
    odd = tmp_path / "odd.safetensors"
    save_file(state, str(odd))
    with pytest.raises(CheckpointError, match="gives 40-wide embeddings but its UNet attends to 32"):
        checkpoints.detect(odd)


def test_shipped_configs_build_the_published_architectures():
    """The shipped configs give the published models' exact parameter counts (built on the meta device)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def count(model):
        return sum(p.numel() for p in model.parameters())

    expected_unet = {"sd15": 859_520_964, "sd21": 865_910_724, "sd21-base": 865_910_724, "sdxl": 2_567_463_684}
    with torch.device("meta"):
        for family, params in expected_unet.items():
            unet = UNet2DConditionModel.from_config(_load(family, "unet"))
            assert count(unet) == params, family
            assert count(AutoencoderKL.from_config(_load(family, "vae"))) == 83_653_863, family
        assert count(CLIPTextModel(CLIPTextConfig(**_load("sd15", "text_encoder")))) == 123_060_480
        assert count(CLIPTextModel(CLIPTextConfig(**_load("sd21", "text_encoder")))) == 340_387_840
        assert count(CLIPTextModelWithProjection(CLIPTextConfig(**_load("sdxl", "text_encoder_2")))) == 694_659_840


def _open_clip_tokenizer():
    """open_clip's own SimpleTokenizer, loaded from its file (the package's __init__ needs torchvision)."""
    package = Path(next(iter(importlib.util.find_spec("open_clip").submodule_search_locations)))
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer", package / "tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer()


PROMPTS = ["a photo of an astronaut riding a horse on Mars", "Ünïcödé café, masterpiece (best quality:1.2)",
           "漢字 and an emoji 🐱, 4K HDR", "  spaces   and\ttabs\nand newlines  "]


def test_tokenizer_ids_equal_open_clips_own_tokenizer(tokenizers):
    reference = _open_clip_tokenizer()
    assert (reference.sot_token_id, reference.eot_token_id) == (49406, 49407)
    for kind in ("clip", "open_clip"):
        tokenizer = clip_tokenizer.load_clip_tokenizer(kind, tokenizers)
        assert len(tokenizer) == VOCAB
        for prompt in PROMPTS + (["4k!! wow!"] if kind == "clip" else []):
            ids = tokenizer(prompt).input_ids
            assert ids == [reference.sot_token_id, *reference.encode(prompt), reference.eot_token_id], (kind, prompt)
        padded = tokenizer("hi", padding="max_length").input_ids
        assert len(padded) == 77
        assert padded[-1] == (49407 if kind == "clip" else 0)  # SD 2.x / SDXL's 2nd encoder pad with "!"


def test_tokenizer_files_are_built_once_into_the_cache(tmp_path):
    folder = clip_tokenizer.tokenizer_folder(tmp_path / "cache")
    vocab = json.loads((folder / "vocab.json").read_text())
    assert (len(vocab), vocab["<|endoftext|>"], vocab["a</w>"]) == (VOCAB, 49407, 320)
    stamp = (folder / "vocab.json").stat().st_mtime_ns
    clip_tokenizer.tokenizer_folder(tmp_path / "cache")
    assert (folder / "vocab.json").stat().st_mtime_ns == stamp


def test_model_info_of_a_single_file_comes_from_its_tensors_and_the_shipped_configs(tiny_files, tmp_path):
    import hashlib

    from generation.engine import ModelError, read_model_info

    path = tiny_files["sd2"][0]
    info = read_model_info(path)
    assert (info.family, info.native_width, info.native_height, info.name) == ("sd2", 768, 768, path.stem)
    assert info.hash == hashlib.sha256(path.read_bytes()).hexdigest()[:10]  # A1111's short hash
    assert read_model_info(tiny_files["sdxl"][0]).native_width == 1024
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"pickle")
    with pytest.raises(ModelError, match="refused"):
        read_model_info(ckpt)


def test_the_engine_generates_from_a_single_file(tiny_files, monkeypatch, tmp_path):
    from generation.engine import Engine, GenerationRequest

    path, configs, _ = tiny_files["sd1"]
    shrunk = tmp_path / "configs"
    shrunk.mkdir()
    (shrunk / "sd15").symlink_to(configs)  # the engine reads the shipped configs; here, the tiny ones
    monkeypatch.setattr(checkpoints, "CONFIGS", shrunk)
    engine = Engine(path, device="cpu")
    assert (engine.info.family, engine.info.native_width) == ("sd1", 64)
    result = engine.generate(GenerationRequest(prompt="a red cube", width=64, height=72, steps=2, seed=3))
    assert (result.images[0].width, result.images[0].height) == (64, 72)


def test_an_inpainting_checkpoint_loads_with_its_nine_channel_unet(tiny_files, tokenizers, tmp_path):
    from diffusers import UNet2DConditionModel

    _, configs, original = tiny_files["sd1"]
    unet = UNet2DConditionModel.from_config({**original.unet.config, "in_channels": 9})
    inpainting = copy.copy(original)
    inpainting.unet = unet
    path = save_single_file(inpainting, "sd1", tmp_path / "tiny-inpainting.safetensors")
    assert checkpoints.detect(path).inpainting
    pipe = checkpoints.load_pipeline(path, config_dir=configs, tokenizer_cache=tokenizers)
    assert pipe.unet.config.in_channels == 9
    assert torch.equal(pipe.unet.conv_in.weight, unet.conv_in.weight)
    assert json.loads((configs / "unet/config.json").read_text())["in_channels"] == 4  # a copy was changed


def test_an_sd2_inpainting_checkpoint_is_epsilon(tmp_path):
    path = tmp_path / "sd2-inpainting.safetensors"
    save_file({checkpoints.UNET_IN: torch.zeros(32, 9, 3, 3), checkpoints.SD2_TEXT: torch.zeros(10, 16),
               "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(32, 16)},
              str(path))
    checkpoint = checkpoints.detect(path)
    assert (checkpoint.family, checkpoint.inpainting, checkpoint.prediction) == ("sd2", True, "epsilon")
    assert checkpoint.config_dir.name == "sd21-base"
