"""The README's op coverage table agrees with the rule registry and with the tests it cites
(tests/op_coverage.py makes the table; `python tests/op_coverage.py --write` updates README.md)."""
from op_coverage import (INT16, LITERT_MODULES, ONERT, ONERT_MODULES, ROOT, markdown_table, mentions, readme_table,
                         registered)


def test_readme_table_is_the_registry_table():
    assert readme_table((ROOT / "README.md").read_text()) == markdown_table(), \
        "README.md's op coverage table is stale: run `python tests/op_coverage.py --write`"


def test_every_rule_has_a_litert_test_of_its_family():
    missing = [f"{op} ({family})" for op, families in registered().items() for family in families
               if not any(mentions(module, op) for module in LITERT_MODULES[family])]
    assert not missing, f"rules no single-op LiteRT test names: {', '.join(sorted(missing))}"


def test_int16_and_onert_claims_name_registered_rules_and_their_tests():
    ops = registered()
    assert not [op for op in INT16 if "quantized" not in ops.get(op, ())], "INT16 lists ops without a quantized rule"
    for op, types in ONERT.items():
        needed = {"float" if t == "float" else "quantized" for t in types.split(", ")}
        assert needed <= ops.get(op, set()), f"ONERT claims {op} in {types} without such rules"
        assert any(mentions(module, op) for module in ONERT_MODULES), f"no onert test module names {op}"
    assert not [op for op in INT16 if not any(mentions(m, op) for m in LITERT_MODULES["quantized"])]
