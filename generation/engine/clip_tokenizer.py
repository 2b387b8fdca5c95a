"""CLIP tokenizer files (vocab.json, merges.txt) built offline from the BPE vocabulary that ships
inside the open-clip-torch wheel, so a single-file checkpoint needs nothing from a model hub.

The vocabulary is OpenAI CLIP's (49408 tokens), shared by SD 1.x (CLIP ViT-L), SD 2.x (OpenCLIP
ViT-H) and both SDXL text encoders; only the padding token differs (see PAD_TOKENS).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from pathlib import Path

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
MERGES = VOCAB_SIZE - 256 * 2 - 2  # byte tokens, byte+</w> tokens, start/end of text
START, END = "<|startoftext|>", "<|endoftext|>"
# SD 1.x and SDXL's first encoder pad with the end token; OpenCLIP (SD 2.x, SDXL's second) with "!".
PAD_TOKENS = {"clip": END, "open_clip": "!"}


class TokenizerFilesMissing(RuntimeError):
    pass


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map of the 256 bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def find_bpe_file() -> Path:
    """The BPE file inside the installed open_clip package, found without importing it (its
    __init__ pulls in torchvision and timm), or STUDIO_CLIP_BPE if set."""
    if override := os.environ.get("STUDIO_CLIP_BPE"):
        return Path(override)
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerFilesMissing(
            f"the CLIP vocabulary ({BPE_FILE}) comes from the open-clip-torch package: "
            "pip install --no-deps open-clip-torch (or set STUDIO_CLIP_BPE to the file)")
    path = Path(next(iter(spec.submodule_search_locations))) / BPE_FILE
    if not path.is_file():
        raise TokenizerFilesMissing(f"{path} is missing from the installed open-clip-torch")
    return path


def write_tokenizer_files(bpe_path: Path, folder: Path) -> None:
    """vocab.json and merges.txt in the Hugging Face CLIPTokenizer layout, built as CLIP builds its
    encoder table: bytes, bytes + '</w>', one token per merge, then the two special tokens."""
    with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:MERGES + 1]]
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [START, END]
    if len(tokens) != VOCAB_SIZE or len(set(tokens)) != VOCAB_SIZE:
        raise TokenizerFilesMissing(f"{bpe_path} is not CLIP's BPE vocabulary ({len(set(tokens))} tokens)")
    folder.mkdir(parents=True, exist_ok=True)
    tmp_vocab, tmp_merges = folder / "vocab.json.tmp", folder / "merges.txt.tmp"
    tmp_vocab.write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), encoding="utf-8")
    tmp_merges.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    tmp_merges.replace(folder / "merges.txt")
    tmp_vocab.replace(folder / "vocab.json")  # last: its presence marks the folder complete


def default_cache_dir() -> Path:
    base = os.environ.get("STUDIO_MODEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "studio")
    return Path(base) / "clip-tokenizer"


def tokenizer_folder(cache_dir: Path | None = None) -> Path:
    """The folder holding vocab.json and merges.txt, built on first use."""
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    if not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file():
        write_tokenizer_files(find_bpe_file(), folder)
    return folder


def load_clip_tokenizer(kind: str = "clip", cache_dir: Path | None = None):
    """A CLIPTokenizer (77 tokens) for 'clip' (SD 1.x, SDXL 1st) or 'open_clip' (SD 2.x, SDXL 2nd)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(tokenizer_folder(cache_dir)), local_files_only=True,
                                         pad_token=PAD_TOKENS[kind], model_max_length=77)
