"""Answer normalisation of the official VQA evaluation (punctuation, number words, articles, contractions).

Re-implemented from the published definition (GT-Vision-Lab/VQA `vqaEval.py`):
1. punctuation: each of ; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? ! is deleted when it touches a space or the
   text has a digit,digit group, otherwise replaced by a space; then a '.' not followed by a digit is deleted.
2. digits and articles: lower-case, split on whitespace, number words zero..ten (and "none") become digits,
   the articles a / an / the are dropped, apostrophe-less contractions get their apostrophe back.
Deliberate differences, all in rare corners: the official period regex stops after 32 replacements (a
`re.UNICODE` passed as `count`); we replace all. Its contraction table also lists forms with a capital "I"
that can never match after lower-casing; we leave those out, which gives the same result.
"""

from __future__ import annotations

import itertools
import re

_PUNCT = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_PERIOD_NOT_DECIMAL = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}

# Contractions with their apostrophes; every spelling that drops some apostrophes maps back to the full form.
_CONTRACTIONS = [
    "ain't",
    "aren't",
    "can't",
    "could've",
    "couldn't",
    "couldn't've",
    "didn't",
    "doesn't",
    "don't",
    "hadn't",
    "hadn't've",
    "hasn't",
    "haven't",
    "he'd",
    "he'd've",
    "he's",
    "how'd",
    "how'll",
    "how's",
    "isn't",
    "it'd",
    "it'd've",
    "it'll",
    "let's",
    "ma'am",
    "mightn't",
    "mightn't've",
    "might've",
    "mustn't",
    "must've",
    "needn't",
    "not've",
    "o'clock",
    "oughtn't",
    "'ow's'at",
    "shan't",
    "she'd've",
    "she'll",
    "she's",
    "should've",
    "shouldn't",
    "shouldn't've",
    "somebody'd",
    "somebody'd've",
    "somebody'll",
    "somebody's",
    "someone'd",
    "someone'd've",
    "someone'll",
    "someone's",
    "something'd",
    "something'd've",
    "something'll",
    "that's",
    "there'd",
    "there'd've",
    "there're",
    "there's",
    "they'd",
    "they'd've",
    "they'll",
    "they're",
    "they've",
    "'twas",
    "wasn't",
    "we'd've",
    "we've",
    "weren't",
    "what'll",
    "what're",
    "what's",
    "what've",
    "when's",
    "where'd",
    "where's",
    "where've",
    "who'd",
    "who'd've",
    "who'll",
    "who's",
    "who've",
    "why'll",
    "why're",
    "why's",
    "won't",
    "would've",
    "wouldn't",
    "wouldn't've",
    "y'all",
    "y'all'll",
    "y'all'd've",
    "you'd",
    "you'd've",
    "you'll",
    "you're",
    "you've",
]
# Dropping every apostrophe of these gives an ordinary English word, which must stay as it is.
_REAL_WORDS = {"shell", "hell", "well", "were", "wed", "shed", "its", "id", "ill"}


def _contraction_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for full in _CONTRACTIONS:
        marks = [i for i, c in enumerate(full) if c == "'"]
        for keep in itertools.product((True, False), repeat=len(marks)):
            if all(keep):
                continue
            drop = {m for m, k in zip(marks, keep) if not k}
            variant = "".join(c for i, c in enumerate(full) if i not in drop)
            if variant not in _REAL_WORDS:
                table[variant] = full
    return table


_CONTRACTION_TABLE = _contraction_table()


def process_punctuation(text: str) -> str:
    """Step 1 of the official normalisation."""
    out = text
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _PUNCT:
        touches_space = p + " " in text or " " + p in text
        out = out.replace(p, "" if touches_space or has_digit_comma else " ")
    return _PERIOD_NOT_DECIMAL.sub("", out)


def process_digit_article(text: str) -> str:
    """Step 2 of the official normalisation."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [_CONTRACTION_TABLE.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words)


def normalize_vqa_answer(text: str) -> str:
    """Full normalisation: whitespace, punctuation, then number words, articles and contractions."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))
