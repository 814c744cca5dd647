"""Parse tree -> Dockerfile text, from the structured fields (not `.original`).

parse(render(df)) gives back df up to positions; used by the round-trip tests and handy
for printing a normalized Dockerfile (one instruction a line, flags as --name=value).
"""

from __future__ import annotations

import json

from . import ast


def _flag_value(v: str) -> str:
    if v and not any(c in v for c in " \t\"'\\"):
        return v
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _flags(inst: ast.Instruction) -> list[str]:
    out = []
    for name, values in inst.flags.items():
        for v in values:
            out.append(f"--{name}" if v == "true" and _is_bool(inst.kind, name)
                       else f"--{name}={_flag_value(v)}")
    return out


def _is_bool(kind: str, name: str) -> bool:
    from .instructions import FLAGS
    return FLAGS.get(kind, {}).get(name) == "bool"


def _cmd(inst: ast.Instruction) -> str:
    return json.dumps(inst.args, ensure_ascii=False) if inst.json_form else inst.args[0]


def render_instruction(inst: ast.Instruction) -> str:
    """One instruction as a single line (heredoc bodies not included)."""
    k = inst.kind
    parts = [k, *_flags(inst)]
    if isinstance(inst, ast.From):
        parts.append(inst.image)
        if inst.name:
            parts += ["AS", inst.name]
    elif isinstance(inst, (ast.Env, ast.Label)):
        if len(inst.pairs) == 1 and inst.pairs[0].legacy:
            parts += [inst.pairs[0].key, inst.pairs[0].value]
        else:
            parts += [f"{p.key}={p.value}" for p in inst.pairs]
    elif isinstance(inst, ast.Arg):
        parts += [d.name if d.default is None else f"{d.name}={d.default}" for d in inst.decls]
    elif isinstance(inst, ast.Healthcheck):
        if inst.none:
            parts.append("NONE")
        else:
            parts.append("CMD")
            parts.append(json.dumps(inst.args[1:], ensure_ascii=False) if inst.json_form
                         else inst.args[1])
    elif isinstance(inst, ast.Onbuild):
        parts.append(inst.expression)  # the trigger as written: it goes into the image
    elif isinstance(inst, (ast.Copy, ast.Volume)) or k in ("EXPOSE",):
        parts.append(json.dumps(inst.args, ensure_ascii=False) if inst.json_form
                     else " ".join(inst.args))
    else:
        parts.append(_cmd(inst))
    return " ".join(parts)


def _with_heredocs(inst: ast.Instruction) -> str:
    text = render_instruction(inst)
    for h in inst.heredocs:
        text += "\n" + h.content + h.name
    return text


def render(df: ast.Dockerfile) -> str:
    """The whole Dockerfile as text."""
    lines = [f"# {k}={v}" for k, v in df.directives.items()]
    lines += [_with_heredocs(a) for a in df.global_args]
    for st in df.stages:
        lines.append(render_instruction(st.from_) if st.from_ else
                     " ".join(["FROM", *( [f"--platform={st.platform}"] if st.platform else []),
                               st.base, *(["AS", st.name] if st.name else [])]))
        lines += [_with_heredocs(i) for i in st.instructions]
    return "\n".join(lines) + "\n"
