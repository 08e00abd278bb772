"""The shape of the code, enforced: layers, no import cycles, module size, one home per concept.

The import graph is read with :mod:`ast` (every import, also those inside functions: a
function-local import does not hide a cycle or a reach upwards). The layer table below is the
design; a module may import only modules of its own layer or lower ones.
"""

import ast
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

#: Layers, lowest first. A module's layer is the longest prefix listed here.
LAYERS: list[tuple[str, ...]] = [
    ("integrity", "integrity.errors", "integrity.safeio", "integrity.settings", "integrity.schemas",
     "integrity.canonical"),
    ("integrity.trust",),
    ("integrity.storage",),
    ("integrity.ledger",),
    ("integrity.scans",),
    ("integrity.intake",),
    ("integrity.release",),
    ("integrity.distribution",),
    ("integrity.cli",),
    ("pipelines",),
]
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for path in [*REPO.glob("integrity/**/*.py"), *REPO.glob("pipelines/**/*.py")]:
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _rank(module: str) -> int:
    best, rank = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            within = module == prefix or (prefix != "integrity" and module.startswith(prefix + "."))
            if within and len(prefix) > best:
                best, rank = len(prefix), index
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS"
    return rank


def _typing_only(tree: ast.Module) -> set[int]:
    """ids of import nodes under ``if TYPE_CHECKING:`` (never executed, so they cannot form a cycle)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            found.update(id(child) for child in ast.walk(node))
    return found


def _graph(*, runtime_only: bool = False) -> dict[str, set[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        skip = _typing_only(tree) if runtime_only else set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                           for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def test_no_import_reaches_a_higher_layer() -> None:
    upward = sorted(f"{source} -> {target}" for source, targets in _graph().items() for target in targets
                    if _rank(target) > _rank(source))
    assert upward == [], "imports from a higher layer:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    """Every import counts, function-local ones too; only ``if TYPE_CHECKING:`` imports (annotations) do not."""
    edges = _graph(runtime_only=True)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(_modules()):
        if module not in state:
            visit(module)
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_every_module_is_in_a_layer_and_under_the_size_limit() -> None:
    too_long = {}
    for name, path in _modules().items():
        _rank(name)
        lines = len(path.read_text().splitlines())
        if name.startswith("integrity") and lines > MAX_LINES:
            too_long[name] = lines
    assert too_long == {}, f"modules over {MAX_LINES} lines: {too_long}"


def test_every_layer_package_says_what_it_owns_and_may_import() -> None:
    for prefixes in LAYERS[1:-1]:
        init = REPO / prefixes[0].replace(".", "/") / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc, f"{init}: the docstring must say what the layer may import"


def test_boto3_backend_types_and_backends_stay_inside_storage() -> None:
    offenders = []
    for path in REPO.glob("integrity/**/*.py"):
        if path.is_relative_to(REPO / "integrity" / "storage"):
            continue
        text = path.read_text()
        for needle in ("boto3", "botocore", "isinstance(backend, S3Backend)", "S3Backend", "LocalBackend)"):
            if needle in text:
                offenders.append(f"{path.relative_to(REPO)}: {needle}")
        for node in ast.walk(ast.parse(text)):  # the store's own methods, never its backend
            if isinstance(node, ast.Attribute) and node.attr == "backend":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: .backend")
    assert offenders == []


def test_one_definition_of_the_release_index_names_and_one_parser() -> None:
    definitions, parsers = [], []
    for path in REPO.glob("integrity/**/*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == "release.json":
                definitions.append(str(path.relative_to(REPO)))
            if isinstance(node, ast.ClassDef) and node.name == "ReleaseIndex":
                parsers.append(str(path.relative_to(REPO)))
    assert definitions == ["integrity/release/index.py"] and parsers == ["integrity/release/index.py"]


def _imported_after(code: str) -> set[str]:
    probe = "import sys\n" + textwrap.dedent(code) + "\nprint('\\n'.join(sorted(sys.modules)))\n"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    return set(run.stdout.split())


def test_the_library_never_imports_dagster() -> None:
    loaded = _imported_after("""
        import importlib, pkgutil, integrity
        for m in pkgutil.walk_packages(integrity.__path__, "integrity."):
            if not m.name.endswith("__main__"):
                importlib.import_module(m.name)
    """)
    assert not {m for m in loaded if m == "dagster" or m.startswith("dagster.")}
    assert not {m for m in loaded if m == "pipelines" or m.startswith("pipelines.")}


def test_verify_hash_and_scan_import_no_torch_dagster_or_gx(tmp_path: Path) -> None:
    """A real hash, sign-then-verify and scan in one interpreter; then nothing heavy is loaded."""
    weights = tmp_path / "model.safetensors"
    header = b'{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}'
    weights.write_bytes(len(header).to_bytes(8, "little") + header + b"abcd")
    loaded = _imported_after(f"""
from integrity.cli.main import main
from integrity.trust.methods.key import KeySigner
from integrity.trust.signing import generate_key_pair, sign_artifact
generate_key_pair({str(tmp_path / "k.key")!r}, {str(tmp_path / "k.pub")!r})
sign_artifact({str(weights)!r}, KeySigner.from_file({str(tmp_path / "k.key")!r}))
codes = [main(["hash", {str(weights)!r}]), main(["scan", {str(weights)!r}]),
         main(["verify", {str(weights)!r}, "--key", {str(tmp_path / "k.pub")!r}])]
assert codes == [0, 0, 0], codes
""")
    heavy = {m.split(".")[0] for m in loaded} & {"torch", "dagster", "great_expectations", "pandas", "sklearn"}
    assert heavy == set(), heavy


def test_nothing_writes_the_process_environment() -> None:
    """Configuration is passed down, never smuggled through ``os.environ`` (pipelines once overwrote CAIRN_HOME)."""
    offenders = []
    for path in [*REPO.glob("integrity/**/*.py"), *REPO.glob("pipelines/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            target = None
            if isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
                targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
                target = next((t for t in targets if isinstance(t, ast.Subscript)
                               and ast.unparse(t.value) == "os.environ"), None)
            elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.putenv", "os.environ.update",
                                                                            "os.environ.pop"):
                target = node
            if target is not None:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
