"""The one redaction every text goes through before a person can see it.

Plain Python, imports nothing of the project (every other module may import it). `redact(text)`
masks, with `***`:

- the password in a URL's user-info, whatever the scheme: `postgresql://hub:pw@h` becomes
  `postgresql://hub:***@h`, `https://x-access-token:tok@github.com` keeps the user name too;
  a bare user-info in an http(s) URL (`https://TOKEN@github.com`, how some hosts take a token)
  is masked whole;
- `password=...` / `password: ...` in libpq keyword/value strings, URL query parameters, JSON and
  log lines (`PGPASSWORD=...` included);
- every known secret, as is and URL-quoted: the ones passed in, and the ones registered for the
  whole process with `register_secret` (the settings register the database passwords when they
  are read, `db.connect` those of every URL it is given). A known secret is masked even where no
  pattern gives it away, e.g. libpq's `invalid percent-encoded token: "pw%zz"`.

`secrets_in(url)` returns the passwords a URL or conninfo string holds, in every form they can
be echoed in.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

MASK = "***"
# Shorter secrets are not masked in free text: masking "pg" would garble every "pgmq" and hide
# nothing worth hiding.
MIN_SECRET_LEN = 4

# scheme://[user[:password]]@ ; the user-info runs to the LAST '@' before the host, as in urlsplit
# and libpq (an unquoted '@' in a password must not leave its tail showing).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/?#\s'\"<>@:]*)(?::([^/?#\s'\"<>]*))?@")
_KEYVALUE = re.compile(r"""(?i)(password["']?\s*[=:]\s*)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S+)""")

_known: set[str] = set()
_lock = threading.Lock()


def _userinfo(match: re.Match) -> str:
    scheme, user, password = match.group(1), match.group(2), match.group(3)
    if password is not None:
        return f"{scheme}{user}:{MASK}@"
    if scheme.lower() in ("http://", "https://") and user:
        return f"{scheme}{MASK}@"  # a bare token as the user name
    return match.group(0)  # ssh://git@host, postgresql://hub@host: an account name, not a secret


def _forms(secret: str) -> set[str]:
    return {f for f in (secret, quote(secret, safe=""), unquote(secret)) if len(f) >= MIN_SECRET_LEN}


def register_secret(*secrets: str | None) -> None:
    """Mask these in every text `redact` sees from now on, in this process."""
    forms = set().union(*(_forms(s) for s in secrets if s))
    if forms:
        with _lock:
            _known.update(forms)


def secrets_in(url: str | None) -> tuple[str, ...]:
    """The passwords (and bare http(s) tokens) held by a URL or a libpq keyword/value string."""
    if not url:
        return ()
    found: set[str] = set()
    for m in _USERINFO.finditer(url):
        if m.group(3):
            found.add(m.group(3))
        elif m.group(1).lower() in ("http://", "https://") and m.group(2):
            found.add(m.group(2))
    for m in _KEYVALUE.finditer(url):
        value = m.group(2)
        found.add(value)
        if value[:1] in ("'", '"'):
            found.add(re.sub(r"\\(.)", r"\1", value[1:-1]))
    if "://" in url:
        try:
            query = urlsplit(url).query
        except ValueError:
            query = ""
        found.update(v for k, _, v in (p.partition("=") for p in query.split("&")) if k.lower() == "password")
    return tuple(sorted(set().union(*(_forms(s) for s in found)), key=len, reverse=True))


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with URL passwords, `password=` values and every known secret replaced by `***`."""
    text = _USERINFO.sub(_userinfo, str(text))
    text = _KEYVALUE.sub(lambda m: m.group(1) + MASK, text)
    with _lock:
        known = set(_known)
    for secret in sorted(known.union(*(_forms(s) for s in secrets if s)), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
