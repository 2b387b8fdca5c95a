"""LoRA files (lora_format: inspect, refuse, fit, write kohya) and LoRAs in the engine (lora.py)."""

from __future__ import annotations

import hashlib
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from generation.engine.contracts import InvalidRequest
from generation.engine.lora_format import LoraFileError, inspect_lora, kohya_from_peft, model_modules

BASE_DIR = Path(__file__).resolve().parents[2]
# The tiny demo model tests/settings.py builds once and caches (the engine conftest's
# demo_model_path builds another copy per session; this module uses the cached one when it is there).
CACHED_MODEL = BASE_DIR / "var" / "cache" / "test-demo-model"


@pytest.fixture(scope="module")
def model_path(request):
    if (CACHED_MODEL / "model_index.json").exists() and (CACHED_MODEL / "studio_hash.json").exists():
        return CACHED_MODEL
    return request.getfixturevalue("demo_model_path")


# -- building files --------------------------------------------------------------------------------


def safetensors_bytes(tensors: dict[str, tuple[list[int], str]], metadata: dict | None = None,
                      values: dict[str, bytes] | None = None) -> bytes:
    """A safetensors file (torch-free): name -> (shape, dtype), zero data unless given in values."""
    sizes = {"F32": 4, "F16": 2}
    header, chunks, offset = {}, [], 0
    for name, (shape, dtype) in tensors.items():
        size = math.prod(shape) * sizes[dtype]
        chunk = (values or {}).get(name, b"\0" * size)
        assert len(chunk) == size
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        chunks.append(chunk)
        offset += size
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(chunks)


def kohya_keys(modules: dict[str, tuple[int, int]], rank=4, alpha=None, dtype="F16") -> bytes:
    """A kohya file for {kohya module name: (inputs, outputs)}."""
    tensors, values = {}, {}
    for name, (inputs, outputs) in modules.items():
        tensors[f"{name}.lora_down.weight"] = ([rank, inputs], dtype)
        tensors[f"{name}.lora_up.weight"] = ([outputs, rank], dtype)
        if alpha is not None:
            tensors[f"{name}.alpha"] = ([], "F32")
            values[f"{name}.alpha"] = struct.pack("<f", alpha)
    return safetensors_bytes(tensors, values=values)


# An SDXL kohya LoRA's shape, a few modules of each part (sd-scripts names SDXL's UNet the SGM way).
SDXL_KOHYA = {
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q": (640, 640),
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": (2048, 640),
    "lora_unet_middle_block_1_transformer_blocks_9_attn2_to_v": (2048, 1280),
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
    "lora_te2_text_model_encoder_layers_31_self_attn_q_proj": (1280, 1280),
}
# The same LoRA in diffusers' layout (what a diffusers SDXL training script saves).
SDXL_DIFFUSERS = {
    "unet.down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k": (2048, 640),
    "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k": (2048, 1280),
}


def diffusers_file(modules: dict[str, tuple[int, int]], rank=4, metadata=None) -> bytes:
    tensors = {}
    for name, (inputs, outputs) in modules.items():
        tensors[f"{name}.lora_A.weight"] = ([rank, inputs], "F32")
        tensors[f"{name}.lora_B.weight"] = ([outputs, rank], "F32")
    return safetensors_bytes(tensors, metadata=metadata)


def peft_states(model_path, *, rank=4, seed=0, text_encoder=True, scale=0.2):
    """Random PEFT state dicts (get_peft_model_state_dict's keys) for the model's attention layers."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    model = model_modules(model_path)

    def state(component, wanted):
        result = {}
        for name, shape in model[component].items():
            if name.endswith(wanted):
                result[f"{name}.lora_A.weight"] = torch.randn(rank, *shape[1:], generator=generator) * scale
                result[f"{name}.lora_B.weight"] = torch.randn(shape[0], rank, *[1] * (len(shape) - 2),
                                                              generator=generator) * scale
        return result

    unet = state("unet", ("to_q", "to_k", "to_v", "to_out.0", "proj_in"))
    te = state("text_encoder", ("q_proj", "v_proj")) if text_encoder else {}
    return unet, te


# -- kohya_from_peft -------------------------------------------------------------------------------


def test_kohya_from_peft_writes_the_a1111_key_layout_and_kohyas_metadata(model_path):
    unet, te = peft_states(model_path)
    data = kohya_from_peft(unet, te, alpha=2.0, metadata={"ss_output_name": "zwx-dog", "ss_steps": 150,
                                                           "studio_trigger_words": "zwx"})
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    meta = header.pop("__metadata__")
    keys = set(header)
    stem = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    assert {f"{stem}.lora_down.weight", f"{stem}.lora_up.weight", f"{stem}.alpha"} <= keys
    assert "lora_te_text_model_encoder_layers_1_self_attn_v_proj.lora_up.weight" in keys
    assert header[f"{stem}.alpha"]["shape"] == [] and header["lora_unet_down_blocks_1_attentions_0_proj_in"
                                                             ".lora_down.weight"]["shape"] == [4, 64, 1, 1]
    assert len(keys) == 3 * (len(unet) + len(te)) // 2
    assert (meta["ss_network_module"], meta["ss_network_dim"], meta["ss_network_alpha"]) == \
        ("networks.lora", "4", "2.0")
    assert (meta["ss_base_model_version"], meta["ss_v2"], meta["ss_steps"]) == ("sd_v1", "False", "150")
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.title"] == "zwx-dog" and meta["studio_trigger_words"] == "zwx"
    assert meta["sshs_model_hash"] == hashlib.sha256(data[8 + length :]).hexdigest()
    summary = inspect_lora(data, filename="zwx-dog.safetensors", model_path=model_path)
    assert (summary.format, summary.rank, summary.alpha) == ("kohya", 4, 2.0)
    assert len(summary.unet_modules) == len(unet) // 2 and len(summary.text_encoder_modules) == 4
    assert "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q" in summary.unet_modules
    assert "encoder.layers.0.self_attn.q_proj" in summary.text_encoder_modules
    assert all(m.model_module == m.name for m in summary.modules)
    assert summary.model_name == "studio-demo" and summary.metadata["ss_output_name"] == "zwx-dog"


def test_kohya_from_peft_refuses_what_is_not_a_peft_state(model_path):
    unet, _ = peft_states(model_path, text_encoder=False)
    with pytest.raises(ValueError, match="not a PEFT LoRA key"):
        kohya_from_peft({"conv_in.weight": next(iter(unet.values()))}, alpha=1)
    half = {k: v for k, v in unet.items() if not k.endswith("lora_B.weight")}
    with pytest.raises(ValueError, match="both lora_A and lora_B"):
        kohya_from_peft(half, alpha=1)
    with pytest.raises(ValueError, match="alpha"):
        kohya_from_peft(unet, alpha=0)


def test_lora_format_is_torch_free_at_import():
    code = ("import sys, generation.engine.lora_format; "
            "sys.exit(1 if {'torch', 'safetensors', 'diffusers'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR).returncode == 0


# -- inspect_lora: formats -------------------------------------------------------------------------


def test_inspect_reads_the_three_layouts_with_rank_alpha_and_family():
    kohya = inspect_lora(kohya_keys(SDXL_KOHYA, rank=8, alpha=4.0), filename="x.safetensors")
    assert (kohya.format, kohya.rank, kohya.alpha, kohya.base_family_guess) == ("kohya", 8, 4.0, "sdxl")
    assert "input_blocks.4.1.transformer_blocks.0.attn2.to_k" in kohya.unet_modules
    assert "text_encoder_2:encoder.layers.31.self_attn.q_proj" in kohya.text_encoder_modules
    assert inspect_lora(kohya_keys({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k":
                                 (768, 320)})).alpha == 4.0  # no alpha stored: alpha = rank (scale 1)

    metadata = {"lora_adapter_metadata": json.dumps({"unet.lora_alpha": 16, "unet.r": 8})}
    diffusers = inspect_lora(diffusers_file(SDXL_DIFFUSERS, rank=8, metadata=metadata))
    assert (diffusers.format, diffusers.rank, diffusers.alpha, diffusers.base_family_guess) == \
        ("diffusers", 8, 16.0, "sdxl")
    sd2 = {"base_model.model.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k": (1024, 640),
           "text_model.encoder.layers.0.self_attn.q_proj": (1024, 1024)}
    peft = inspect_lora(diffusers_file(sd2))
    assert (peft.format, peft.base_family_guess) == ("peft", "sd2")
    assert peft.unet_modules == ("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",)
    assert peft.text_encoder_modules == ("encoder.layers.0.self_attn.q_proj",)
    sd1 = inspect_lora(diffusers_file({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k":
                                       (768, 320)}))
    assert sd1.base_family_guess == "sd1"


# -- inspect_lora: refusals ------------------------------------------------------------------------

GOOD = kohya_keys({"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q": (64, 64)}, alpha=1)


def _with_length(length: int, rest: bytes = b"{}") -> bytes:
    return struct.pack("<Q", length) + rest


@pytest.mark.parametrize(("data", "filename", "message"), [
    (GOOD, "model.ckpt", "model.ckpt is a pickle file"),
    (GOOD, "lora.pt", "is a pickle file"),
    (GOOD, "pytorch_lora_weights.bin", "is a pickle file"),
    (b"PK\x03\x04" + b"\0" * 100, "", "is a pickle"),  # torch.save's zip
    (b"\x80\x04\x95" + b"\0" * 100, "lora.safetensors", "is a pickle"),  # a bare pickle, renamed
    (GOOD, "lora.txt", "only .safetensors"),
    (b"\x10\0\0", "", "too short"),
    (_with_length(2**40), "", "header claims"),
    (_with_length(100, b'{"a": 1}'), "", "truncated"),
    (GOOD[: len(GOOD) - 10], "", "truncated"),
    (_with_length(8, b"{not json"), "", "malformed safetensors header"),
    (_with_length(4, b"[12]"), "", "not a safetensors file"),
    (_with_length(2, b"{}"), "", "no LoRA weights"),
    (safetensors_bytes({"conv_in.weight": ([4, 4, 3, 3], "F32")}), "", "no LoRA weights"),
    (safetensors_bytes({"lora_unet_x.hada_w1_a": ([4, 4], "F32")}), "", "LyCORIS"),
    (safetensors_bytes({"lora_unet_x.lora_down.weight": ([4, 8], "F32")}), "", "has no up"),
    (safetensors_bytes({"lora_unet_x.lora_down.weight": ([4, 8], "F32"),
                        "lora_unet_x.lora_up.weight": ([8, 2], "F32")}), "", "do not multiply"),
    (safetensors_bytes({"a.lora_A.weight": ([2, 2], "F32")}, metadata={"n": 1}), "", "metadata"),
])
def test_inspect_refuses_with_a_clear_message(data, filename, message):
    with pytest.raises(LoraFileError, match=message) as refused:
        inspect_lora(data, filename=filename)
    assert isinstance(refused.value, InvalidRequest) and refused.value.field == "lora"


def test_a_pickle_is_refused_before_it_is_read(monkeypatch):
    import pickle

    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    payload = pickle.dumps({"lora_unet_x.lora_down.weight": 1}, protocol=4)
    with pytest.raises(LoraFileError, match="pickle"):
        inspect_lora(payload, filename="x.safetensors")


def test_tensor_offsets_beyond_the_file_are_refused():
    header = json.dumps({"a.lora_A.weight": {"dtype": "F32", "shape": [2, 2],
                                             "data_offsets": [0, 16]}}).encode()
    with pytest.raises(LoraFileError, match="truncated"):
        inspect_lora(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    header = json.dumps({"a.lora_A.weight": {"dtype": "F32", "shape": [2, 2],
                                             "data_offsets": [0, 8]}}).encode()
    with pytest.raises(LoraFileError, match="does not match its shape"):
        inspect_lora(struct.pack("<Q", len(header)) + header + b"\0" * 8)


# -- inspect_lora: fitting a model -----------------------------------------------------------------


def test_an_sdxl_lora_does_not_fit_the_sd_model(model_path):
    with pytest.raises(LoraFileError, match=r"does not fit the model studio-demo: 4 of its 5 modules are not "
                                            r"in the model.*1 of its 5 modules have other shapes.*"
                                            r"looks like an SDXL LoRA"):
        inspect_lora(kohya_keys(SDXL_KOHYA, alpha=4), filename="xl.safetensors", model_path=model_path)
    # diffusers names that exist in an SD UNet, with SDXL's widths
    with pytest.raises(LoraFileError, match="not in the model"):
        inspect_lora(diffusers_file(SDXL_DIFFUSERS), model_path=model_path)


def test_a_lora_of_other_widths_does_not_fit(model_path):
    sd1 = {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k": (768, 64),
           "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q": (64, 64)}
    with pytest.raises(LoraFileError, match=r"1 of its 2 modules have other shapes.*attn2.to_k: the LoRA "
                                            r"expects 768 inputs, the model has 32.*looks like an sd1 LoRA"):
        inspect_lora(diffusers_file(sd1), model_path=model_path)
    te = {"lora_te_text_model_encoder_layers_5_self_attn_q_proj": (32, 32)}  # the model has 2 layers
    with pytest.raises(LoraFileError, match="lora_te_text_model_encoder_layers_5_self_attn_q_proj"):
        inspect_lora(kohya_keys(te), model_path=model_path)


def test_peft_and_diffusers_layouts_fit_by_name(model_path):
    unet, te = peft_states(model_path, rank=2)
    from safetensors.torch import save

    peft = inspect_lora(save(unet), model_path=model_path)
    assert peft.format == "peft" and len(peft.unet_modules) == len(unet) // 2
    both = {f"unet.{k}": v for k, v in unet.items()} | {f"text_encoder.{k}": v for k, v in te.items()}
    diffusers = inspect_lora(save(both), model_path=model_path)
    assert diffusers.format == "diffusers" and len(diffusers.text_encoder_modules) == 4
