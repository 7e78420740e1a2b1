"""The README's op coverage table agrees with the rule registry and with the tests it cites
(tests/op_coverage.py makes the table; `python tests/op_coverage.py --write` updates README.md)."""
from op_coverage import (INT16, ONERT, ONERT_MODULES, ROOT, litert_modules, markdown_table, mentions, readme_table,
                         registered)


def test_readme_table_is_the_registry_table():
    assert readme_table((ROOT / "README.md").read_text()) == markdown_table(), \
        "README.md's op coverage table is stale: run `python tests/op_coverage.py --write`"


def test_every_rule_has_a_litert_test():
    modules = litert_modules()
    assert {"test_lower_ops.py", "test_lower_quantized_shape.py"} <= set(modules)
    missing = [op for op in registered() if not any(mentions(module, op) for module in modules)]
    assert not missing, f"ops no test comparing with LiteRT names: {', '.join(sorted(missing))}"


def test_int16_and_onert_claims_name_registered_rules_and_their_tests():
    ops = registered()
    assert not [op for op in INT16 if "quantized" not in ops.get(op, ())], "INT16 lists ops without a quantized rule"
    for op, types in ONERT.items():
        needed = {"float" if t == "float" else "quantized" for t in types.split(", ")}
        assert needed <= ops.get(op, set()), f"ONERT claims {op} in {types} without such rules"
        assert any(mentions(module, op) for module in ONERT_MODULES), f"no onert test module names {op}"
    quantized_modules = [m for m in litert_modules() if m.startswith("test_lower_quantized")]
    assert not [op for op in INT16 if not any(mentions(m, op) for m in quantized_modules)]
