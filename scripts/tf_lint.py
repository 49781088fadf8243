#!/usr/bin/env python3
"""Lint of terraform/ that terraform fmt and checkov do not cover.

Run by scripts/terraform-check with a Python that has python-hcl2 installed:

    python tf_lint.py TERRAFORM_DIR
    python tf_lint.py --tables MODULE_DIR     # prints the README's input and output tables

Checks:
  - every .tf file parses;
  - every module under modules/ has main.tf, variables.tf, outputs.tf, versions.tf, README.md;
  - every variable has a type and a non-empty description; every output a description;
  - every module and example pins required_version, and every provider it uses has a source and
    a version constraint in required_providers;
  - the provider-free module (node-config) declares no provider and no resource or data source;
  - an output whose value comes from a password, secret key or user data is marked sensitive;
  - every module README has the input and output tables that `--tables` prints, row for row;
  - every `#checkov:skip=` comment names a check id and gives a reason (at least 40 characters),
    and there is no checkov config file that could skip checks out of sight.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import hcl2

REQUIRED_MODULE_FILES = ["main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"]
PROVIDER_FREE_MODULES = {"node-config"}
# Resource types served by Terraform itself, which need no required_providers entry.
BUILTIN_PREFIXES = {"terraform"}
SECRET_VALUE = re.compile(r"random_password\.|\.password\b|secret_key|\.secret\b|secrets_env|user_data")
SKIP_COMMENT = re.compile(r"#\s*checkov:skip=(?P<rest>.*)$")
SKIP_FORMAT = re.compile(r"^(?P<id>CKV2?_[A-Z0-9]+_[0-9]+):(?P<reason>.+)$")
MIN_REASON = 40


def unquote(value: object) -> str:
    """python-hcl2 keeps the quotes of string literals and wraps expressions in ${...}."""
    if not isinstance(value, str):
        return str(value)
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    return value


def expression(value: object) -> str:
    text = unquote(value) if isinstance(value, str) else value
    if isinstance(text, str) and text.startswith("${") and text.endswith("}"):
        return text[2:-1]
    return text if isinstance(text, str) else json.dumps(text)


def default_cell(body: dict) -> str:
    if "default" not in body:
        return "required"
    value = body["default"]
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return "`" + str(value).lower() + "`"
    if isinstance(value, str):
        if value.startswith("${"):
            return "`" + value[2:-1] + "`"
        return "`" + json.dumps(unquote(value)) + "`"
    return "`" + json.dumps(value) + "`"


def cell(text: str) -> str:
    return unquote(text).replace('\\"', '"').replace("|", "\\|")


def table_rows(directory: Path) -> tuple[dict[str, str], dict[str, str]]:
    """README rows, keyed by name, for the module's variables and outputs."""
    inputs, outputs = {}, {}
    for path in sorted(directory.glob("*.tf")):
        with path.open() as handle:
            doc = hcl2.load(handle)
        for name, body in blocks(doc, "variable"):
            inputs[name] = f"| `{name}` | `{expression(body.get('type', ''))}` | {default_cell(body)} | {cell(body.get('description', ''))} |"
        for name, body in blocks(doc, "output"):
            flag = " (sensitive)" if body.get("sensitive") is True else ""
            outputs[name] = f"| `{name}` | {cell(body.get('description', ''))}{flag} |"
    return inputs, outputs


def print_tables(directory: Path) -> None:
    inputs, outputs = table_rows(directory)
    print("## Inputs\n\n| Name | Type | Default | Description |\n|---|---|---|---|")
    print("\n".join(inputs.values()))
    print("\n## Outputs\n\n| Name | Description |\n|---|---|")
    print("\n".join(outputs.values()))


def blocks(doc: dict, kind: str) -> list[tuple[str, dict]]:
    """Labelled blocks of one kind: [(name, body)]."""
    found = []
    for entry in doc.get(kind, []):
        for name, body in entry.items():
            found.append((unquote(name), body))
    return found


def typed_blocks(doc: dict, kind: str) -> list[tuple[str, str, dict]]:
    """Blocks with two labels (resource, data): [(type, name, body)]."""
    found = []
    for entry in doc.get(kind, []):
        for rtype, named in entry.items():
            for name, body in named.items():
                found.append((unquote(rtype), unquote(name), body))
    return found


class Lint:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.errors: list[str] = []
        self.counts = {"files": 0, "variables": 0, "outputs": 0, "skips": 0, "dirs": 0}

    def error(self, where: Path | str, message: str) -> None:
        rel = where.relative_to(self.root.parent) if isinstance(where, Path) else where
        self.errors.append(f"{rel}: {message}")

    def parse_dir(self, directory: Path) -> dict[str, dict]:
        docs = {}
        for path in sorted(directory.glob("*.tf")):
            self.counts["files"] += 1
            try:
                with path.open() as handle:
                    docs[path.name] = hcl2.load(handle)
            except Exception as exc:  # noqa: BLE001 - any parse failure is a lint failure
                self.error(path, f"does not parse: {exc}")
        return docs

    def check_dir(self, directory: Path, is_module: bool) -> None:
        self.counts["dirs"] += 1
        docs = self.parse_dir(directory)
        if is_module:
            for name in REQUIRED_MODULE_FILES:
                if not (directory / name).is_file():
                    self.error(directory, f"module lacks {name}")

        variables, outputs = [], []
        providers_used: set[str] = set()
        terraform_blocks = []
        for filename, doc in docs.items():
            path = directory / filename
            for name, body in blocks(doc, "variable"):
                variables.append(name)
                self.counts["variables"] += 1
                if "type" not in body:
                    self.error(path, f'variable "{name}" has no type')
                if not unquote(body.get("description", "")).strip():
                    self.error(path, f'variable "{name}" has no description')
            for name, body in blocks(doc, "output"):
                outputs.append(name)
                self.counts["outputs"] += 1
                if not unquote(body.get("description", "")).strip():
                    self.error(path, f'output "{name}" has no description')
                if SECRET_VALUE.search(str(body.get("value", ""))) and body.get("sensitive") is not True:
                    self.error(path, f'output "{name}" carries a secret but is not sensitive = true')
            for kind in ("resource", "data"):
                for rtype, name, _ in typed_blocks(doc, kind):
                    prefix = rtype.split("_", 1)[0]
                    if prefix not in BUILTIN_PREFIXES:
                        providers_used.add(prefix)
                    if directory.name in PROVIDER_FREE_MODULES and is_module:
                        self.error(path, f'{kind} "{rtype}.{name}" in a module that must stay provider-free')
            terraform_blocks.extend(doc.get("terraform", []))
            if directory.name in PROVIDER_FREE_MODULES and is_module and doc.get("provider"):
                self.error(path, "provider block in a module that must stay provider-free")

        self.check_versions(directory, terraform_blocks, providers_used, is_module)
        if is_module:
            self.check_readme(directory, variables, outputs)

    def check_versions(self, directory: Path, terraform_blocks: list, used: set[str], is_module: bool) -> None:
        versions = directory / "versions.tf"
        if not terraform_blocks:
            self.error(versions, "no terraform block")
            return
        required_version = any("required_version" in block for block in terraform_blocks)
        if not required_version:
            self.error(versions, "no required_version")
        declared: dict[str, dict] = {}
        for block in terraform_blocks:
            for entry in block.get("required_providers", []):
                for name, spec in entry.items():
                    if name.startswith("__"):
                        continue
                    declared[name] = spec if isinstance(spec, dict) else {}
        for name, spec in declared.items():
            if "source" not in spec or "version" not in spec:
                self.error(versions, f'provider "{name}" needs both source and version')
        if is_module and directory.name in PROVIDER_FREE_MODULES and declared:
            self.error(versions, "the provider-free module declares providers")
        for name in sorted(used - set(declared)):
            self.error(versions, f'provider "{name}" is used but not in required_providers')

    def check_readme(self, directory: Path, variables: list[str], outputs: list[str]) -> None:
        readme = directory / "README.md"
        if not readme.is_file():
            return
        lines = set(readme.read_text().splitlines())
        inputs, outs = table_rows(directory)
        hint = f"run: python scripts/tf_lint.py --tables {directory.relative_to(self.root.parent)}"
        for kind, rows in (("input", inputs), ("output", outs)):
            for name, row in rows.items():
                if row not in lines:
                    self.error(readme, f'table row for {kind} "{name}" is missing or stale ({hint})')

    def check_skips(self) -> None:
        for path in sorted(self.root.rglob("*.tf")):
            if ".terraform" in path.parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                match = SKIP_COMMENT.search(line)
                if not match:
                    continue
                self.counts["skips"] += 1
                rule = SKIP_FORMAT.match(match.group("rest").strip())
                where = f"{path.relative_to(self.root.parent)}:{number}"
                if not rule:
                    self.error(where, "checkov skip must read #checkov:skip=CKV_..._N:reason")
                elif len(rule.group("reason").strip()) < MIN_REASON:
                    self.error(where, f"checkov skip of {rule.group('id')} needs a real reason (>= {MIN_REASON} characters)")
        for config in [".checkov.yaml", ".checkov.yml"]:
            for path in [self.root / config, self.root.parent / config]:
                if path.exists():
                    self.error(path, "checkov config files are not allowed: skip inline, with a reason")

    def run(self) -> int:
        modules = sorted(p for p in (self.root / "modules").iterdir() if p.is_dir())
        examples = sorted(p for p in (self.root / "examples").iterdir() if p.is_dir())
        if not modules:
            self.error(self.root, "no modules under modules/")
        for directory in modules:
            self.check_dir(directory, is_module=True)
        for directory in examples:
            self.check_dir(directory, is_module=False)
        self.check_skips()
        for line in self.errors:
            print(f"  lint: {line}")
        c = self.counts
        print(
            f"  lint: {c['dirs']} directories ({len(modules)} modules, {len(examples)} examples), "
            f"{c['files']} files, {c['variables']} variables, {c['outputs']} outputs, {c['skips']} checkov skips: "
            + ("ok" if not self.errors else f"{len(self.errors)} problems")
        )
        return 1 if self.errors else 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--tables":
        print_tables(Path(sys.argv[2]))
        return 0
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    return Lint(Path(sys.argv[1]).resolve()).run()


if __name__ == "__main__":
    sys.exit(main())
