"""Visible stand-ins for invisible tokens, so that a newline or tab token of a source-code
model shows (and keeps its place) in the HTML and terminal pictures."""

from __future__ import annotations

__all__ = ["inline_text", "label_text"]

NEWLINE, RETURN, TAB, SPACE = "\u23ce", "\u240d", "\u21e5", "\u2423"  # ⏎ ␍ ⇥ ␣


def _glyph(ch: str) -> str:
    code = ord(ch)
    if ch == "\n":
        return NEWLINE
    if ch == "\t":
        return TAB
    if code < 0x20:
        return chr(0x2400 + code)  # Unicode "control pictures": \r -> ␍, \x00 -> ␀
    if code == 0x7F:
        return "\u2421"  # ␡
    return ch


def label_text(text: str) -> str:
    """One-line label: line breaks, tabs and controls as glyphs; an all-space token as ␣."""
    if text and not text.strip(" "):
        return SPACE * len(text)
    return "".join(_glyph(c) for c in text)


def inline_text(text: str) -> str:
    """Running text: glyphs, with the newline and tab themselves kept after their glyph so
    lines still break and indentation stays."""
    return "".join(_glyph(c) + c if c in "\n\t" else _glyph(c) for c in text)
