"""The shapes model's tokenizer: a real ``transformers.CLIPTokenizer`` on a small BPE built here, offline.

CLIP's BPE works on bytes mapped to printable characters (GPT-2's byte-to-unicode table) and marks the
last symbol of a word with ``</w>``.  The vocabulary built by :func:`build_vocab` holds

* the 256 byte symbols and the 256 byte symbols with ``</w>``, so *any* text tokenizes (unknown words
  fall back to pieces, down to single bytes);
* the merges of a byte-pair-encoding run (Sennrich et al. 2016, https://arxiv.org/abs/1508.07909) over
  the caption words (:data:`WORDS`), continued until every caption word is a single token ``word</w>``;
* ``<|startoftext|>`` and ``<|endoftext|>`` (also the padding token, as in Stable Diffusion).

The build is deterministic (ties between equally frequent pairs go to the lexicographically smallest).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

from .data import COLOURS, NUMBERS, RELATIONS, SHAPES, plural

__all__ = ["WORDS", "MODEL_MAX_LENGTH", "byte_symbols", "build_vocab", "build_tokenizer", "save_tokenizer_files"]

#: Every word of the caption templates.
WORDS: Tuple[str, ...] = tuple(
    sorted(
        {"a", "photo", "of", "and"}
        | set(SHAPES)
        | {plural(s) for s in SHAPES}
        | set(COLOURS)
        | set(NUMBERS.values())
        | {w for r in RELATIONS for w in r.split()}
    )
)
#: Tokens per prompt including start and end (the longest caption has 10 words).
MODEL_MAX_LENGTH = 16
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def byte_symbols() -> List[str]:
    """GPT-2/CLIP's byte → printable-character table, as a list indexed by byte value.

    Printable Latin-1 bytes (``!``…``~``, ``¡``…``¬``, ``®``…``ÿ``) stand for themselves; the other 68
    bytes map in order to the characters 256, 257, … .
    """
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), ord("ÿ") + 1))
    table, extra = [], 0
    for byte in range(256):
        if byte in keep:
            table.append(chr(byte))
        else:
            table.append(chr(256 + extra))
            extra += 1
    return table


def _symbols(word: str) -> Tuple[str, ...]:
    table = byte_symbols()
    chars = [table[b] for b in word.encode("utf-8")]
    return tuple(chars[:-1]) + (chars[-1] + "</w>",)


def build_vocab(words: Sequence[str] = WORDS) -> Tuple[Dict[str, int], List[str]]:
    """Byte symbols plus BPE merges until every word in ``words`` is one token.

    Args:
        words (`Sequence[str]`, defaults to :data:`WORDS`): lower-case words without spaces.

    Returns:
        ``(vocab, merges)``: token → id, and the merges as ``"left right"`` strings in rank order.
    """
    if not words or any((not isinstance(w, str)) or (not w) or w != w.strip().lower() or " " in w for w in words):
        raise ValueError("words must be non-empty lower-case strings without spaces")
    table = byte_symbols()
    vocab_list = table + [s + "</w>" for s in table]
    segmentations = {w: _symbols(w) for w in sorted(set(words))}
    merges: List[str] = []
    while True:
        pairs: Counter = Counter()
        for symbols in segmentations.values():
            for left, right in zip(symbols, symbols[1:]):
                pairs[(left, right)] += 1
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(f"{best[0]} {best[1]}")
        merged = best[0] + best[1]
        vocab_list.append(merged)
        for word, symbols in segmentations.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            segmentations[word] = tuple(out)
    vocab_list += [BOS, EOS]
    vocab: Dict[str, int] = {}
    for token in vocab_list:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def save_tokenizer_files(directory: Union[str, Path], words: Sequence[str] = WORDS) -> Tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` (CLIP's file formats) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words)
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_path, merges_path


def build_tokenizer(words: Sequence[str] = WORDS, *, model_max_length: int = MODEL_MAX_LENGTH):
    """A ``transformers.CLIPTokenizer`` on :func:`build_vocab`'s vocabulary, padded to ``model_max_length``.

    Args:
        words (`Sequence[str]`, defaults to :data:`WORDS`): the words that must be single tokens.
        model_max_length (`int`, defaults to 16): prompt length in tokens, start and end tokens included.
    """
    from transformers import CLIPTokenizer

    vocab, merges = build_vocab(words)
    pairs = [tuple(m.split(" ")) for m in merges]
    return CLIPTokenizer(vocab=vocab, merges=pairs, model_max_length=model_max_length)
