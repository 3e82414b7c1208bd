"""The shipped bash completion is what the parser generates now, and bash accepts it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from guardian_dns.cli import _parser
from guardian_dns.completion import render

SHIPPED = Path(__file__).resolve().parents[2] / "deploy/bash-completion/guardian-dns"


def test_the_shipped_completion_is_current() -> None:
    assert SHIPPED.read_text() == render(_parser()), (
        "regenerate: guardian-dns completion > deploy/bash-completion/guardian-dns"
    )


def test_bash_completes_verbs_and_options() -> None:
    bash = shutil.which("bash")
    assert bash is not None
    script = f"""
source {SHIPPED}
COMP_WORDS=(guardian-dns sta); COMP_CWORD=1; _guardian_dns; echo "${{COMPREPLY[@]}}"
COMP_WORDS=(guardian-dns block --gr); COMP_CWORD=2; _guardian_dns; echo "${{COMPREPLY[@]}}"
"""
    out = subprocess.run([bash, "-c", script], capture_output=True, text=True, check=True)
    verbs, opts = out.stdout.splitlines()
    assert set(verbs.split()) == {"stats", "status"}
    assert opts.split() == ["--group"]
