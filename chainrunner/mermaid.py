"""Mermaid flowchart of a compiled chain's dependencies."""

from chainlets.language.compiler import CompiledChain

__all__ = ["to_mermaid"]


def _label(text: str) -> str:
    return '"' + text.replace('"', "#quot;") + '"'


def to_mermaid(chain: CompiledChain) -> str:
    """Inputs as parallelograms, steps as boxes, one edge per dependency or input use."""
    ids = {handle: f"s{i}" for i, handle in enumerate(chain.steps)}
    position = {handle: i for i, handle in enumerate(chain.steps)}
    inputs: dict[str, str] = {}
    lines = ["flowchart TD"]
    edges: list[str] = []
    for handle, step in chain.steps.items():
        what = step.plugin.name if step.code is None else f"code: {step.code.function.name}"
        lines.append(f"    {ids[handle]}[{_label(f'{handle}<br/>{what}')}]")
        templates = [step.prompt, *(t for _, t in step.history)]
        if step.system is not None:
            templates.append(step.system)
        if step.code is not None:
            templates.extend(step.code.templates.values())
        names = dict.fromkeys(n for t in templates for n in t.names)
        for name in names:
            if name in step.literals or name in chain.steps:
                continue
            if name not in inputs:
                inputs[name] = f"in{len(inputs)}"
                lines.append(f"    {inputs[name]}[/{_label(name)}/]")
            edges.append(f"    {inputs[name]} --> {ids[handle]}")
        edges.extend(f"    {ids[dep]} --> {ids[handle]}"
                     for dep in sorted(step.deps, key=position.__getitem__))
    return "\n".join(lines + edges) + "\n"
