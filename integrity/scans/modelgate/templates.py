"""Chat templates (GGUF ``tokenizer.chat_template``, ``tokenizer_config.json``, ``*.jinja``) decided by
what they do, not by patterns.

A chat template is a Jinja program that the model's runtime renders on every request. Rendered
with a plain ``jinja2.Environment`` (the CVE-2024-34359 setting), a template can walk from any
value to ``os.system``; spelled with escapes (``''['\\x5f\\x5fclass\\x5f\\x5f']``) or through
``self['_TemplateReference__context']``, it slips past any list of bad substrings. Two checks,
both must pass:

1. **Constructs.** The template is parsed and every node of its syntax tree must be one that chat
   templates use: output, ``if``/``for``/``set``/``macro``, literals, comparisons, arithmetic,
   tests and filters from a fixed list, calls of its own macros, of ``raise_exception``,
   ``range``, ``namespace`` and of string/dict/list methods from a fixed list. Attribute and item
   names are literal (``message.role``, ``message['content']``) and never start with ``_``; no
   string literal holds ``__``; ``include``/``import``/``extends``, ``self``, ``cycler``,
   ``joiner``, ``lipsum`` and ``attr``/``format`` are refused. Constants are checked after
   parsing, so escapes are already decoded.
2. **Rendering.** The template is rendered in ``ImmutableSandboxedEnvironment`` with typical
   conversations, under a time limit and a bound on the strings ``*`` may build; any attempt to
   reach an unsafe attribute during rendering is a refusal, whatever the template's own handling.
"""

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

MAX_TEMPLATE_CHARS = 256 * 1024
RENDER_SECONDS = 2.0
MAX_BUILT_STRING = 1 << 20

_NODES = {
    "Template", "Output", "TemplateData", "If", "For", "Assign", "AssignBlock", "Macro", "CallBlock", "Scope",
    "Name", "Const", "Tuple", "List", "Dict", "Pair", "Keyword", "CondExpr", "Compare", "Operand", "And", "Or",
    "Not", "Neg", "Pos", "Add", "Sub", "Mul", "Div", "FloorDiv", "Mod", "Concat", "Getattr", "Getitem", "Slice",
    "Filter", "Test", "Call", "NSRef", "ExprStmt", "Continue", "Break", "With", "FilterBlock",
}
_FILTERS = {
    "trim", "tojson", "length", "count", "upper", "lower", "title", "capitalize", "default", "d", "join",
    "first", "last", "list", "string", "int", "float", "abs", "round", "replace", "safe", "escape", "e",
    "indent", "items", "dictsort", "selectattr", "rejectattr", "select", "reject", "map", "unique", "sort",
    "reverse", "sum", "min", "max", "batch", "slice", "wordcount", "truncate", "center", "striptags", "bool",
    "trimmed", "filesizeformat", "forceescape", "urlencode", "xmlattr",
}
_TESTS = {
    "defined", "undefined", "none", "string", "number", "integer", "float", "mapping", "sequence", "iterable",
    "boolean", "true", "false", "in", "equalto", "eq", "==", "ne", "!=", "lt", "le", "gt", "ge", "<", "<=", ">",
    ">=", "odd", "even", "divisibleby", "sameas", "lower", "upper", "escaped", "callable",
}
_GLOBALS_CALLED = {"raise_exception", "range", "namespace", "strftime_now", "dict"}
_METHODS = {
    "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith", "upper", "lower",
    "title", "capitalize", "replace", "find", "rfind", "count", "join", "items", "keys", "values", "get",
    "append", "index", "isdigit", "isalpha", "isspace", "copy", "pop", "update", "extend", "insert",
}
_REFUSED_NAMES = {"self", "cycler", "joiner", "lipsum", "config", "request", "url_for", "g", "session"}


class TemplateRefused(ValueError):
    """The template uses a construct or reaches something chat templates never need."""


@dataclass(frozen=True)
class TemplateVerdict:
    safe: bool
    reason: str


def _walk(node: Any) -> Iterator[Any]:
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)


def _static_check(source: str) -> set[str]:
    """Refuse constructs outside the allowlist; returns the names of the template's own macros."""
    from jinja2 import nodes
    from jinja2.exceptions import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"])
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateRefused(f"not a valid Jinja template: {exc.message} (line {exc.lineno})") from exc
    macros = {n.name for n in _walk(tree) if isinstance(n, nodes.Macro)}
    for node in _walk(tree):
        kind = type(node).__name__
        if kind not in _NODES:
            raise TemplateRefused(f"uses the {kind} construct, which chat templates do not need")
        if isinstance(node, nodes.Const) and isinstance(node.value, str) and "__" in node.value:
            raise TemplateRefused(f"string literal {node.value[:40]!r} names a dunder attribute")
        if isinstance(node, nodes.Name) and node.name in _REFUSED_NAMES:
            raise TemplateRefused(f"refers to {node.name!r}, which reaches objects outside the template")
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise TemplateRefused(f"reads the private attribute {node.attr!r}")
        if isinstance(node, nodes.Getitem):
            key = node.arg
            if isinstance(key, nodes.Const):
                if isinstance(key.value, str) and key.value.startswith("_"):
                    raise TemplateRefused(f"reads the private item {key.value!r}")
            elif not _arithmetic(key):
                raise TemplateRefused("subscript with a computed string key (how sandbox escapes are spelled)")
        if isinstance(node, nodes.Filter | nodes.Test):
            allowed = _FILTERS if isinstance(node, nodes.Filter) else _TESTS
            if node.name not in allowed:
                what = "filter" if isinstance(node, nodes.Filter) else "test"
                raise TemplateRefused(f"uses the {node.name!r} {what}")
        if isinstance(node, nodes.Call):
            target = node.node
            if isinstance(target, nodes.Name):
                if target.name not in _GLOBALS_CALLED and target.name not in macros:
                    raise TemplateRefused(f"calls {target.name!r}, which is neither a macro of the template nor "
                                          "an allowed global")
            elif isinstance(target, nodes.Getattr):
                if target.attr not in _METHODS:
                    raise TemplateRefused(f"calls the method {target.attr!r}")
            else:
                raise TemplateRefused("calls something that is not a named macro, global or method")
            if node.dyn_args is not None or node.dyn_kwargs is not None:
                raise TemplateRefused("calls with *args/**kwargs")
    return macros


def _arithmetic(node: Any) -> bool:
    """An index computed from names, attributes and integers only (``messages[loop.index0 - 1]``)."""
    from jinja2 import nodes

    if isinstance(node, nodes.Const):
        return isinstance(node.value, int) and not isinstance(node.value, bool)
    if isinstance(node, nodes.Name):
        return True
    if isinstance(node, nodes.Getattr):
        return not node.attr.startswith("_") and _arithmetic(node.node)
    if isinstance(node, nodes.Add | nodes.Sub | nodes.Mul | nodes.FloorDiv | nodes.Mod):
        return _arithmetic(node.left) and _arithmetic(node.right)
    if isinstance(node, nodes.Neg | nodes.Pos):
        return _arithmetic(node.node)
    if isinstance(node, nodes.Slice):
        return all(part is None or _arithmetic(part) for part in (node.start, node.stop, node.step))
    return False


def _conversations() -> list[dict[str, Any]]:
    tool = {"type": "function", "function": {"name": "get_weather", "description": "weather",
                                             "parameters": {"type": "object", "properties": {}}}}
    messages = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Weather?"}]
    called = [*messages, {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "id": "1", "function": {"name": "get_weather", "arguments": {}}}]},
              {"role": "tool", "content": "sunny", "tool_call_id": "1"}]
    common = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    return [
        {**common, "messages": messages, "add_generation_prompt": True},
        {**common, "messages": messages[1:], "add_generation_prompt": False},
        {**common, "messages": called, "tools": [tool], "add_generation_prompt": True},
        {**common, "messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": True},
    ]


def _render_check(source: str) -> None:
    from jinja2.exceptions import SecurityError, TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    attempts: list[str] = []

    class Recording(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
            safe = bool(super().is_safe_attribute(obj, attr, value))
            if not safe:
                attempts.append(f"{type(obj).__name__}.{attr}")
            return safe

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**":
                raise SecurityError("the power operator is refused")
            if isinstance(right, int) and isinstance(left, str | list) and len(left) * right > MAX_BUILT_STRING:
                raise SecurityError("a multiplication builds an oversized value")
            if isinstance(left, int) and isinstance(right, str | list) and len(right) * left > MAX_BUILT_STRING:
                raise SecurityError("a multiplication builds an oversized value")
            return super().call_binop(context, operator, left, right)

    def raise_exception(message: str) -> None:
        raise TemplateError(str(message))

    env = Recording(extensions=["jinja2.ext.loopcontrols"], trim_blocks=True, lstrip_blocks=True)
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda _fmt: "01 Dec 2026")
    try:
        template = env.from_string(source)
    except TemplateError as exc:
        raise TemplateRefused(f"does not compile in the sandbox: {exc}") from exc
    deadline = time.monotonic() + RENDER_SECONDS

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > deadline:
            raise TimeoutError("the template did not finish rendering within the time limit")
        return tracer

    previous = sys.gettrace()
    try:
        for variables in _conversations():
            sys.settrace(tracer)
            try:
                rendered = template.render(**variables)
            except SecurityError as exc:
                raise TemplateRefused(f"the sandbox stopped it while rendering: {exc}") from exc
            except TimeoutError as exc:
                raise TemplateRefused(str(exc)) from exc
            except (TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError):
                rendered = ""  # a template may refuse a conversation shape (raise_exception); not a finding
            finally:
                sys.settrace(previous)
            if len(rendered) > MAX_BUILT_STRING:
                raise TemplateRefused("renders an oversized prompt for a four-message conversation")
            if attempts:
                raise TemplateRefused(f"tried to reach {attempts[0]} while rendering (a sandbox escape)")
    finally:
        sys.settrace(previous)


def check_chat_template(source: str) -> TemplateVerdict:
    """Whether a chat template only does what chat templates do (see the module docstring)."""
    if len(source) > MAX_TEMPLATE_CHARS:
        return TemplateVerdict(False, f"template of {len(source)} characters (limit {MAX_TEMPLATE_CHARS})")
    try:
        _static_check(source)
        _render_check(source)
    except TemplateRefused as exc:
        return TemplateVerdict(False, str(exc))
    except RecursionError:
        return TemplateVerdict(False, "the template nests too deeply to check")
    return TemplateVerdict(True, "only chat-template constructs; renders in the sandbox")
