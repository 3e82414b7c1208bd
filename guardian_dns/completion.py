"""Bash completion for ``guardian-dns``, generated from the command line parser itself.

What it decides: the words bash offers after ``guardian-dns`` (the verbs) and after a verb (its
options). Generated, so it cannot drift from the parser: ``tests/unit/test_completion.py`` checks
that the shipped ``deploy/bash-completion/guardian-dns`` is what ``render`` prints now.
Regenerate with ``guardian-dns completion > deploy/bash-completion/guardian-dns``.
"""

from __future__ import annotations

import argparse


def _verbs(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for action in parser._actions:  # argparse offers no public walk over sub-commands
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                opts = sorted({o for a in sub._actions for o in a.option_strings})
                nested = _verbs(sub)
                out[name] = opts + sorted(nested)
    return out


def render(parser: argparse.ArgumentParser) -> str:
    verbs = _verbs(parser)
    cases = "\n".join(
        f'        {verb}) opts="{" ".join(opts)}" ;;' for verb, opts in sorted(verbs.items())
    )
    return f"""# bash completion for guardian-dns (generated: guardian-dns completion)
_guardian_dns() {{
    local cur verb opts
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    if [ "$COMP_CWORD" -eq 1 ]; then
        mapfile -t COMPREPLY < <(compgen -W "{" ".join(sorted(verbs))} --help --version" -- "$cur")
        return
    fi
    verb="${{COMP_WORDS[1]}}"
    case "$verb" in
{cases}
        *) opts="" ;;
    esac
    case "$cur" in
        -*) mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur") ;;
        *) mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
    esac
}}
complete -F _guardian_dns guardian-dns
"""


__all__ = ["render"]
