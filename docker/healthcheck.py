"""The container image's HEALTHCHECK: GET each node's ``/health``; healthy when all answer 200.

Place in the architecture: a helper of the container image (``Dockerfile``), outside the
``fastraft`` package; it imports only the standard library (slim images have no curl), and the
image runs it with its venv's Python as ``/opt/fastraft/healthcheck.py``.

Which URLs: the arguments, else ``$FASTRAFT_HEALTH_URLS`` (separated by spaces or commas),
else the default cluster's ``http://127.0.0.1:7201/health`` .. ``7203`` (one container
running ``fastraft cluster``). A container running one node sets ``FASTRAFT_HEALTH_URLS`` to
its own node's (compose.yaml does). The ``/health`` endpoint is served on the node's
``[[node]] metrics`` address: 200 with a JSON body when the node has a leader it heard from
recently and applies what is committed, 503 with the reason otherwise.

Exit status (what Docker reads): 0 healthy, 1 unhealthy; one line per URL on stdout (Docker
keeps the last lines in ``docker inspect``).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URLS = [f"http://127.0.0.1:{7200 + n}/health" for n in (1, 2, 3)]
#: Seconds for each request (the HEALTHCHECK's own --timeout bounds the whole run).
TIMEOUT_S = 2.0


def urls(argv: list[str]) -> list[str]:
    if argv:
        return argv
    text = os.environ.get("FASTRAFT_HEALTH_URLS", "").replace(",", " ").split()
    return text or DEFAULT_URLS


def check(url: str) -> tuple[bool, str]:
    """(healthy, one line saying what the URL answered)."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            body = resp.read(512).decode("utf-8", "replace").strip()
            return resp.status == 200, f"{url}: {resp.status} {body}"
    except urllib.error.HTTPError as exc:            # 503 with the reason in the body
        body = exc.read(512).decode("utf-8", "replace").strip()
        return False, f"{url}: {exc.code} {body}"
    except (OSError, ValueError) as exc:
        return False, f"{url}: {getattr(exc, 'reason', None) or exc}"


def main(argv: list[str]) -> int:
    healthy = True
    for url in urls(argv):
        ok, line = check(url)
        print(line)
        healthy = healthy and ok
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
