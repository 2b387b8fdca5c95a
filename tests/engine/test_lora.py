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
                                            r"in the model.*1 of its 5 modules has other shapes.*"
                                            r"looks like an SDXL LoRA"):
        inspect_lora(kohya_keys(SDXL_KOHYA, alpha=4), filename="xl.safetensors", model_path=model_path)
    # diffusers names that exist in an SD UNet, with SDXL's widths
    with pytest.raises(LoraFileError, match="not in the model"):
        inspect_lora(diffusers_file(SDXL_DIFFUSERS), model_path=model_path)


def test_a_lora_of_other_widths_does_not_fit(model_path):
    sd1 = {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k": (768, 64),
           "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q": (64, 64)}
    with pytest.raises(LoraFileError, match=r"1 of its 2 modules has other shapes.*attn2.to_k: the LoRA "
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


def test_linear_and_convolution_loras_fit_as_a1111_applies_them(model_path):
    conv = {  # a linear LoRA on a 1x1 convolution, a 3x3 LoRA on a 3x3 convolution (LoCon)
        "lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight": ([4, 64], "F32"),
        "lora_unet_down_blocks_1_attentions_0_proj_in.lora_up.weight": ([64, 4], "F32"),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": ([4, 32, 3, 3], "F32"),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": ([32, 4, 1, 1], "F32"),
    }
    summary = inspect_lora(safetensors_bytes(conv), model_path=model_path)
    assert set(summary.unet_modules) == {"down_blocks.1.attentions.0.proj_in",
                                        "down_blocks.0.resnets.0.conv1"}
    wrong = {"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight":
             ([4, 64, 3, 3], "F32"),
             "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight":
             ([64, 4, 1, 1], "F32")}
    with pytest.raises(LoraFileError, match="a convolution LoRA on the model's linear layer"):
        inspect_lora(safetensors_bytes(wrong), model_path=model_path)


# -- LoRAs in the engine ---------------------------------------------------------------------------

ALPHA, RANK = 2.0, 4


@pytest.fixture(scope="module")
def lora_refs(model_path, tmp_path_factory):
    """LoraRefs of files on disk: A (kohya, UNet + text encoder), A again in diffusers' layout,
    B (kohya, another LoRA), TE (text encoder only), XL (an SDXL LoRA: does not fit)."""
    from safetensors.torch import save

    from generation.engine.contracts import LoraRef

    folder = tmp_path_factory.mktemp("loras")
    unet_a, te_a = peft_states(model_path, rank=RANK, seed=1)
    unet_b, te_b = peft_states(model_path, rank=RANK, seed=2)
    _, te_only = peft_states(model_path, rank=RANK, seed=3, scale=0.6)
    adapter = {"unet.lora_alpha": ALPHA, "unet.r": RANK, "text_encoder.lora_alpha": ALPHA,
               "text_encoder.r": RANK}
    files = {
        "A": kohya_from_peft(unet_a, te_a, alpha=ALPHA),
        "A-diffusers": save({f"unet.{k}": v for k, v in unet_a.items()}
                            | {f"text_encoder.{k}": v for k, v in te_a.items()},
                            metadata={"lora_adapter_metadata": json.dumps(adapter)}),
        "B": kohya_from_peft(unet_b, te_b, alpha=ALPHA),
        "TE": kohya_from_peft({}, te_only, alpha=ALPHA),
        "XL": kohya_keys(SDXL_KOHYA, alpha=4),
    }
    refs = {}
    for name, data in files.items():
        path = folder / f"{name}.safetensors"
        path.write_bytes(data)
        refs[name] = LoraRef(name=name, sha256=hashlib.sha256(data).hexdigest(), path=str(path))
    refs["peft"] = (unet_a, te_a)
    return refs


@pytest.fixture(scope="module")
def lora_engine(model_path, engine_device):
    from generation.engine import Engine

    return Engine(model_path, device=engine_device)


def run(engine, *loras, prompt="a photo of a cat", **fields):
    """The first image of a small request with these LoRAs (a LoraRef, or (LoraRef, weight))."""
    from dataclasses import replace

    from generation.engine import GenerationRequest

    refs = tuple(replace(ref[0], weight=ref[1]) if isinstance(ref, tuple) else ref for ref in loras)
    request = GenerationRequest(prompt=prompt, width=64, height=64, steps=3, seed=7, sampler="euler",
                                guidance_scale=2.0, loras=refs, **fields)
    result = engine.generate(request, previews=False)
    return result.images[0]


def pixels(image) -> bytes:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(image.png)).convert("RGB").tobytes()


def test_switching_loras_between_jobs_never_leaks(lora_engine, lora_refs, model_path, engine_device):
    from generation.engine import Engine

    a, b = lora_refs["A"], lora_refs["B"]
    fresh = pixels(run(Engine(model_path, device=engine_device)))  # an engine that never saw a LoRA
    with_a = pixels(run(lora_engine, a))
    with_b = pixels(run(lora_engine, b))
    after = pixels(run(lora_engine))
    again_a = pixels(run(lora_engine, a))
    assert len({fresh, with_a, with_b}) == 3  # each LoRA changes the picture
    assert after == fresh  # none after B: the base model, bit for bit
    assert again_a == with_a  # A after B: A alone
    loads = lora_engine.loras.loads
    run(lora_engine, b)
    assert lora_engine.loras.loads == loads  # B came from the cache, no file read
    run(lora_engine)
    assert unet_layer_is_pristine(lora_engine)


MID_Q = "mid_block.attentions.0.transformer_blocks.0.attn1.to_q"


def unet_layer_is_pristine(engine, module=MID_Q) -> bool:
    from safetensors import safe_open

    with safe_open(str(Path(engine.info.path) / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        return engine.pipe.unet.get_submodule(module).weight.equal(f.get_tensor(f"{module}.weight"))


def test_weights_several_loras_and_weight_zero(lora_engine, lora_refs):
    a, b = lora_refs["A"], lora_refs["B"]
    base = pixels(run(lora_engine))
    assert pixels(run(lora_engine, (a, 0.0))) == base  # weight 0 == no LoRA
    alone = pixels(run(lora_engine, a))
    assert pixels(run(lora_engine, a, (b, 0.0))) == alone
    half = pixels(run(lora_engine, (a, 0.5)))
    both = pixels(run(lora_engine, a, (b, -0.7)))
    assert len({base, alone, half, both}) == 4
    assert pixels(run(lora_engine, (b, -0.7), a)) == both  # the order does not matter


def test_kohya_and_diffusers_layouts_of_one_lora_give_the_same_deltas_and_pixels(lora_engine, lora_refs):
    from generation.engine.lora import parse_lora

    unet, te = lora_refs["peft"]
    for ref in (lora_refs["A"], lora_refs["A-diffusers"]):
        loaded = parse_lora(Path(ref.path).read_bytes(), model_path=lora_engine.info.path, device="cpu")
        assert len(loaded.modules) == (len(unet) + len(te)) // 2
        for m in loaded.modules:
            state = unet if m.component == "unet" else te
            down, up = state[f"{m.module}.lora_A.weight"], state[f"{m.module}.lora_B.weight"]
            expected = (up.flatten(1) @ down.flatten(1)) * (ALPHA / RANK)
            assert m.scale == ALPHA / RANK and bool(((m.up @ m.down) * m.scale == expected).all()), m.module
    assert pixels(run(lora_engine, lora_refs["A"])) == pixels(run(lora_engine, lora_refs["A-diffusers"]))


def test_text_encoder_keys_change_the_text_encoder(lora_engine, lora_refs):
    te = lora_refs["TE"]
    base = pixels(run(lora_engine))
    layer = lora_engine.pipe.text_encoder.get_submodule("encoder.layers.0.self_attn.q_proj").weight
    before = layer.detach().clone()
    assert pixels(run(lora_engine, te)) != base
    assert not layer.equal(before) and unet_layer_is_pristine(lora_engine)  # the text encoder alone
    run(lora_engine)
    assert layer.equal(before)


def test_a_lora_that_cannot_be_used_is_refused_before_any_step(lora_engine, lora_refs, tmp_path):
    from dataclasses import replace

    from generation.engine import GenerationRequest

    base = pixels(run(lora_engine))
    run(lora_engine, lora_refs["A"])  # something applied: a refusal must not leave it half changed
    bad = [
        (lora_refs["XL"], "XL: this LoRA does not fit the model studio-demo"),
        (replace(lora_refs["A"], path=str(tmp_path / "gone.safetensors"), sha256="0" * 64), "missing"),
        (replace(lora_refs["TE"], sha256="1" * 64), "TE's file does not match its sha256"),
    ]
    for ref, message in bad:
        steps = []
        request = GenerationRequest(prompt="a cat", width=64, height=64, steps=3,
                                    loras=(lora_refs["B"], ref))
        with pytest.raises(InvalidRequest, match=message) as refused:
            lora_engine.generate(request, on_step=steps.append)
        assert refused.value.field == "lora" and steps == []
    assert pixels(run(lora_engine)) == base


def test_prompt_tags_are_not_encoded_and_the_infotext_names_the_loras(lora_engine, lora_refs):
    from dataclasses import replace

    from generation.engine import parse_infotext, request_fields_from_infotext

    a, b = lora_refs["A"], replace(lora_refs["B"], name="zwx-dog")
    tagged = run(lora_engine, a, (b, 0.5), prompt="a photo of a cat <lora:A:1> <lora:zwx-dog:0.5>")
    plain = run(lora_engine, a, (b, 0.5), prompt="a photo of a cat")
    assert pixels(tagged) == pixels(plain)
    expected = f'Lora hashes: "A: {a.sha256[:12]}, zwx-dog: {b.sha256[:12]}"'
    assert expected in tagged.infotext and "Lora hashes" not in run(lora_engine).infotext
    parsed = parse_infotext(tagged.infotext)
    assert parsed["Prompt"] == "a photo of a cat <lora:A:1> <lora:zwx-dog:0.5>"
    fields = request_fields_from_infotext(tagged.infotext)
    assert fields["prompt"] == parsed["Prompt"]
    assert fields["lora_hashes"] == {"A": a.sha256[:12], "zwx-dog": b.sha256[:12]}


def test_image_to_image_applies_loras_and_strips_tags(lora_engine, lora_refs):
    source = run(lora_engine).png
    base = pixels(run(lora_engine, mode="img2img", init_image=source, strength=0.6))
    with_a = run(lora_engine, lora_refs["A"], prompt="a photo of a cat <lora:A>", mode="img2img",
                 init_image=source, strength=0.6)
    assert pixels(with_a) != base
    assert pixels(with_a) == pixels(run(lora_engine, lora_refs["A"], mode="img2img", init_image=source,
                                        strength=0.6))
    assert pixels(run(lora_engine, mode="img2img", init_image=source, strength=0.6)) == base
