"""A bundle's requirements.txt, installed at deploy time: what it may ask pip to do.

pip runs on the platform, with the platform's rights, so a hostile requirements file must
not make it read the platform's files, leak its environment, or run the bundle's own code:

  - requirement lines name packages from an index (with versions, extras, markers, hashes);
  - options that read other files (`-r`, `-c`, `-e`), local paths and `file:` URLs are refused,
    and so is `${VAR}` (pip would expand it from the environment);
  - indexes and links must be http(s) URLs;
  - pip installs wheels only, since building a source distribution runs its setup code
    (STOKER_DEPLOY_SOURCE_BUILDS=1 allows builds, for platforms whose deployers are trusted);
  - pip sees a short, secret-free environment.
"""

from __future__ import annotations

import os
import re

from stoker.errors import BundleError

REFUSED_OPTIONS = {"-r", "--requirement", "-c", "--constraint", "-e", "--editable", "--src", "--root",
                   "--prefix", "--target", "-t", "--user", "--no-binary"}
URL_OPTIONS = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links"}
ALLOWED_OPTIONS = {"--hash", "--pre", "--prefer-binary", "--only-binary", "--no-index", "--trusted-host",
                   "--use-feature", "--config-settings"} | URL_OPTIONS
PIP_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_INDEX_URL",
                "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_FIND_LINKS", "PIP_CERT", "PIP_CONFIG_FILE")
_LOCAL = re.compile(r"(^|@)\s*(\.|/|~|file:)", re.IGNORECASE)


def source_builds_allowed() -> bool:
    return os.environ.get("STOKER_DEPLOY_SOURCE_BUILDS", "") in ("1", "true", "yes")


def check_requirements(text: str) -> None:
    """Refuse, naming the line, what a requirements.txt may not ask for."""
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        where = f"requirements.txt line {number} ({raw.strip()[:120]!r})"
        if "${" in line:
            raise BundleError(f"{where}: environment variables (${{...}}) are not allowed in requirements.txt")
        if _LOCAL.search(line) or "file:" in line.lower():
            raise BundleError(f"{where}: local paths and file: URLs are not allowed; name packages from an index")
        for token in line.split():
            if not token.startswith("-"):
                continue
            option, _, value = token.partition("=")
            if option in REFUSED_OPTIONS:
                raise BundleError(f"{where}: the option {option} is not allowed in a bundle's requirements.txt")
            if option not in ALLOWED_OPTIONS:
                raise BundleError(f"{where}: unknown or unsupported pip option {option}")
            if option in URL_OPTIONS:
                url = value or _next_token(line, token)
                if not url.lower().startswith(("https://", "http://")):
                    raise BundleError(f"{where}: {option} must be an http(s) URL")


def _next_token(line: str, token: str) -> str:
    parts = line.split()
    i = parts.index(token)
    return parts[i + 1] if i + 1 < len(parts) else ""


def pip_environment(home: str) -> dict[str, str]:
    """What pip may see: proxies and index settings, never the platform's secrets."""
    env = {k: v for k, v in os.environ.items() if k in PIP_ENV_KEEP}
    env.update({"HOME": home, "PIP_NO_WARN_SCRIPT_LOCATION": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def pip_policy_arguments() -> list[str]:
    return [] if source_builds_allowed() else ["--only-binary=:all:"]


SOURCE_BUILD_HINT = ("stoker installs wheels only (building a source distribution would run its code on the "
                     "platform): use packages that publish wheels, or set STOKER_DEPLOY_SOURCE_BUILDS=1 on the "
                     "gateway if everyone who can deploy is trusted")
