"""Pattern keys: validation of what an instance asks for, and the canonical name (no Dagster, no database).

A pattern's key is `(pattern_type, canonical_name(name))`. The rules, in order (docs/patterns.md):

1. the name is checked: no control, bidirectional override/isolate or surrogate character
   anywhere; then stripped of surrounding whitespace; then 1..200 characters;
2. Unicode NFKC (compatibility forms: `ﬁ` -> `fi`, full-width `Ｐ` -> `P`, `Ⅻ` -> `XII`);
3. full Unicode case folding (`str.casefold`: `Phoenix` -> `phoenix`, `ß` -> `ss`, `Σ`/`ς` -> `σ`),
   then NFKC again (folding can leave a non-normalised sequence);
4. every run of separators (space, `-`, `_`, `.`, `/`) becomes one `-`; leading and trailing ones go;
5. ONE trailing suffix in `SUFFIXES` is dropped when a separator precedes it and something is left
   (`phoenix-framework` -> `phoenix`; `framework` alone and `phoenixframework` stay as they are);
6. a name made only of separators (`---`) keeps its folded form, so no name maps to an empty key.

The catalogue computes keys in PostgreSQL with `hub.canonical_pattern_name(text)` (sql/010), for
ingest and for `hub_api` alike, so one function decides. That function implements the same rules
without depending on the server's locale: ASCII is lower-cased with the "C" collation, and the
non-ASCII case folding is a table generated from Python's `str.casefold` (`fold_tables()`, printed
by `python -m queue_assets.patterns.canonical`). The test suite checks both agree on a corpus that
includes Unicode.
"""

from __future__ import annotations

import re
import sys
import unicodedata

from ..contracts.base import BAD_CHARS, MAX_NAME_CHARS, PATTERN_TYPES, char_kind
from .vocabulary import STATUSES as STATUSES  # re-exported: `canonical.STATUSES`

SUFFIXES: tuple[str, ...] = ("framework", "library", "lib")
SEPARATORS = " -_./"

_SEPARATOR_RUN = re.compile(r"[ ./_-]+")
_SUFFIX = re.compile(r"(.+)-(" + "|".join(SUFFIXES) + r")", re.DOTALL)


class PatternInputError(ValueError):
    """A pattern_type or name that cannot be a pattern key; the message names the value and why."""


def _shown(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def check_pattern_type(pattern_type: object) -> str:
    if pattern_type not in PATTERN_TYPES:
        raise PatternInputError(
            f"pattern_type {_shown(str(pattern_type))} is not a pattern kind; expected one of: "
            + ", ".join(PATTERN_TYPES)
        )
    return pattern_type


def check_name(name: object) -> str:
    """The name stripped of surrounding whitespace, or PatternInputError saying what is wrong."""
    if not isinstance(name, str):
        raise PatternInputError(f"name must be a string, got {type(name).__name__}")
    bad = BAD_CHARS.search(name)
    if bad is not None:
        raise PatternInputError(
            f"name {_shown(name)} contains U+{ord(bad.group()):04X} ({char_kind(bad.group())}) at "
            f"position {bad.start()}; control and bidirectional override/isolate characters are not allowed"
        )
    stripped = name.strip()
    if not stripped:
        raise PatternInputError("name is empty (after stripping whitespace); give the pattern's name")
    if len(stripped) > MAX_NAME_CHARS:
        raise PatternInputError(
            f"name {_shown(stripped)} is {len(stripped)} characters long; at most {MAX_NAME_CHARS} are allowed"
        )
    return stripped


def fold(text: str) -> str:
    """Steps 2-3: NFKC, full case folding, NFKC."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def canonical_name(name: str) -> str:
    """The canonical name of an already checked name (see the module docstring for the rules)."""
    folded = fold(name)
    key = _SEPARATOR_RUN.sub("-", folded).strip("-")
    match = _SUFFIX.fullmatch(key)
    if match:
        key = match.group(1)
    return key or folded.strip(" ")


def pattern_key(pattern_type: object, name: object) -> tuple[str, str]:
    """Check both parts and return the key `(pattern_type, canonical name)`."""
    return check_pattern_type(pattern_type), canonical_name(check_name(name))


def fold_tables() -> tuple[str, str, list[str], list[str]]:
    """The non-ASCII case folding as SQL can apply it: (from, to) for `translate` (one character to
    one) and the sources and targets of the folds to several characters (`replace`)."""
    src, dst, multi_src, multi_dst = [], [], [], []
    for code in range(0x80, sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        folded = char.casefold()
        if folded == char:
            continue
        if len(folded) == 1:
            src.append(char)
            dst.append(folded)
        else:
            multi_src.append(char)
            multi_dst.append(folded)
    # translate() runs first: none of its outputs may be a source of the multi-character folds.
    assert not set(dst) & set(multi_src)
    return "".join(src), "".join(dst), multi_src, multi_dst


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def fold_function_sql() -> str:
    """`hub.pattern_casefold(text)` with the tables of `fold_tables()` (pasted into sql/010)."""
    src, dst, msrc, mdst = fold_tables()
    arr = lambda items: "ARRAY[" + ", ".join(_sql_literal(s) for s in items) + "]::text[]"  # noqa: E731
    return (
        "CREATE OR REPLACE FUNCTION hub.pattern_casefold(s text) RETURNS text\n"
        "LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fold$\n"
        "DECLARE\n"
        f"    multi_src CONSTANT text[] := {arr(msrc)};\n"
        f"    multi_dst CONSTANT text[] := {arr(mdst)};\n"
        "BEGIN\n"
        '    s := translate(lower(s COLLATE "C"),\n'
        f"        {_sql_literal(src)},\n"
        f"        {_sql_literal(dst)});\n"
        "    FOR i IN 1 .. array_length(multi_src, 1) LOOP\n"
        "        IF strpos(s, multi_src[i]) > 0 THEN\n"
        "            s := replace(s, multi_src[i], multi_dst[i]);\n"
        "        END IF;\n"
        "    END LOOP;\n"
        "    RETURN s;\n"
        "END\n"
        "$fold$;\n"
    )


if __name__ == "__main__":
    print(
        f"-- generated by `python -m queue_assets.patterns.canonical` (Python {sys.version.split()[0]}, "
        f"Unicode {unicodedata.unidata_version})"
    )
    print(fold_function_sql())
