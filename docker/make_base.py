"""Make the ``debian:bookworm-slim`` base image locally, for machines without Docker Hub.

Place in the architecture: a build helper of the container image (``Dockerfile``), outside the
``fastraft`` package; ``tests/docker/test_image.py`` and ``docs/docker.md`` use it. Standard
library only; it runs ``debootstrap`` and ``buildah`` (as root).

What it does::

    python3 docker/make_base.py [--mirror URL] [--cache DIR] [--tag debian:bookworm-slim]

1. Finds the Debian mirror this machine's apt uses for bookworm (``/etc/apt/sources.list`` and
   ``/etc/apt/sources.list.d/*.list|*.sources``), unless ``--mirror`` names one.
2. Works out a cache key from the mirror and the ISO week (``bookworm-minbase-<hash>-<week>``):
   the base is rebuilt at most once a week per mirror, so it picks up Debian's updates.
3. If buildah already holds ``--tag`` with that key in its ``org.fastraft.base-key`` label,
   there is nothing to do. If ``--tag`` is an image this script did not make (a real
   ``debian:bookworm-slim`` pulled from a registry), it is kept and used as it is.
4. Otherwise, when ``CACHE/<key>.tar`` is missing, runs ``debootstrap --variant=minbase
   bookworm`` from the mirror, slims the tree the way the official ``-slim`` images are slimmed
   (no documentation, manual pages or locales, apt keeps no package files or lists) and packs
   it into ``CACHE/<key>.tar`` (older keys' files are removed).
5. Imports the tree into buildah: ``buildah from scratch``, unpacks the tar into the mounted
   container, ``buildah commit`` as ``--tag``.

The cache directory defaults to ``$FASTRAFT_IMAGE_CACHE``, else
``$XDG_CACHE_HOME/fastraft-image`` (``~/.cache/fastraft-image``): outside the repository, kept
between test runs. It prints one line per step and what it decided on stdout; it exits 1 with a
message when a step fails.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

SUITE = "bookworm"
DEFAULT_TAG = "debian:bookworm-slim"
LABEL = "org.fastraft.base-key"

#: What the official slim images leave out (their /etc/dpkg/dpkg.cfg.d/docker).
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
"""
#: apt keeps no downloaded packages and no translations (the official images' apt.conf.d).
APT_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APT::AutoRemove::SuggestsImportant "false";
"""


class BaseError(Exception):
    """A step failed; the message says which and why."""


def default_cache_dir() -> str:
    if os.environ.get("FASTRAFT_IMAGE_CACHE"):
        return os.environ["FASTRAFT_IMAGE_CACHE"]
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "fastraft-image")


# -- the machine's apt mirror ---------------------------------------------------------------

def _one_line_sources(text: str):
    """(uri, suites) of each ``deb URI SUITE COMPONENTS`` line."""
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 3 and words[0] == "deb":
            rest = words[1:]
            if rest[0].startswith("["):           # deb [options] uri suite ...
                while rest and not rest[0].endswith("]"):
                    rest = rest[1:]
                rest = rest[1:]
            if len(rest) >= 2:
                yield rest[0], [rest[1]]


def _deb822_sources(text: str):
    """(uri, suites) of each stanza of a ``.sources`` file with ``Types: deb``."""
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"]) != ["no"]:
            for uri in fields.get("uris", []):
                yield uri, fields.get("suites", [])


def apt_sources(root: str = "/") -> list[tuple[str, list[str]]]:
    """Every ``deb`` source of the machine, as (uri, suites), in apt's file order."""
    found = []
    etc = os.path.join(root, "etc/apt")
    files = [os.path.join(etc, "sources.list")]
    files += sorted(glob.glob(os.path.join(etc, "sources.list.d/*")))
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        if path.endswith(".sources"):
            found += list(_deb822_sources(text))
        elif path.endswith(".list"):
            found += list(_one_line_sources(text))
    return found


def find_mirrors(root: str = "/") -> tuple[str | None, str | None]:
    """The machine's (Debian mirror, security mirror) for bookworm; None where it has none."""
    mirror = security = None
    for uri, suites in apt_sources(root):
        uri = uri.rstrip("/")
        if SUITE in suites and mirror is None:
            mirror = uri
        if f"{SUITE}-security" in suites and security is None:
            security = uri
    return mirror, security


def cache_key(mirror: str, today: datetime.date | None = None) -> str:
    year, week, _ = (today or datetime.date.today()).isocalendar()
    digest = hashlib.sha256(mirror.encode()).hexdigest()[:12]
    return f"{SUITE}-minbase-{digest}-{year}w{week:02d}"


# -- building the tree ----------------------------------------------------------------------

def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise BaseError(f"{' '.join(argv[:3])} ... exited {proc.returncode}:\n"
                        + "\n".join(tail))
    return proc


def slim(rootfs: str, mirror: str, security: str | None) -> None:
    """Trim a debootstrapped tree like the official slim images and write its apt sources."""
    for sub in ("usr/share/man", "usr/share/info", "usr/share/groff", "usr/share/linda",
                "usr/share/lintian/overrides", "usr/share/locale"):
        path = os.path.join(rootfs, sub)
        if os.path.isdir(path):
            shutil.rmtree(path)
            os.mkdir(path)
    doc = os.path.join(rootfs, "usr/share/doc")
    for pkg in os.listdir(doc) if os.path.isdir(doc) else []:
        pdir = os.path.join(doc, pkg)
        if os.path.isdir(pdir) and not os.path.islink(pdir):
            for name in os.listdir(pdir):
                p = os.path.join(pdir, name)
                if name == "copyright":
                    continue
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                else:
                    os.unlink(p)
    for sub in ("var/lib/apt/lists", "var/cache/apt/archives", "var/cache/apt"):
        for p in glob.glob(os.path.join(rootfs, sub, "*")):
            if os.path.isfile(p) or os.path.islink(p):
                os.unlink(p)
    for p in glob.glob(os.path.join(rootfs, "var/lib/apt/lists/partial/*")):
        os.unlink(p)
    with open(os.path.join(rootfs, "etc/dpkg/dpkg.cfg.d/docker"), "w") as f:
        f.write(DPKG_EXCLUDES)
    with open(os.path.join(rootfs, "etc/apt/apt.conf.d/docker-clean"), "w") as f:
        f.write(APT_CLEAN)
    lines = [f"deb {mirror} {SUITE} main", f"deb {mirror} {SUITE}-updates main"]
    if security:
        lines.append(f"deb {security} {SUITE}-security main")
    with open(os.path.join(rootfs, "etc/apt/sources.list"), "w") as f:
        f.write("\n".join(lines) + "\n")


def make_tar(mirror: str, security: str | None, cache: str, key: str) -> str:
    """``CACHE/<key>.tar``: debootstrap, slim and pack (kept if it exists)."""
    tar = os.path.join(cache, key + ".tar")
    if os.path.exists(tar):
        print(f"base tree: cached {tar}")
        return tar
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fastraft-base-", dir=cache) as tmp:
        rootfs = os.path.join(tmp, "rootfs")
        print(f"base tree: debootstrap --variant=minbase {SUITE} from {mirror}", flush=True)
        _run(["debootstrap", "--variant=minbase", SUITE, rootfs, mirror])
        slim(rootfs, mirror, security)
        part = tar + ".part"
        _run(["tar", "--numeric-owner", "--xattrs", "-C", rootfs, "-cf", part,
              "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
              "--exclude=./run/*", "--exclude=./tmp/*", "."])
        os.replace(part, tar)
    for old in glob.glob(os.path.join(cache, f"{SUITE}-minbase-*.tar")):
        if old != tar:
            os.unlink(old)
    print(f"base tree: packed {tar} ({os.path.getsize(tar) // (1 << 20)} MiB)")
    return tar


# -- buildah --------------------------------------------------------------------------------

def image_label(tag: str) -> tuple[bool, str | None]:
    """(whether buildah holds ``tag``, its LABEL or None)."""
    proc = subprocess.run(["buildah", "inspect", "--type", "image", tag],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return False, None
    info = json.loads(proc.stdout)
    labels = (info.get("OCIv1", {}).get("config", {}) or {}).get("Labels") or {}
    return True, labels.get(LABEL)


def import_tar(tar: str, tag: str, key: str) -> None:
    ctr = _run(["buildah", "from", "scratch"]).stdout.strip()
    try:
        mnt = _run(["buildah", "mount", ctr]).stdout.strip()
        _run(["tar", "--numeric-owner", "--xattrs", "-C", mnt, "-xf", tar])
        _run(["buildah", "umount", ctr])
        _run(["buildah", "config", "--label", f"{LABEL}={key}", "--cmd", "bash",
              "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "--os", "linux", ctr])
        _run(["buildah", "commit", "--quiet", "--rm", ctr, tag])
    except BaseException:
        subprocess.run(["buildah", "rm", ctr], capture_output=True)
        raise
    print(f"base image: {tag} imported from {tar}")


def ensure_base(tag: str = DEFAULT_TAG, mirror: str | None = None,
                cache: str | None = None) -> str:
    """Make ``tag`` exist in buildah's store (see the module docstring); returns what was
    done, in one line."""
    security = None
    if mirror is None:
        mirror, security = find_mirrors()
        if mirror is None:
            raise BaseError(f"no apt source for {SUITE} on this machine: pass --mirror URL")
    key = cache_key(mirror)
    present, label = image_label(tag)
    if present and label == key:
        return f"base image: {tag} is current ({key})"
    if present and label is None:
        return f"base image: {tag} exists and was not made here: used as it is"
    tar = make_tar(mirror, security, cache or default_cache_dir(), key)
    import_tar(tar, tag, key)
    return f"base image: {tag} made ({key})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mirror", help="Debian mirror URL (default: this machine's apt mirror)")
    p.add_argument("--cache", help=f"cache directory (default: {default_cache_dir()})")
    p.add_argument("--tag", default=DEFAULT_TAG, help=f"image name (default {DEFAULT_TAG})")
    args = p.parse_args(argv)
    for tool in ("debootstrap", "buildah", "tar"):
        if shutil.which(tool) is None:
            print(f"make_base: {tool} not found (apt-get install buildah debootstrap)",
                  file=sys.stderr)
            return 1
    try:
        print(ensure_base(args.tag, args.mirror, args.cache))
    except BaseError as exc:
        print(f"make_base: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
