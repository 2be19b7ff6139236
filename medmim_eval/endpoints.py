"""OpenAI-compatible endpoints: the default URL, parsing ``base_url=URL[|URL...]`` and telling a local
server from a remote one. Shared by the chat-completions adapters and the LLM question writer."""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from medmim_eval.errors import MedmimError

OPENAI_HOST = "api.openai.com"
OPENAI_BASE_URL = f"https://{OPENAI_HOST}/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
_LOCAL_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


def base_urls(options: dict[str, str]) -> list[str]:
    """The endpoints of ``base_url=URL[|URL...]`` (default: the OpenAI API), trailing ``/`` removed.

    Raises:
        MedmimError: for an empty or non-http(s) URL.
    """
    raw = options.get("base_url") or OPENAI_BASE_URL
    urls = [u.strip().rstrip("/") for u in raw.split("|")]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MedmimError(f"base_url '{url}' is not an http(s) URL like http://127.0.0.1:8000/v1")
        if parts.username or parts.password:
            raise MedmimError("base_url must not carry a user or password; put the key in the environment (api_key_env=NAME)")
    return urls


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


def is_local_url(url: str) -> bool:
    """True when ``url`` points at this machine (loopback name or address, or 0.0.0.0)."""
    host = host_of(url).lower()
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified
