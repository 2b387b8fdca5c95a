"""Build a CLIPTokenizer (vocab.json + merges.txt) for the demo model's words.

CLIP's BPE splits a word into characters (the last one carrying ``</w>``) and
then applies merges in rank order, so an empty merges list would leave every
word as single characters. Instead we learn a BPE on our own caption words,
merging until every word is a single token: applying the merges in learned
order reproduces that segmentation, so every known word is exactly one token.
Unknown words still work: they fall back to character tokens (lowercase ASCII
letters and digits are all in the vocabulary) and anything else maps to
``<|endoftext|>``, which is also the unk and pad token, as in CLIP.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 32  # tokens, BOS and EOS included; captions are at most ~24


def learn_bpe(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    alphabet = list(string.ascii_lowercase + string.digits + ",.'-!?")
    symbols: list[str] = []
    for ch in alphabet:
        symbols += [ch, ch + "</w>"]
    seqs = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in sorted(set(words))}
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter = Counter()
        for seq in seqs.values():
            for a, b in zip(seq, seq[1:]):
                pairs[(a, b)] += 1
        if not pairs:
            break
        # Most frequent pair; ties broken by the pair's text, so the result is fixed.
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        if joined not in symbols:
            symbols.append(joined)
        for w, seq in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i < len(seq) - 1 and (seq[i], seq[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[w] = tuple(out)
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, merges


def write_tokenizer(out_dir: str | Path, words: list[str]) -> int:
    """Write vocab.json, merges.txt and the configs; return the vocabulary size."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = learn_bpe(words)
    (out / "vocab.json").write_text(json.dumps(vocab, indent=1) + "\n")
    (out / "merges.txt").write_text(
        "#version: 0.2 (studio-tiny word merges)\n" + "".join(f"{a} {b}\n" for a, b in merges)
    )
    (out / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}, indent=1) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
    }, indent=1) + "\n")
    return len(vocab)
