"""The argv a RUN executes, heredocs included, as BuildKit's dispatchRun builds it.

- exec form: the JSON list as is;
- shell form: SHELL + [text], where for heredocs
  - a command that is nothing but one heredoc marker (`RUN <<EOT`) runs the body: a body
    starting with `#!` becomes an executable file under /dev/pipes/ that the shell runs
    (so the shebang picks the interpreter), any other body is the shell's script;
  - otherwise (`RUN <<EOT bash`, `RUN cat <<A > a && <<B cat > b`) the bodies are put back
    after the command line, each followed by its delimiter, and the shell reads them.
"""

from __future__ import annotations

from ..recordclass import record, field

from ocispec.errors import OCIError

from . import ast
from .expand import delimiter_words
from .parser import HEREDOC_RE

PIPES_DIR = "/dev/pipes"


@record
class RunCommand:
    """argv to execute; files: absolute path in the container -> content, to be provided
    (mode 0755, read-only is fine) before argv runs."""

    argv: list[str]
    files: dict[str, str] = field(default_factory=dict)


def _single_heredoc(text: str) -> bool:
    m = HEREDOC_RE.match(text)
    if not m or not m.group(3):
        return False
    try:
        return len(delimiter_words(m.group(3), raw_quotes=False)) == 1
    except OCIError:
        return False


def run_command(run: ast.Run, shell: list[str]) -> RunCommand:
    """What to execute for run under SHELL shell (e.g. ["/bin/sh", "-c"])."""
    if run.json_form:
        return RunCommand(list(run.command))
    text = run.command if isinstance(run.command, str) else " ".join(run.command)
    if not run.heredocs:
        return RunCommand([*shell, text])
    if _single_heredoc(text):
        doc = run.heredocs[0]
        if doc.content.startswith("#!"):
            path = f"{PIPES_DIR}/{doc.name}"
            return RunCommand([*shell, path], {path: doc.content})
        return RunCommand([*shell, doc.content])
    script = text + "".join(f"\n{h.content}{h.name}" for h in run.heredocs)
    return RunCommand([*shell, script])
