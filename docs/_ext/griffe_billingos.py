"""A griffe extension for the API reference: the SDK's docstrings, rendered as Markdown.

The package's docstrings are written for ``help()`` and IDEs: Google-style sections, reST-ish
``Example::`` blocks and ``:class:`X``` roles. mkdocstrings renders docstrings as Markdown, so this
extension, loaded by ``mkdocs.yml``, rewrites them when griffe loads ``billingos`` (the source files
are never touched):

- ``:class:`~billingos.X``` and friends become cross-references (``[`X`][billingos.X]``) when ``X`` is
  public, inline code otherwise;
- a paragraph ending in ``::`` followed by an indented block becomes a fenced code block
  (``Example::`` becomes an ``Examples:`` section);
- ``Answers:`` and other non-Google headings followed by an indented bullet list keep the list a list;
- the blocking client's methods, which are descriptors generated from the async ones at import time
  (``create = _Blocking(AsyncSessionTokens.create)``), and the ``check_entitlement`` /
  ``track_usage`` / ``create_session_token`` shortcuts become documented methods with the async
  method's signature and docstring (without ``await`` for the blocking ones);
- a public name missing from the API reference pages is a warning (so ``mkdocs build --strict`` fails);
- parameter defaults naming a module constant (``timeout=DEFAULT_TIMEOUT``) show its value, and
  ``attrs.field(default=...)`` attribute values show the default.
"""

from __future__ import annotations

import ast
import logging
import re
import textwrap
from pathlib import Path
from typing import Any

import griffe

PACKAGE = "billingos"
# Where each public name is documented: the first namespace whose __all__ has it wins.
NAMESPACES = (
    "billingos",
    "billingos.testing",
    "billingos.integrations.fastapi",
    "billingos.integrations.wsgi",
)
SECTIONS = {
    "args", "arguments", "attributes", "example", "examples", "note", "notes", "raises", "returns",
    "warning", "warnings", "yields", "see also", "parameters", "params", "keyword args",
}  # fmt: skip
ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):`(~?)([^`]+)`")
ATTRS_FIELDS = ("attrs.field", "attr.ib", "field")
WRAPPERS = {
    "_Blocking": "blocking",
    "_BlockingCheck": "blocking",
    "_BlockingList": "list",
    "_Shortcut": "shortcut",
}


REFERENCE = Path(__file__).resolve().parents[1] / "reference"
# Under the "mkdocs" logger, so that a warning counts in `mkdocs build --strict`.
logger = logging.getLogger("mkdocs.plugins.griffe_billingos")


class BillingOSDocstrings(griffe.Extension):
    """Rewrites the ``billingos`` docstrings for Markdown once the package is loaded."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != PACKAGE:
            return
        public = _public_names(pkg)
        _check_reference_covers(public)
        objects = list(_walk(pkg))
        for obj in objects:
            if isinstance(obj, griffe.Class):
                _expand_descriptors(obj)
                obj.bases = [base for base in obj.bases if not _private_base(base)]
        for obj in _walk(pkg):  # again: the descriptors' replacements are new objects
            if isinstance(obj, griffe.Function):
                _show_constant_defaults(obj, pkg)
            if isinstance(obj, griffe.Attribute):
                _show_attrs_default(obj)
            if obj.docstring is not None:
                obj.docstring.value = _markdown(obj.docstring.value, obj, public)


def _walk(obj: griffe.Object) -> Any:
    yield obj
    for member in list(obj.members.values()):
        if not member.is_alias:
            yield from _walk(member)  # type: ignore[arg-type]


def _public_names(pkg: griffe.Module) -> dict[str, str]:
    """``{"AsyncBillingOS": "billingos.AsyncBillingOS", ...}`` for every name in the namespaces' __all__."""
    names: dict[str, str] = {}
    for path in NAMESPACES:
        module = pkg if path == PACKAGE else pkg[path.removeprefix(PACKAGE + ".")]
        for name in module.exports or ():
            names.setdefault(str(name), f"{path}.{name}")
    return names


def _check_reference_covers(public: dict[str, str]) -> None:
    """Warn about every public name that no ``::: identifier`` of docs/reference/*.md documents."""
    documented = set()
    for page in REFERENCE.glob("*.md"):
        documented |= set(re.findall(r"^::: ([\w.]+)", page.read_text(encoding="utf-8"), re.MULTILINE))
    for name, path in sorted(public.items()):
        module = path.rsplit(".", 1)[0]
        if name != "__version__" and path not in documented and module not in documented:
            logger.warning("API reference: %s is public but no page of docs/reference/ documents it", path)


# -- docstring text ------------------------------------------------------------------------------


def _markdown(text: str, obj: griffe.Object, public: dict[str, str]) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.rstrip()
        indent = _indent(line)
        if stripped.endswith("::"):
            block, i = _block(lines, i + 1, indent)
            head = stripped[:-2].rstrip()
            code = textwrap.dedent("\n".join(block)).split("\n")
            language = _language("\n".join(code))
            pad = " " * indent
            if head.strip().lower() in ("example", "examples"):
                out.append(pad + "Examples:")
                pad += "    "
            else:
                if head.strip():
                    out += [_roles(head, obj, public) + ":", ""]
            out.append(pad + "```" + language)
            out += [pad + code_line if code_line else "" for code_line in code]
            out += [pad + "```", ""]
            continue
        if (
            stripped.endswith(":")
            and stripped.strip()[:-1].lower() not in SECTIONS
            and i + 1 < len(lines)
            and _indent(lines[i + 1]) > indent
            and lines[i + 1].strip().startswith("- ")
        ):
            block, i = _block(lines, i + 1, indent)
            out += [_roles(line, obj, public), ""]
            out += [
                " " * indent + _roles(b, obj, public) for b in textwrap.dedent("\n".join(block)).split("\n")
            ]
            out.append("")
            continue
        out.append(_roles(line, obj, public))
        i += 1
    return "\n".join(out).rstrip()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block(lines: list[str], start: int, indent: int) -> tuple[list[str], int]:
    """The lines after ``start`` indented deeper than ``indent`` (blank lines included), and where it ends."""
    j = start
    while j < len(lines) and not lines[j].strip():
        j += 1
    block: list[str] = []
    while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > indent):
        block.append(lines[j])
        j += 1
    while block and not block[-1].strip():
        block.pop()
        j -= 1
    return block, j


def _language(code: str) -> str:
    try:
        ast.parse(code)
    except SyntaxError:
        return "text"
    return "python"


def _roles(line: str, obj: griffe.Object, public: dict[str, str]) -> str:
    def link(match: re.Match[str]) -> str:
        short, target = match.group(1) == "~", match.group(2).strip().lstrip(".")
        shown = target.rsplit(".", 1)[-1] if short else target
        identifier = _identifier(target, obj, public)
        return f"[`{shown}`][{identifier}]" if identifier else f"`{shown}`"

    return ROLE.sub(link, line)


def _identifier(target: str, obj: griffe.Object, public: dict[str, str]) -> str | None:
    """The documented path of ``target``, as ``obj``'s docstring names it; None when it is not documented."""
    first, _, rest = target.partition(".")
    for namespace in NAMESPACES:
        if target.startswith(namespace + "."):
            first, _, rest = target.removeprefix(namespace + ".").partition(".")
            break
    if first in public:
        return public[first] + ("." + rest if rest else "")
    owner = obj if isinstance(obj, griffe.Class) else obj.parent
    if isinstance(owner, griffe.Class) and first in owner.members and owner.name in public:
        return f"{public[owner.name]}.{target}"
    return None


def _private_base(base: str | griffe.Expr) -> bool:
    """A base class readers cannot use: private (``_SyncBase``) or internal (the resources' ``Resource``)."""
    name = str(base).split("[", 1)[0].rsplit(".", 1)[-1]
    return name.startswith("_") or name == "Resource"


# -- the blocking client's generated methods -----------------------------------------------------


def _expand_descriptors(cls: griffe.Class) -> None:
    for name, member in list(cls.members.items()):
        if member.is_alias or not isinstance(member, griffe.Attribute) or member.value is None:
            continue
        value = member.value
        if not isinstance(value, griffe.ExprCall) or str(value.function) not in WRAPPERS:
            continue
        kind = WRAPPERS[str(value.function)]
        method = next(str(arg) for arg in value.arguments if not str(arg).startswith(("'", '"')))
        source = _resolve(cls.module, method)
        if not isinstance(source, griffe.Function):
            continue
        cls.set_member(name, _copy(source, name, member, kind, cls))


def _resolve(module: griffe.Module, dotted: str) -> griffe.Object | None:
    owner_name, _, method = dotted.partition(".")
    owner = module.members.get(owner_name)
    if owner is None:
        return None
    target = owner.final_target if owner.is_alias else owner  # type: ignore[union-attr]
    found = target.members.get(method)
    return found.final_target if found is not None and found.is_alias else found  # type: ignore[union-attr,return-value]


def _copy(
    source: griffe.Function, name: str, member: griffe.Attribute, kind: str, cls: griffe.Class
) -> griffe.Function:
    parameters = [
        griffe.Parameter(
            p.name, annotation=p.annotation, kind=p.kind, default=p.default, docstring=p.docstring
        )
        for p in list(source.parameters)[1:]  # without self
    ]
    returns = source.returns
    if kind == "list" and isinstance(returns, griffe.ExprSubscript):
        returns = griffe.ExprSubscript(griffe.ExprName("Paginator", parent=cls.module), returns.slice)
    doc = member.docstring.value if member.docstring is not None else ""
    if source.docstring is not None:
        body = source.docstring.value
        if kind != "shortcut":
            body = _blocking_examples(body)
        doc = f"{doc}\n\n{body}" if doc else body
    function = griffe.Function(
        name,
        lineno=member.lineno,
        endlineno=member.endlineno,
        parameters=griffe.Parameters(*parameters),
        returns=returns,
        docstring=griffe.Docstring(doc, parser=source.docstring.parser if source.docstring else None),
    )
    if kind == "shortcut":
        function.labels |= source.labels
    return function


def _blocking_examples(text: str) -> str:
    """An async method's docstring for its blocking twin: no ``await``, ``async for`` or ``async with``."""
    text = re.sub(r"\(await ([^()]*\([^()]*\))\)", r"\1", text)  # (await x.y(...)).z -> x.y(...).z
    text = re.sub(r"\bawait ", "", text)
    return re.sub(r"\basync (for|with) ", r"\1 ", text)


# -- defaults ------------------------------------------------------------------------------------


def _show_constant_defaults(function: griffe.Function, pkg: griffe.Module) -> None:
    for parameter in function.parameters:
        default = parameter.default
        if not isinstance(default, griffe.ExprName) or not default.name.isupper():
            continue
        try:
            constant = pkg.modules_collection[default.canonical_path]
        except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        if isinstance(constant, griffe.Attribute) and constant.value is not None:
            parameter.default = constant.value


def _show_attrs_default(attribute: griffe.Attribute) -> None:
    """``x: int = attrs.field(default=0, validator=v)`` shows as ``x: int = 0``; ``factory=f`` as ``f()``."""
    value = attribute.value
    if "instance-attribute" in attribute.labels and "class-attribute" not in attribute.labels:
        attribute.value = None  # ``self.secret_key = self.add_secret_key()``: code, not a value
        return
    if not isinstance(value, griffe.ExprCall) or str(value.function) not in ATTRS_FIELDS:
        return
    attribute.value = None
    for argument in value.arguments:
        if isinstance(argument, griffe.ExprKeyword) and argument.name == "default":
            attribute.value = argument.value
        elif isinstance(argument, griffe.ExprKeyword) and argument.name == "factory":
            attribute.value = f"{argument.value}()"
