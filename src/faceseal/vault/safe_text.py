"""Text from outside (a legacy table's ids, say) made safe to print on an operator's terminal.

A ``user_id`` of ``"\\x1b]0;owned\\x07"`` would retitle the terminal, and worse sequences can move
the cursor or, on some terminals, answer back. Everything that is not printable (C0 and C1
controls, DEL, line and paragraph separators, bidi overrides) is shown as a ``\\xNN`` or
``\\uNNNN`` escape, and the text is cut to a bounded length.
"""

from __future__ import annotations

import unicodedata

#: Longest text kept (escapes included), then "..." is appended.
MAX_PRINTED = 256


def printable(text: str, limit: int = MAX_PRINTED) -> str:
    """``text`` with every non-printable character escaped, at most ``limit`` characters."""
    out: list[str] = []
    size = 0
    for char in text:
        piece = char if _shown(char) else _escape(char)
        if size + len(piece) > limit:
            out.append("...")
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def _shown(char: str) -> bool:
    if char == "\\":
        return True
    # Cc: C0/C1 controls and DEL; Cf: format characters (bidi overrides, zero-width);
    # Zl/Zp: line and paragraph separators; Cs/Co/Cn: surrogates, private, unassigned.
    return unicodedata.category(char) not in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF \
        else f"\\U{code:08x}"
