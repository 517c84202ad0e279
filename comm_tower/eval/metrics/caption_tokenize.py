"""A pure-Python stand-in for coco-caption's PTB tokenisation (which needs Java), used before CIDEr-D.

coco-caption runs Stanford's PTBTokenizer with lower-casing and then drops punctuation tokens. This
follows the same steps for the captions such benchmarks contain: lower-case; split clitics as PTB
does ("don't" -> "do n't", "dog's" -> "dog 's"); keep hyphenated words and decimal numbers whole;
drop punctuation tokens. Rare constructions (URLs, emoticons, abbreviations with periods) may
tokenise differently from the Java tool.
"""

from __future__ import annotations

import re

_CLITIC_NT = re.compile(r"(\w)n't\b")
_CLITIC = re.compile(r"(\w)('s|'re|'ve|'ll|'m|'d)\b")
_TOKEN = re.compile(r"\d+(?:[.,:]\d+)*|n't|'[a-z]+|[a-z0-9]+(?:[-'][a-z0-9]+)*|[^\sa-z0-9]+")
_DROP = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_PUNCT_ONLY = re.compile(r"^[^\w]+$")


def tokenize_caption(text: str) -> str:
    """Lower-cased, space-separated tokens with punctuation removed."""
    text = text.lower().replace("\n", " ").replace("\t", " ")
    text = _CLITIC_NT.sub(r"\1 n't", text)
    text = _CLITIC.sub(r"\1 \2", text)
    tokens = []
    for tok in _TOKEN.findall(text):
        if tok in _DROP or _PUNCT_ONLY.match(tok):
            continue
        tokens.append(tok)
    return " ".join(tokens)
