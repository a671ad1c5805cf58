"""Secrets from files (`*_FILE` variables: Kubernetes Secrets mounted read-only, as the kit's pods do).

`read_secret` reads the file a variable names; `PasswordFile` puts its password, percent-encoded, into
the URLs of one server; `mask` hides the passwords of URLs an error message echoes. Problems are
appended to the caller's list as `NAME: got 'value', allowed: ...` lines and never hold a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

MASK = "***"
MAX_BYTES = 65536
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_QUERY_PASSWORD = re.compile(r"[?&]password=([^&#]*)", re.IGNORECASE)


def read_secret(env: Mapping[str, str], variable: str, holding: str, problems: list[str]) -> str | None:
    """The text of the file `env[variable]` names, with one trailing "\\n" or "\\r\\n" removed.

    None when the variable is unset or empty, and when the file is unreadable, not UTF-8, too large
    or empty: then a problem naming the variable, the path and the reason is appended.
    """
    path = env.get(variable, "")
    if not path:
        return None
    text, reason = _file_text(path)
    if text is None:
        problems.append(f"{variable}: got {path!r}, allowed: a readable file holding {holding} ({reason})")
    return text


def _file_text(path: str) -> tuple[str | None, str]:
    """(the file's text less one trailing newline, "") or (None, why it cannot be used)."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as exc:
        return None, exc.strerror or type(exc).__name__
    if len(data) > MAX_BYTES:
        return None, f"larger than {MAX_BYTES} bytes"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    text = text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")
    return (text, "") if text else (None, "the file is empty")


def secret_value(env: Mapping[str, str], variable: str, holding: str, problems: list[str]) -> str:
    """`env[variable]`, or the content of the file `<variable>_FILE` names; setting both is a problem."""
    file_variable = f"{variable}_FILE"
    if env.get(variable) and env.get(file_variable):
        problems.append(f"{variable}: got {MASK!r}, allowed: unset while {file_variable} is set (one or the other)")
    from_file = read_secret(env, file_variable, holding, problems)
    return from_file if from_file is not None else env.get(variable, "")


class PasswordFile:
    """The password the file of `variable` (e.g. DATABASE_PASSWORD_FILE) holds, for the URLs of one server."""

    def __init__(self, env: Mapping[str, str], variable: str, problems: list[str]) -> None:
        self.variable = variable
        self.path = env.get(variable, "")
        self.password = read_secret(env, variable, "the password", problems)

    def insert(self, name: str, url: str, problems: list[str]) -> str:
        """`url`, the value of variable `name`, with the password in it; unchanged when the file is not set
        (or unreadable) or `url` is empty. A URL that has a password itself is a problem naming both."""
        if not self.path or not url:
            return url
        if has_password(url):
            problems.append(
                f"{name}: got {mask(url)!r}, allowed: a URL without a password while {self.variable} is set"
                " (one or the other)"
            )
            return url
        return url if self.password is None else with_password(url, self.password)


def has_password(url: str) -> bool:
    """Whether `url` carries a password, as its clients read it: in the user info or as a `password=` parameter."""
    rest = url.partition("://")[2]
    userinfo = _authority(rest)[0].rpartition("@")[0]
    return ":" in userinfo or _QUERY_PASSWORD.search(rest) is not None


def with_password(url: str, password: str) -> str:
    """`url` with `password`, percent-encoded (any character works), after its user name, which may be empty:
    `redis://redis:6379/0` -> `redis://:PW@redis:6379/0`, `postgresql://app@db/app` -> `postgresql://app:PW@db/app`."""
    scheme, _, rest = url.partition("://")
    authority, tail = _authority(rest)
    user, _, hosts = authority.rpartition("@")
    return f"{scheme}://{user}:{quote(password, safe='')}@{hosts}{tail}"


def _authority(rest: str) -> tuple[str, str]:
    """What follows a URL's `scheme://`, split where the authority ends (the first "/", "?" or "#")."""
    end = next((i for i, char in enumerate(rest) if char in "/?#"), len(rest))
    return rest[:end], rest[end:]


def mask(text: str) -> str:
    """`text` (a URL, or several comma-separated) with each password replaced by ***: what follows the user
    name up to the URL's last "@", and `password=` query values. It rather masks too much than too little."""
    for start, end in reversed(_password_spans(text)):
        text = text[:start] + MASK + text[end:]
    return text


def _password_spans(text: str) -> list[tuple[int, int]]:
    """Where the passwords are in `text`: one URL per scheme found (text before the first one counts as a URL)."""
    starts = [m.start() for m in _SCHEME.finditer(text)]
    bounds = [0, *starts] if not starts or starts[0] else starts
    spans: list[tuple[int, int]] = []
    for begin, end in zip(bounds, [*bounds[1:], len(text)], strict=True):
        end = begin + len(text[begin:end].rstrip(", \t"))
        scheme = _SCHEME.match(text, begin)
        authority = scheme.end() if scheme else begin
        at = text.rfind("@", authority, end)
        if at >= 0 and (colon := text.find(":", authority, at)) >= 0:
            spans.append((colon + 1, at))
        spans += [m.span(1) for m in _QUERY_PASSWORD.finditer(text, authority, end)]
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(stop, merged[-1][1]))
        else:
            merged.append((start, stop))
    return merged


def other_url(
    env: Mapping[str, str],
    variable: str,
    schemes: tuple[str, ...],
    allowed: str,
    password_file: str,
    target: tuple[str, str],
    problems: list[str],
) -> str:
    """A second server's URL in `variable` (a climb's old tier), with `password_file`'s password in it
    (both servers share one Secret); each problem appended to `problems`. `target` is the (name, URL)
    of the server the process already uses: the other one must not be it."""
    raw = env.get(variable, "").strip()
    if not raw:
        problems.append(f"{variable}: not set, allowed: {allowed}")
    elif not raw.startswith(schemes):
        problems.append(f"{variable}: got {mask(raw)!r}, allowed: {allowed}")
    else:
        url = PasswordFile(env, password_file, problems).insert(variable, raw, problems)
        if url == target[1]:
            problems.append(f"{variable}: got {mask(raw)!r}, allowed: {allowed} (it is {target[0]})")
        return url
    return ""
