"""Where a forwarded request may go: `{api_url}/{path}?{query}` and nowhere else (pure).

The path comes from the caller as it was on the wire (still percent-encoded). Anything a
server, a proxy or a URL library on the way might read as a different path or another
host is refused rather than cleaned up, so what the API receives is exactly what was
checked:

- encoded slashes or backslashes (`%2F`, `%5C`) and raw backslashes: some servers decode
  them into separators;
- `.` and `..` segments, raw or encoded (`%2E`): they climb out of the base path;
- empty segments (`//host`, a leading `/`): a second authority to some parsers;
- `@` (user info), `%25` (a second round of decoding), control characters, and any byte
  outside RFC 3986's path characters;
- malformed percent escapes.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from broker.core.errors import ForwardPathRefused

# RFC 3986 `pchar` without `@` (user info), `%` handled separately below.
_SEGMENT = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2})+$")
# Percent escapes that decode to something a server could read as structure.
_FORBIDDEN_ESCAPE = re.compile(r"%(?:2[fFeE5]|5[cC]|[01][0-9A-Fa-f]|7[fF])")
# The query goes as sent, but must not carry a fragment or raw controls and spaces.
_QUERY = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/?%\[\]]*$")
MAX_PATH = 4096


def check_path(raw_path: str) -> str:
    """`raw_path` (the part after `/forward/`, still percent-encoded) when it names a
    resource below the API's base; ForwardPathRefused otherwise."""
    if not raw_path:
        return raw_path
    if len(raw_path) > MAX_PATH:
        raise ForwardPathRefused(f"the forward path is longer than {MAX_PATH} characters")
    for segment in raw_path.split("/"):
        if not segment:
            raise ForwardPathRefused("empty path segments ('//') are not forwarded")
        if not _SEGMENT.match(segment):
            raise ForwardPathRefused(
                "the forward path holds characters that are not forwarded"
                " (backslashes, '@', spaces, controls or a malformed escape)"
            )
        if _FORBIDDEN_ESCAPE.search(segment):
            raise ForwardPathRefused(
                "encoded slashes, backslashes, dots, percent signs or controls are not forwarded"
            )
        if unquote(segment) in (".", ".."):
            raise ForwardPathRefused("'.' and '..' segments are not forwarded")
    return raw_path


def check_query(raw_query: str) -> str:
    """The query string as sent, when it holds only URL query characters."""
    if not _QUERY.match(raw_query):
        raise ForwardPathRefused("the query string holds characters that are not forwarded")
    return raw_query


def target_url(api_url: str, raw_path: str, raw_query: str) -> str:
    """`{api_url}/{path}?{query}` after both checks; the base keeps its own path prefix."""
    url = f"{api_url.rstrip('/')}/{check_path(raw_path)}"
    query = check_query(raw_query)
    return f"{url}?{query}" if query else url
