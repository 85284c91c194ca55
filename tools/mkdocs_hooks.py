"""MkDocs hooks (mkdocs.yml ``hooks:``): the docstrings are written in Sphinx style, and
mkdocstrings renders a cross-reference role such as ``:meth:`step``` as the text ":meth:" before
the code. This turns it into the code alone, without Sphinx's ``~`` (show the last name only)."""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:meth|func|class|attr|mod|data|exc|obj):(<code>)(~)?([^<]*)(</code>)")


def _name(match: re.Match) -> str:
    name = match.group(3)
    if match.group(2):  # ~a.b.c shows as c
        name = name.rsplit(".", 1)[-1]
    return f"{match.group(1)}{name}{match.group(4)}"


def on_page_content(html: str, **kwargs) -> str:
    return ROLE.sub(_name, html)
