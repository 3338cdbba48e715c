"""docker/make_base.py without running debootstrap: the machine's mirror, the cache key.

Place in the architecture: tests only. The image test (test_image.py) runs the whole script
where it can; these checks of its parsing run everywhere.
"""

from __future__ import annotations

import datetime


def _root(tmp_path, files: dict[str, str]):
    for rel, text in files.items():
        path = tmp_path / "etc/apt" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


def test_mirror_from_deb822_sources(tmp_path, docker_helper):
    mb = docker_helper("make_base")
    root = _root(tmp_path, {"sources.list.d/debian.sources": """\
Types: deb
# a comment
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""})
    assert mb.find_mirrors(root) == ("http://mirror.example/debian",
                                     "http://mirror.example/debian-security")


def test_mirror_from_one_line_sources_first_wins(tmp_path, docker_helper):
    mb = docker_helper("make_base")
    root = _root(tmp_path, {
        "sources.list": "# deb http://commented.example/debian bookworm main\n"
                        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n",
        "sources.list.d/other.list": "deb http://two.example/debian bookworm main\n",
        "sources.list.d/ignored.txt": "deb http://three.example/debian bookworm main\n",
    })
    assert mb.find_mirrors(root) == ("http://one.example/debian", None)
    assert mb.find_mirrors(str(tmp_path / "nowhere")) == (None, None)


def test_cache_key_changes_with_the_week_and_the_mirror(docker_helper):
    mb = docker_helper("make_base")
    monday, sunday = datetime.date(2026, 11, 30), datetime.date(2026, 12, 6)
    key = mb.cache_key("http://a.example/debian", monday)
    assert key == mb.cache_key("http://a.example/debian", sunday)
    assert key.startswith("bookworm-minbase-") and key.endswith("-2026w49")
    assert key != mb.cache_key("http://a.example/debian", monday + datetime.timedelta(7))
    assert key != mb.cache_key("http://b.example/debian", monday)
