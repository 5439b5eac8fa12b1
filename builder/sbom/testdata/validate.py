# Validates a CycloneDX 1.6 JSON document against the official schema,
# with python3-jsonschema (not the library that wrote it). The schemas
# are vendored beside this file, from
# https://github.com/CycloneDX/specification/tree/e02a34ae42a48239f54e04f75280b9000b29f1fb/schema
# (bom-1.6.schema.json and the two it refers to); the store keeps the
# resolver from ever going to the network.
# usage: python3 validate.py SCHEMA_DIR DOCUMENT
import json
import sys

import jsonschema

schema_dir, doc = sys.argv[1], sys.argv[2]
store = {}
for name in ("bom-1.6.schema.json", "spdx.schema.json", "jsf-0.82.schema.json"):
    with open(schema_dir + "/" + name) as f:
        s = json.load(f)
    store[s["$id"]] = s
bom = store["http://cyclonedx.org/schema/bom-1.6.schema.json"]
resolver = jsonschema.RefResolver.from_schema(bom, store=store)
validator = jsonschema.Draft7Validator(bom, resolver=resolver, format_checker=jsonschema.FormatChecker())
with open(doc) as f:
    errors = sorted(validator.iter_errors(json.load(f)), key=lambda e: list(e.absolute_path))
for e in errors:
    print("/".join(str(p) for p in e.absolute_path) + ": " + e.message)
sys.exit(1 if errors else 0)
