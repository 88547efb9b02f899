"""The checked-in JSON Schemas match the typed models they are generated from."""

from pathlib import Path

import jsonschema
import pytest

from segpipe.pipeline.schemas import SCHEMAS, drifted, render

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"


def test_no_drift():
    assert drifted(SCHEMA_DIR) == [], "run `make schemas` and commit the result"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_valid_json_schema(name):
    import json

    jsonschema.Draft202012Validator.check_schema(json.loads(render(SCHEMAS[name])))


def test_category_map_schema_rejects_unknown_keys():
    import json

    schema = json.loads((SCHEMA_DIR / "category_map.schema.json").read_text())
    jsonschema.validate({"rename": {"a": "b"}, "drop": ["c"]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"renam": {"a": "b"}}, schema)
