#!/usr/bin/env python3
"""Checks the layout rules of docs/architecture.md; CI runs it (ctest: layout).

  - core/ is laid out by part, and dependencies point one way:
      base <- tensor <- autograd <- ops <- data <- host
    A file of one part includes another part's headers ("ops/internal.h") only when that part comes
    earlier; the installed headers (nnr/...) are for everyone. core/CMakeLists.txt links each part's
    target (nnr_<part>) only to earlier parts, and the engine (base, tensor, autograd, ops) links no
    Lua, no MPI and no image codec.
  - No file under core/ over 600 lines; no C function over 80 lines.
  - core/ tests no plugin name and no device number: device roles come from declared properties.
  - Plugins and the examples include only installed headers (nnr/...) and their own files.

  check_layout.py [ROOT]         check the tree at ROOT (default: this checkout)
  check_layout.py --self-test    also show that a wrong-way include and link are caught
Exit status 0 when every rule holds; otherwise each violation is printed and the status is 1.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

PARTS = ["base", "tensor", "autograd", "ops", "data", "host"]
ENGINE = {"base", "tensor", "autograd", "ops"}
# external libraries a part may link (CMake names as written in core/CMakeLists.txt)
ALLOWED_LINKS = {
    "base": {"Threads::Threads", "${CMAKE_DL_LIBS}", "m"},
    "tensor": {"m"},
    "autograd": set(),
    "ops": {"m"},
    "data": {"ZLIB::ZLIB", "PkgConfig::CJSON", "PkgConfig::LIBUV", "PkgConfig::LIBPNG", "PkgConfig::TURBOJPEG", "PkgConfig::PROTOBUF_C",
             "${ISAL_LIBRARY}", "m"},
    "host": {"PkgConfig::LUAJIT", "MPI::MPI_C"},
}
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def rank(part):
    return PARTS.index(part)


def part_of(path, core):
    rel = os.path.relpath(path, core).split(os.sep)
    return rel[0] if rel[0] in PARTS else None


def sources(top, exts=(".c", ".h", ".cu", ".cuh")):
    for dirpath, _, files in os.walk(top):
        for f in sorted(files):
            if f.endswith(exts):
                yield os.path.join(dirpath, f)


def check_includes(core, errors):
    for path in sources(core):
        if os.sep + "include" + os.sep in path:
            continue
        mine = part_of(path, core)
        if mine is None:
            errors.append(f"{path}: a core source outside the parts ({', '.join(PARTS)})")
            continue
        text = open(path, encoding="utf-8").read()
        for m in INCLUDE.finditer(text):
            target = m.group(1)
            head = target.split("/")[0]
            line = text.count("\n", 0, m.start()) + 1
            if head == "nnr":
                continue
            if head not in PARTS:
                errors.append(f"{path}:{line}: #include \"{target}\": name the part (\"{mine}/...\") or an installed header (\"nnr/...\")")
            elif rank(head) > rank(mine):
                errors.append(f"{path}:{line}: {mine} includes \"{target}\": {head} comes after {mine} "
                              f"({' <- '.join(PARTS)}), a wrong-way edge")


def cmake_calls(text, command):
    """(target, arguments) of each command(target args...) call, comments removed"""
    text = re.sub(r"#[^\n]*", "", text)
    for m in re.finditer(command + r"\s*\(\s*([\w:]+)([^)]*)\)", text):
        yield m.group(1), m.group(2).split()


def check_links(core, errors):
    path = os.path.join(core, "CMakeLists.txt")
    text = open(path, encoding="utf-8").read()
    seen = set()
    for target, args in cmake_calls(text, "target_link_libraries"):
        if not target.startswith("nnr_") or target[4:] not in PARTS:
            continue
        mine = target[4:]
        seen.add(mine)
        for a in args:
            if a in ("PUBLIC", "PRIVATE", "INTERFACE"):
                continue
            if a.startswith("nnr_") and a[4:] in PARTS:
                if rank(a[4:]) >= rank(mine):
                    errors.append(f"{path}: {target} links {a}: {a[4:]} does not come before {mine}, a wrong-way edge")
            elif a not in ALLOWED_LINKS[mine]:
                why = " (the engine links no Lua, no MPI and no image codec)" if mine in ENGINE else ""
                errors.append(f"{path}: {target} links {a}, not among the libraries {mine} may use{why}")
    for part in PARTS:
        if part not in seen and any(True for _ in sources(os.path.join(core, part), (".c",))):
            errors.append(f"{path}: no target_link_libraries(nnr_{part} ...): the part's dependencies are not declared")


def functions(text):
    """(name, first line, body lines) of each C function whose braces sit in column 0"""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if lines[i] == "{":
            j = i - 1
            while j >= 0 and lines[j].strip() and not lines[j].rstrip().endswith((";", "}")) and not lines[j].startswith(("#", "/*", " *")):
                j -= 1
            head = " ".join(l.strip() for l in lines[j + 1:i])
            m = re.search(r"(\w+)\s*\(", head)
            k = i + 1
            while k < len(lines) and lines[k] != "}":
                k += 1
            if m and "=" not in head.split("(")[0]:
                yield m.group(1), j + 2, k - i - 1
            i = k
        i += 1


def check_sizes(core, errors):
    for path in sources(core):
        text = open(path, encoding="utf-8").read()
        n = text.count("\n")
        if n > MAX_FILE_LINES:
            errors.append(f"{path}: {n} lines (at most {MAX_FILE_LINES}): split it by idea")
        if path.endswith((".c", ".h")):
            for name, line, body in functions(text):
                if body > MAX_FUNCTION_LINES:
                    errors.append(f"{path}:{line}: {name}() has {body} lines (at most {MAX_FUNCTION_LINES})")


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


DEVICE_NUMBER = re.compile(r"(\bdevice\b|->device|\.device)\s*[!=]=\s*\d|\b\d\s*[!=]=\s*(\w+->)?device\b|nnr_device_get\(\s*\d")


def check_no_backdoors(core, root, errors):
    names = {"cpu", "cuda", "quant", "testdev"}
    plugins_dir = os.path.join(root, "plugins")
    if os.path.isdir(plugins_dir):
        names |= set(os.listdir(plugins_dir))
    for path in sources(core, (".c",)):
        code = strip_comments(open(path, encoding="utf-8").read())
        for no, line in enumerate(code.split("\n"), 1):
            for s in re.findall(r'"((?:[^"\\]|\\.)*)"', line):
                if s in names or re.fullmatch(r"(lib)?nnr_(%s)(\.so)?" % "|".join(names), s):
                    errors.append(f"{path}:{no}: the plugin name \"{s}\" in the core: ask supports() or a declared property")
            if DEVICE_NUMBER.search(line):
                errors.append(f"{path}:{no}: a device number tested in the core: use the host device or a device property")


def check_plugin_includes(root, errors):
    for top in ("plugins", "examples", os.path.join("tests", "c", "plugins")):
        base = os.path.join(root, top)
        if not os.path.isdir(base):
            continue
        for path in sources(base):
            text = open(path, encoding="utf-8").read()
            for m in INCLUDE.finditer(text):
                target = m.group(1)
                line = text.count("\n", 0, m.start()) + 1
                if target.startswith("nnr/"):
                    if not os.path.exists(os.path.join(root, "core", "include", target)):
                        errors.append(f"{path}:{line}: \"{target}\" is not an installed header")
                elif not os.path.exists(os.path.join(os.path.dirname(path), target)):
                    errors.append(f"{path}:{line}: \"{target}\" is neither the plugin's own file nor an installed header (nnr/...)")


def check(root):
    core = os.path.join(root, "core")
    errors = []
    check_includes(core, errors)
    check_links(core, errors)
    check_sizes(core, errors)
    check_no_backdoors(core, root, errors)
    check_plugin_includes(root, errors)
    return errors


def self_test(root):
    """a copy of the tree with one wrong-way include and one wrong-way link must fail, naming both"""
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "tree")
        shutil.copytree(os.path.join(root, "core"), os.path.join(copy, "core"))
        shutil.copytree(os.path.join(root, "plugins"), os.path.join(copy, "plugins"))
        victim = os.path.join(copy, "core", "tensor", "storage.c")
        text = open(victim, encoding="utf-8").read()
        open(victim, "w", encoding="utf-8").write('#include "ops/internal.h"\n' + text)
        cm = os.path.join(copy, "core", "CMakeLists.txt")
        text = open(cm, encoding="utf-8").read()
        open(cm, "w", encoding="utf-8").write(text + "\ntarget_link_libraries(nnr_autograd PRIVATE nnr_data)\n")
        errors = check(copy)
        include_caught = any("tensor includes \"ops/internal.h\"" in e for e in errors)
        link_caught = any("nnr_autograd links nnr_data" in e for e in errors)
        for e in errors:
            print("  (self-test, expected) " + e)
        return include_caught and link_caught


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    root = os.path.abspath(args[0] if args else os.path.join(os.path.dirname(__file__), ".."))
    errors = check(root)
    for e in errors:
        print(e)
    status = 0 if not errors else 1
    if "--self-test" in argv:
        if self_test(root):
            print("self-test: a wrong-way include (tensor -> ops) and a wrong-way link (autograd -> data) are caught")
        else:
            print("self-test FAILED: a wrong-way include or link went unnoticed")
            status = 1
    if not errors:
        print(f"layout: {' <- '.join(PARTS)} holds; files <= {MAX_FILE_LINES} lines, functions <= {MAX_FUNCTION_LINES}; "
              "no plugin names or device numbers in core/; plugins include installed headers only")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
