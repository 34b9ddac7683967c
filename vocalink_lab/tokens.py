"""Secrets: the controller token, devices' keys and join codes. Standard library only.

``VOCALINK_TOKEN`` in the environment is the controller token of every side: the server
uses it, and every client of ours (`Client`, the CLI, the agent, the benchmarks) sends it.
Without it, a server keeps a token of its own in its data dir (``token``, mode 0600),
generated on first start; a client on the same machine reads it from there.

Only digests of devices' keys are stored; every comparison takes constant time.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "JOIN_CODE_ALPHABET",
    "OPEN_ENV",
    "TOKEN_ENV",
    "TOKEN_FILE",
    "digest",
    "client_token",
    "env_token",
    "looks_like_join_code",
    "new_device_key",
    "new_join_code",
    "new_token",
    "normalize_join_code",
    "read_token",
    "same_secret",
    "server_token",
]

TOKEN_ENV = "VOCALINK_TOKEN"
OPEN_ENV = "VOCALINK_OPEN"
TOKEN_FILE = "token"
#: Crockford's base32: no I, L, O or U, so that a code read aloud or off a screen is
#: typed right (``normalize_join_code`` maps the look-alikes back).
JOIN_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_JOIN_CODE = re.compile(rf"^[{JOIN_CODE_ALPHABET}]{{4}}-?[{JOIN_CODE_ALPHABET}]{{4}}$")
_LOOK_ALIKES = str.maketrans({"I": "1", "L": "1", "O": "0", "U": "V"})


def new_token() -> str:
    """A new controller token: 256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def new_device_key() -> str:
    """A new device key: 256 random bits, URL-safe, prefixed ``dk-`` (46 characters)."""
    return "dk-" + secrets.token_urlsafe(32)


def new_join_code() -> str:
    """A new join code, ``XXXX-XXXX`` in Crockford's base32 (40 random bits).

    Short enough to type on a phone; it is only ever valid for minutes, and the server
    limits how many wrong codes an address may try.
    """
    chars = "".join(secrets.choice(JOIN_CODE_ALPHABET) for _ in range(8))
    return f"{chars[:4]}-{chars[4:]}"


def normalize_join_code(text: str) -> str:
    """A typed join code in its canonical form: upper case, look-alikes mapped, one dash."""
    code = text.strip().upper().replace(" ", "").translate(_LOOK_ALIKES).replace("-", "")
    return f"{code[:4]}-{code[4:]}" if len(code) == 8 else code


def looks_like_join_code(text: str) -> bool:
    """Whether ``text`` has the form of a join code (not whether it is the current one)."""
    return bool(_JOIN_CODE.match(normalize_join_code(text)))


def digest(secret: str) -> str:
    """The SHA-256 of a secret, in hex: what is stored of a device key."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def same_secret(given: str | None, expected: str | None) -> bool:
    """Compare two secrets in constant time; ``None`` on either side never matches."""
    if given is None or expected is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def env_token(environ: Mapping[str, str] | None = None) -> str | None:
    """``VOCALINK_TOKEN`` from the environment, or ``None`` when unset or blank."""
    value = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    return value or None


def read_token(data_dir: Path) -> str | None:
    """The token a server keeps in ``data_dir``, or ``None`` if there is none (or unreadable)."""
    try:
        value = (Path(data_dir) / TOKEN_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value or None


def server_token(data_dir: Path, explicit: str | None = None,
                 environ: Mapping[str, str] | None = None) -> str:
    """The controller token a server uses: ``explicit`` > ``VOCALINK_TOKEN`` > its file.

    The file is created (mode 0600, exclusively: two starting servers agree on one
    token) on first use when neither is given.

    Parameters
    ----------
    data_dir : Path
        The server's data dir.
    explicit : str, optional
        A token given on the command line or in settings.
    environ : mapping, optional
        Defaults to ``os.environ``.

    Returns
    -------
    str
        The token.
    """
    chosen = (explicit or "").strip() or env_token(environ)
    if chosen:
        return chosen
    data_dir = Path(data_dir)
    existing = read_token(data_dir)
    if existing:
        return existing
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / TOKEN_FILE
    token = new_token()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # created meanwhile (or empty): use it, or fill it
        existing = read_token(data_dir)
        if existing:
            return existing
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    with contextlib.closing(os.fdopen(fd, "w", encoding="utf-8")) as out:
        out.write(token + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.chmod(path, 0o600)  # an existing empty file may have had another mode
    return token


def client_token(url: str, explicit: str | None = None, *, data_dir: Path | None = None,
                 environ: Mapping[str, str] | None = None) -> str | None:
    """The token a client of ours sends to the server at ``url``.

    ``explicit`` > ``VOCALINK_TOKEN`` > the token file of a local data dir (``data_dir``,
    else ``VOCALINK_DATA_DIR``, else ``./data``), read only when ``url`` is on this
    machine (loopback): a local token is never sent to another host.

    Parameters
    ----------
    url : str
        The server's URL.
    explicit : str, optional
        A token given in code or on the command line.
    data_dir : Path, optional
        The data dir of the server, when it is known to be local.
    environ : mapping, optional
        Defaults to ``os.environ``.

    Returns
    -------
    str or None
        ``None`` when no token is known (the server may be open).
    """
    environ = os.environ if environ is None else environ
    chosen = (explicit or "").strip() or env_token(environ)
    if chosen:
        return chosen
    if data_dir is None:
        if not _is_loopback(url):
            return None
        data_dir = Path(environ.get("VOCALINK_DATA_DIR") or "data")
    return read_token(Path(data_dir))


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
