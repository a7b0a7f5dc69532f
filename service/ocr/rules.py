"""Rules and leaders are not text: lines that are only a dashed, dotted or solid rule, and stray
rule glyphs on Latin pages, are dropped from a page's lines.

Receipts are full of separator rules. The detector finds them (they look like a line of text) and
the recognizer, which must answer with characters, reads a dashed rule as `------`, `*********`,
or, since its alphabet is mostly Chinese, as the CJK characters that look like a stroke: `一`,
`ー`, or `*一 一米`. Such a line carries no text a user wants. The test is on what was read and
the line's shape, so that it costs nothing: a line made only of rule characters is a rule when it
is long (4 or more of them) or its box is (4 times as wide as high); on a page written in Latin
letters, the CJK look-alikes count as rule characters too, and a word made only of them is
dropped from its line. On a Chinese page `一` is a word ("one") and stays.
"""

from __future__ import annotations

import math

from .types import Line

# What a rule or leader is read as: dashes, underscores, equals, asterisks, dots, tildes, box
# drawing, and their full-width forms.
RULE = set("-_=*~.·•…‐‑‒–—―─━═┄┅┈┉╌╍－＿＝＊～・")
# CJK characters that look like a stroke or an asterisk: rule glyphs on a Latin page.
LOOKALIKE = set("一二ー丨米")
MIN_CHARS = 4
MIN_ASPECT = 4.0
# A page is Latin when its CJK characters (look-alikes aside) are at most this share of its letters.
LATIN_CJK_SHARE = 0.1


def is_cjk(ch: str) -> bool:
    code = ord(ch)
    return 0x2E80 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF or 0xFF00 <= code <= 0xFFEF or 0xAC00 <= code <= 0xD7AF


def latin_page(lines: list[Line]) -> bool:
    letters = cjk = 0
    for line in lines:
        for ch in line.text:
            if ch in LOOKALIKE or not ch.isalpha():
                continue
            letters += 1
            cjk += is_cjk(ch)
    return letters > 0 and cjk <= LATIN_CJK_SHARE * letters


def aspect(quad: list[list[float]]) -> float:
    """Length over height of the quad, whatever its tilt: its top edge over its left edge."""
    (x0, y0), (x1, y1), _, (x3, y3) = quad
    return math.hypot(x1 - x0, y1 - y0) / max(math.hypot(x3 - x0, y3 - y0), 1e-6)


def is_rule(line: Line, rule_chars: set[str]) -> bool:
    chars = [ch for ch in line.text if not ch.isspace()]
    if not chars or not all(ch in rule_chars for ch in chars):
        return False
    return len(chars) >= MIN_CHARS or aspect(line.quad) >= MIN_ASPECT or any(ch in LOOKALIKE for ch in chars)


def without_strays(line: Line) -> Line:
    """The line less its words made only of rule glyphs with a look-alike among them (a Latin page's `一`)."""
    tokens = line.text.split()
    stray = [all(ch in RULE or ch in LOOKALIKE for ch in t) and any(ch in LOOKALIKE for ch in t) for t in tokens]
    if not any(stray):
        return line
    kept = " ".join(t for t, s in zip(tokens, stray) if not s)
    # Words are the line's tokens, one for one, where the recognizer placed them all.
    words = line.words
    if [w.text for w in words] == tokens:
        words = [w for w, s in zip(words, stray) if not s]
    return Line(kept, line.confidence, line.quad, words)


def drop(lines: list[Line]) -> list[Line]:
    """The page's lines without its rules; on a Latin page, without stray rule glyphs either."""
    latin = latin_page(lines)
    rule_chars = RULE | LOOKALIKE if latin else RULE
    kept = [line for line in lines if not is_rule(line, rule_chars)]
    if latin:
        kept = [line for line in map(without_strays, kept) if line.text]
    return kept
