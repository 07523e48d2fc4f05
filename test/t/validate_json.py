"""Validate JSON lines against a JSON Schema (draft 2020-12), for the
prove tests of test/t.

    /usr/bin/python3 test/t/validate_json.py SCHEMA < lines.jsonl

Checks the schema itself first (exit status 2 when it is not a valid
draft 2020-12 schema), then prints one JSON line per input line:
{"line": 1, "valid": true, "errors": []}, with each error's path and
message.  A line that is not JSON is reported as invalid.  Exit status 0
once every line has been checked, whatever the results: the test judges
them.  Uses Debian's python3-jsonschema.
"""

import json
import sys

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        print("%s: not a valid schema: %s" % (sys.argv[1], error.message),
              file=sys.stderr)
        sys.exit(2)
    validator = Draft202012Validator(schema)
    stdin = open(sys.stdin.fileno(), encoding="utf-8", errors="strict",
                 newline="\n")
    for lineno, line in enumerate(stdin, 1):
        try:
            instance = json.loads(line)
        except ValueError as error:
            errors = ["not JSON: %s" % error]
        else:
            errors = ["%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(top)",
                                  e.message)
                      for e in validator.iter_errors(instance)]
        print(json.dumps({"line": lineno, "valid": not errors, "errors": errors}))


if __name__ == "__main__":
    main()
