#!/usr/bin/env python3
"""Turns CustomResourceDefinitions into strict JSON Schemas for check-jsonschema.

    gen-crd-schemas.py OUT_DIR CRD.yaml...

For each served version of each CRD it writes OUT_DIR/<group>/<kind>_<version>.json (kind in
lower case): the version's openAPIV3Schema as JSON Schema (draft 2020-12), with
- `additionalProperties: false` on every object that lists its properties and does not ask
  for unknown fields to be kept (`x-kubernetes-preserve-unknown-fields`), so a misspelt field
  fails, as `kubectl apply --validate=strict` would;
- `apiVersion` and `kind` fixed to the CRD's, and `metadata` checked like a namespaced
  object's (name, namespace, labels, annotations);
- `x-kubernetes-int-or-string` as integer-or-string, `nullable` as a null alternative, and
  Go's `(?i)` in a pattern spelt out for ECMA-262 regexes.

deploy/schemas/README.md names the CRDs (and their release) the committed schemas came from.
"""

import json
import pathlib
import sys

import yaml

METADATA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def ecma_pattern(pattern):
    """Go's case-insensitive flag `(?i)` has no ECMA-262 spelling: spell each letter both ways.
    (A pattern with its own character classes would need more; none of these CRDs has one.)"""
    if "(?i)" not in pattern:
        return pattern
    body = pattern.replace("(?i)", "")
    if "[" in body or "\\" in body:
        raise SystemExit(f"gen-crd-schemas: cannot translate pattern {pattern!r}")
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in body)


def strict(node):
    """The JSON Schema of one openAPIV3Schema node, made strict."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("x-kubernetes-int-or-string", "nullable", "x-kubernetes-preserve-unknown-fields"):
            continue
        if key.startswith("x-kubernetes-"):
            continue  # list-type, map-keys, validations: for the API server, not for the shape
        if key in ("properties", "patternProperties"):
            out[key] = {name: strict(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = strict(value) if isinstance(value, dict) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = strict(value)
        elif key == "pattern":
            out[key] = ecma_pattern(value)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}] + out.get("anyOf", [])
    keeps_unknown = node.get("x-kubernetes-preserve-unknown-fields")
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out and not keeps_unknown:
        out["additionalProperties"] = False
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def main(out_dir, crd_paths):
    out_dir = pathlib.Path(out_dir)
    for path in crd_paths:
        for crd in yaml.safe_load_all(pathlib.Path(path).read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            group, kind = spec["group"], spec["names"]["kind"]
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                schema = strict(version["schema"]["openAPIV3Schema"])
                schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
                schema["title"] = f"{kind} {group}/{version['name']} (strict)"
                props = schema.setdefault("properties", {})
                props["apiVersion"] = {"const": f"{group}/{version['name']}"}
                props["kind"] = {"const": kind}
                props["metadata"] = METADATA
                schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
                schema["additionalProperties"] = False
                target = out_dir / group / f"{kind.lower()}_{version['name']}.json"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
                print(f"gen-crd-schemas: {target}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
