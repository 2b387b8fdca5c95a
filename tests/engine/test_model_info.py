"""read_model_info, model hashes and the demo model build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from generation.engine import ModelError, read_model_info
from generation.engine.model_info import HASH_CACHE_FILE, SD1_FACTORS, STUDIO_MODEL_FILE

REPO = Path(__file__).resolve().parents[2]


def test_demo_model_info(demo_model_path):
    info = read_model_info(demo_model_path)
    assert info.name == "studio-demo"
    assert info.family == "studio-demo"
    assert (info.native_width, info.native_height) == (512, 512)
    assert (info.max_width, info.max_height) == (1024, 1024)
    assert info.vae_scale_factor == 8
    assert len(info.hash) == 10 and int(info.hash, 16) >= 0
    assert len(info.latent_rgb_factors) == 4 and all(len(r) == 3 for r in info.latent_rgb_factors)
    assert len(info.latent_rgb_bias) == 3
    assert (demo_model_path / HASH_CACHE_FILE).exists()


def test_folder_layout(demo_model_path):
    for rel in ("model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt",
                STUDIO_MODEL_FILE):
        assert (demo_model_path / rel).is_file(), rel
    studio = json.loads((demo_model_path / STUDIO_MODEL_FILE).read_text())
    assert studio["latent_rgb_fit"]["correlation"] > 0.6


def test_read_model_info_does_not_import_torch(demo_model_path):
    code = f"""
import sys
from generation.engine import GenerationRequest, read_model_info, validate_request, parse_infotext
info = read_model_info({str(demo_model_path)!r})
validate_request(GenerationRequest(prompt="a cat"), info)
heavy = sorted(m for m in ("torch", "diffusers", "transformers", "numpy", "safetensors") if m in sys.modules)
assert not heavy, heavy
print(info.hash)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == read_model_info(demo_model_path).hash


def test_build_is_deterministic_and_idempotent(demo_model_path, tmp_path):
    from generation.engine.demo_model import build

    again = build(tmp_path / "again", seed=0, fit_samples=2)
    assert read_model_info(again).hash == read_model_info(demo_model_path).hash
    stamp = (again / STUDIO_MODEL_FILE).stat().st_mtime_ns
    assert build(again, seed=0) == again  # already built: skipped
    assert (again / STUDIO_MODEL_FILE).stat().st_mtime_ns == stamp
    other = build(again, seed=1, fit_samples=2)  # another seed rebuilds in place
    assert read_model_info(other).hash != read_model_info(demo_model_path).hash
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_hash_cache_follows_the_weights(demo_model_path, tmp_path):
    copy = shutil.copytree(demo_model_path, tmp_path / "copy")
    (copy / HASH_CACHE_FILE).unlink()
    assert read_model_info(copy, compute_hash=False).hash == ""
    assert read_model_info(copy).hash == read_model_info(demo_model_path).hash
    weights = copy / "vae" / "diffusion_pytorch_model.safetensors"
    with open(weights, "ab") as f:
        f.write(b"\0")
    assert read_model_info(copy).hash != read_model_info(demo_model_path).hash


def test_defaults_without_studio_model_json(demo_model_path, tmp_path):
    copy = shutil.copytree(demo_model_path, tmp_path / "plain-model")
    (copy / STUDIO_MODEL_FILE).unlink()
    info = read_model_info(copy)
    assert info.name == "plain-model"
    assert info.family == "custom"  # cross_attention_dim 32 is neither SD 1.x (768) nor 2.x (1024)
    assert (info.native_width, info.max_width) == (512, 1024)  # unet sample_size x vae scale, 2x
    assert info.latent_rgb_factors == SD1_FACTORS


def test_sd_family_inference(demo_model_path, tmp_path):
    copy = shutil.copytree(demo_model_path, tmp_path / "sd2ish")
    (copy / STUDIO_MODEL_FILE).unlink()
    cfg = json.loads((copy / "unet" / "config.json").read_text())
    cfg.update(cross_attention_dim=1024, sample_size=96)
    (copy / "unet" / "config.json").write_text(json.dumps(cfg))
    info = read_model_info(copy)
    assert info.family == "sd2" and info.native_width == 768 and info.max_width == 1536


def test_bad_studio_json_is_a_model_error(demo_model_path, tmp_path):
    copy = shutil.copytree(demo_model_path, tmp_path / "bad")
    studio = json.loads((copy / STUDIO_MODEL_FILE).read_text())
    studio["latent_rgb_factors"] = [[1, 2, 3]]
    (copy / STUDIO_MODEL_FILE).write_text(json.dumps(studio))
    with pytest.raises(ModelError, match="latent_rgb_factors"):
        read_model_info(copy)


def test_form_defaults_come_from_studio_json(demo_model_path, tmp_path):
    copy = shutil.copytree(demo_model_path, tmp_path / "tuned")
    assert read_model_info(copy).default_guidance_scale == 7.0  # none given: SD's usual 7
    studio = json.loads((copy / STUDIO_MODEL_FILE).read_text())
    studio.update(default_steps=30, default_guidance_scale=3, default_sampler="dpmpp_2m")
    (copy / STUDIO_MODEL_FILE).write_text(json.dumps(studio))
    info = read_model_info(copy)
    assert (info.default_steps, info.default_guidance_scale, info.default_sampler) == (30, 3.0, "dpmpp_2m")


@pytest.mark.parametrize("key,value", [("default_steps", 0), ("default_steps", 2.5),
                                       ("default_guidance_scale", "high"), ("default_guidance_scale", 31),
                                       ("default_sampler", "plms")])
def test_bad_form_defaults_are_a_model_error(demo_model_path, tmp_path, key, value):
    copy = shutil.copytree(demo_model_path, tmp_path / "bad-defaults")
    studio = json.loads((copy / STUDIO_MODEL_FILE).read_text())
    studio[key] = value
    (copy / STUDIO_MODEL_FILE).write_text(json.dumps(studio))
    with pytest.raises(ModelError, match=key):
        read_model_info(copy)


def test_missing_or_single_file_models(tmp_path):
    with pytest.raises(ModelError):
        read_model_info(tmp_path / "nope")
    with pytest.raises(ModelError, match="model_index.json"):
        read_model_info(tmp_path)
    single = tmp_path / "model.safetensors"
    single.write_bytes(b"x")  # single files load (tests/engine/test_single_file.py); not this one
    with pytest.raises(ModelError, match="not a safetensors file"):
        read_model_info(single)


def test_demo_cli_build(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "generation.engine.demo_model", "build", str(tmp_path / "cli")]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("built:")
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert second.stdout.startswith("already built:")


def test_demo_tokenizer_knows_prompt_words(engine):
    tokenizer = engine.pipe.tokenizer
    ids = tokenizer("a photo of a cat, highly detailed").input_ids
    assert len(ids) == 2 + 8  # BOS, 7 words and a comma, EOS
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a photo of a cat , highly detailed"


def test_a_preview_decoder_is_named_in_studio_json_and_leaves_the_hash_alone(demo_model_path, tmp_path):
    from generation.engine.previews import PreviewDecoder

    copy = shutil.copytree(demo_model_path, tmp_path / "with-decoder")
    (copy / HASH_CACHE_FILE).unlink()
    before = read_model_info(copy)
    assert before.preview_decoder == ""
    PreviewDecoder().save(copy / "preview_decoder.safetensors")
    studio = json.loads((copy / STUDIO_MODEL_FILE).read_text())
    studio["preview_decoder"] = "preview_decoder.safetensors"
    (copy / STUDIO_MODEL_FILE).write_text(json.dumps(studio))
    (copy / HASH_CACHE_FILE).unlink()
    info = read_model_info(copy)
    assert info.preview_decoder == str((copy / "preview_decoder.safetensors").resolve())
    assert info.hash == before.hash  # it changes no image


@pytest.mark.parametrize("name", ["missing.safetensors", "../outside.safetensors", 7])
def test_a_bad_preview_decoder_is_a_model_error(demo_model_path, tmp_path, name):
    copy = shutil.copytree(demo_model_path, tmp_path / "bad-decoder")
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    studio = json.loads((copy / STUDIO_MODEL_FILE).read_text())
    (copy / STUDIO_MODEL_FILE).write_text(json.dumps({**studio, "preview_decoder": name}))
    with pytest.raises(ModelError, match="preview_decoder"):
        read_model_info(copy)
