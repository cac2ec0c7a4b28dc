"""Checks that `BUILD` is true to the tree (Bazel cannot run offline here, so a test does).

`BUILD` is valid Python syntax: it is parsed with `ast`, never executed. Problems found:
  * a module under a package directory, or a `tests/test_*.py`, that no target lists;
  * a test file without a `py_test`;
  * a listed source file that does not exist;
  * a `:local` dependency that names no target;
  * an `@pypi//name` dependency that `pyproject.toml` does not declare;
  * a third-party import in a target's sources without the matching `@pypi//` dependency.
"""

import ast
import dataclasses
import importlib.metadata
import pathlib
import re
import sys
import tomllib

PACKAGE_DIRS = ("swiftjax", "graphs", "serving", "launch", "tests", "bench")
RULES = ("py_library", "py_binary", "py_test")
_OWN_TOP_LEVEL = {"swiftjax", "graphs", "serving", "launch", "tests", "bench"}
# Benchmark-only packages that the test install leaves out (PyG's compiled samplers build from
# source against the pinned torch for ~20 minutes): module -> its distribution, which must be
# declared in a pyproject extra and named as an @pypi// dependency like any other.
OPTIONAL_IMPORTS = {"torch_geometric": "torch-geometric", "torch_sparse": "torch-sparse"}


@dataclasses.dataclass
class Target:
  rule: str
  name: str
  srcs: list[str]
  deps: list[str]
  line: int


def normalize(dist: str) -> str:
  """PEP 503 name normalisation, with `_` as rules_python spells hub labels."""
  return re.sub(r"[-_.]+", "_", dist).lower()


def parse_build(path: pathlib.Path) -> list[Target]:
  tree = ast.parse(path.read_text(), filename=str(path))
  targets = []
  for node in tree.body:
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
      continue
    call = node.value
    if not (isinstance(call.func, ast.Name) and call.func.id in RULES):
      continue
    kw = {k.arg: k.value for k in call.keywords}

    def strings(key):
      value = kw.get(key)
      if value is None:
        return []
      if not isinstance(value, ast.List):
        raise ValueError(f"{path}:{call.lineno}: {key} must be a literal list (no glob)")
      return [ast.literal_eval(e) for e in value.elts]

    targets.append(Target(call.func.id, ast.literal_eval(kw["name"]), strings("srcs"),
                          strings("deps"), call.lineno))
  return targets


def declared_dependencies(pyproject: pathlib.Path) -> set[str]:
  data = tomllib.loads(pyproject.read_text())
  project = data["project"]
  reqs = list(project.get("dependencies", []))
  for extra in project.get("optional-dependencies", {}).values():
    reqs.extend(extra)
  return {normalize(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in reqs}


def _imported_top_levels(source: pathlib.Path) -> set[str]:
  tree = ast.parse(source.read_text(), filename=str(source))
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(a.name.split(".")[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names.add(node.module.split(".")[0])
  return names


def check(root: pathlib.Path) -> list[str]:
  """Returns the list of problems (empty when BUILD matches the tree)."""
  build = root / "BUILD"
  targets = parse_build(build)
  problems = []
  by_name = {t.name: t for t in targets}
  listed = {}
  for t in targets:
    for s in t.srcs:
      listed[s] = t
      if not (root / s).is_file():
        problems.append(f"BUILD:{t.line}: target {t.name} lists {s}, which does not exist")
  for d in PACKAGE_DIRS:
    for f in sorted((root / d).rglob("*.py")) if (root / d).is_dir() else []:
      rel = f.relative_to(root).as_posix()
      if rel not in listed:
        problems.append(f"{rel} is not in any BUILD target's srcs")
      elif d == "tests" and f.name.startswith("test_") and listed[rel].rule != "py_test":
        problems.append(f"{rel} is a test file but its target {listed[rel].name} is not a py_test")
  declared = declared_dependencies(root / "pyproject.toml")
  dist_of = importlib.metadata.packages_distributions()
  stdlib = set(sys.stdlib_module_names)
  for t in targets:
    pypi = set()
    for dep in t.deps:
      if dep.startswith(":"):
        if dep[1:] not in by_name:
          problems.append(f"BUILD:{t.line}: {t.name} depends on {dep}, which is not a target")
      elif dep.startswith("@pypi//"):
        name = normalize(dep[len("@pypi//"):])
        pypi.add(name)
        if name not in declared:
          problems.append(f"BUILD:{t.line}: {t.name} depends on {dep}, "
                          "which pyproject.toml does not declare")
      else:
        problems.append(f"BUILD:{t.line}: {t.name} has dependency {dep} of unknown form")
    # Third-party imports need their @pypi dependency on this target or a local one it uses.
    reachable = set(pypi)
    stack = [d[1:] for d in t.deps if d.startswith(":")]
    seen = set()
    while stack:
      n = stack.pop()
      if n in seen or n not in by_name:
        continue
      seen.add(n)
      reachable.update(normalize(d[len("@pypi//"):]) for d in by_name[n].deps
                       if d.startswith("@pypi//"))
      stack.extend(d[1:] for d in by_name[n].deps if d.startswith(":"))
    for s in t.srcs:
      if not (root / s).is_file():
        continue
      for mod in sorted(_imported_top_levels(root / s)):
        if mod in stdlib or mod in _OWN_TOP_LEVEL or mod == "__future__":
          continue
        dists = {normalize(d) for d in dist_of.get(mod, [])}
        if not dists and mod in OPTIONAL_IMPORTS:
          dists = {normalize(OPTIONAL_IMPORTS[mod])}
        if not dists:
          problems.append(f"{s} imports {mod}, which no installed distribution provides")
        elif not dists & reachable:
          problems.append(f"BUILD:{t.line}: {t.name} lacks @pypi//{sorted(dists)[0]} "
                          f"for `import {mod}` in {s}")
  return problems


if __name__ == "__main__":
  found = check(pathlib.Path(__file__).resolve().parent.parent)
  print("\n".join(found) or "BUILD matches the tree")
  sys.exit(1 if found else 0)
