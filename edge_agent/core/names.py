"""A site's human-readable name (``[site] name``), as the agent takes it and central stores
it: short, and free of control characters, since it is shown in tables and terminals."""

from __future__ import annotations

import re

#: How long a site's name may be.
MAX_SITE_NAME = 80
#: The same rule as a JSON Schema pattern (C0 and C1 control characters, DEL).
SITE_NAME_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
_NAME = re.compile(SITE_NAME_PATTERN)


def site_name_ok(name: str) -> bool:
    """Whether ``name`` may be a site's name: at most 80 characters, no control character."""
    return len(name) <= MAX_SITE_NAME and _NAME.fullmatch(name) is not None


#: A site's, venue's, user's or destination's id: 1-64 ASCII letters, digits, ``-``, ``_`` or
#: ``.``. Ids name topics, files and URLs, and this pattern reads the same in Python, in
#: JSON Schema (the published API) and in a browser's form check.
ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_ID = re.compile(ID_PATTERN)


def valid_id(value: str) -> bool:
    """Whether ``value`` may be an id (`ID_PATTERN`)."""
    return _ID.fullmatch(value) is not None
