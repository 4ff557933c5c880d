"""Holds src/ to the layer table of src/lib.rs: imports point one way, down the table.

Why: the boot check and the shared file helpers once made a cycle of seven modules (check
used assemble's names and deploy's SHA256SUMS while deploy used check; safe_fs returned the
crate-level Error, which wraps check's and spec's errors; spec used check), and nothing noticed.
This reads which modules each top-level module of src/ names through `crate::` (as
/work/shared/tools/modcycles.py does: test modules and comments do not count) and requires the
table in lib.rs's doc to say exactly that, with every module's imports listed below it, which
rules out a cycle. A new import therefore fails here until lib.rs says where it goes.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def strip(text):
    """Rust source without its test module and comments (doc links are not imports)."""
    text = re.sub(r"(?s)#\[cfg\(test\)\]\s*mod tests\b.*", "", text)
    return re.sub(r"//[^\n]*", "", text)


def crate_names(text):
    """The first segment of every path that starts at `crate::`, in use lists too, however deep
    (`crate::{a::{B, C}, d}` names a and d)."""
    names = set(re.findall(r"\bcrate::(\w+)", text))
    for start in (m.end() for m in re.finditer(r"\bcrate::\{", text)):
        depth, item_start = 1, True
        for token in re.finditer(r"\w+|[{},]", text[start:]):
            t = token.group()
            if t == "{":
                depth += 1
            elif t == "}":
                depth -= 1
                if depth == 0:
                    break
            elif t == ",":
                item_start = depth == 1
            elif item_start and depth == 1:
                names.add(t)
                item_start = False
    return names


def lib():
    return (SRC / "lib.rs").read_text(encoding="utf-8")


def declared_modules():
    return set(re.findall(r"^(?:pub )?mod ([a-z_][a-z0-9_]*);", lib(), re.M))


def reexports():
    """Names lib.rs re-exports at the crate root (`crate::Error`), by the module they are from."""
    return dict((name, module) for module, name in re.findall(r"^pub use ([a-z_]+)::(\w+);", lib(), re.M))


def imports():
    """Module -> the set of other top-level modules its source names through `crate::`."""
    modules = declared_modules()
    aliases = reexports()
    graph = {}
    for path in sorted(SRC.rglob("*.rs")):
        top = path.relative_to(SRC).parts[0].removesuffix(".rs")
        if top in ("lib", "main"):
            continue
        text = strip(path.read_text(encoding="utf-8"))
        used = {aliases.get(n, n) for n in crate_names(text)}
        graph.setdefault(top, set()).update(n for n in used if n in modules and n != top)
    return graph


def table():
    """The rows of lib.rs's layer table, top to bottom: (module, set of modules it uses)."""
    rows = []
    for line in lib().splitlines():
        m = re.match(r"^//! \| (?:\[`(\w+)`\]|`(\w+)`) \|.*\| ([^|]*) \|$", line)
        if m:
            uses = m.group(3).strip()
            used = set() if uses == "-" else {u.strip() for u in uses.split(",")}
            rows.append((m.group(1) or m.group(2), used))
    return rows


def test_the_table_lists_every_module_once():
    names = [name for name, _ in table()]
    assert len(names) == len(set(names)), names
    assert set(names) == declared_modules()


def test_the_table_says_what_each_module_uses():
    graph = imports()
    documented = dict(table())
    wrong = {m: (sorted(documented.get(m, ())), sorted(used)) for m, used in graph.items()
             if documented.get(m) != used}
    assert not wrong, "module: (lib.rs says, the code uses): %s" % wrong


def test_imports_point_down_the_table():
    rows = table()
    below = {}
    for i, (name, _) in enumerate(rows):
        below[name] = {n for n, _ in rows[i + 1:]}
    upward = {m: sorted(used - below[m]) for m, used in imports().items() if used - below[m]}
    assert not upward, "imports of a module at or above the importer: %s" % upward


def test_the_reader_sees_imports():
    """The parsing itself: a use list, a path, a re-exported name; not a test module or comment."""
    text = ("use crate::{blob_set::{Record, ROOTFS}, check};\nfn f() { crate::spec::x(); crate::Error }\n"
            "// crate::deploy\n#[cfg(test)]\nmod tests { use crate::demo; }\n")
    stripped = strip(text)
    assert "crate::deploy" not in stripped and "crate::demo" not in stripped
    assert crate_names(stripped) == {"blob_set", "check", "spec", "Error"}
    assert reexports()["Error"] == "error"
