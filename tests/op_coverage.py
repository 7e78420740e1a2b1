"""The README's op coverage table, made from the rule registry and from what the tests check.

    python tests/op_coverage.py            # print the table
    python tests/op_coverage.py --write    # rewrite it in README.md (between the op-coverage markers)

Columns: whether a float rule (which also covers plain integer and bool tensors) and a
quantized rule are registered, whether the quantized rule takes int16 activations (LiteRT's
16x8 scheme: int16 activations, int8 weights), and the reference engines the tests compare it
with. Every rule is compared with LiteRT's builtin kernels (test_op_coverage.py checks that a
test module comparing with LiteRT names the op); the onert and int16 claims are listed below
and checked against the modules that make them.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
BEGIN, END = "<!-- op-coverage:begin -->", "<!-- op-coverage:end -->"



def litert_modules() -> list[str]:
    """The test modules that compare jaxfuse with LiteRT (they call run_litert or
    assert_matches_litert, or import their checks from a test module that does), with the
    local helper modules they import models from."""
    texts = {path.name: path.read_text() for path in TESTS.glob("test_*.py")}
    direct = {name for name, text in texts.items() if re.search(r"\b(run_litert|assert_matches_litert)\b", text)}
    found = set()
    for name, text in texts.items():
        imported = re.findall(r"^(?:from|import) (\w+)", text, re.M)
        if name in direct or any(f"{m}.py" in direct for m in imported if m.startswith("test_")):
            found.add(name)
            found.update(f"{m}.py" for m in imported if not m.startswith("test_") and (TESTS / f"{m}.py").exists())
    return sorted(found)


# quantized rules whose int16 form is compared with LiteRT
INT16 = {
    "ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "RELU", "RELU6", "LEAKY_RELU", "LOGISTIC", "TANH",
    "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN",
    "SOFTMAX", "PAD", "PADV2", "CONCATENATION", "RESHAPE", "SQUEEZE", "TRANSPOSE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "QUANTIZE", "DEQUANTIZE", "STRIDED_SLICE", "SLICE", "SPLIT", "SPLIT_V", "GATHER",
    "GATHER_ND", "PACK", "UNPACK", "EXPAND_DIMS", "TILE", "BROADCAST_TO", "REVERSE_V2", "SELECT", "SELECT_V2",
    "GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL", "EQUAL", "NOT_EQUAL", "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND",
    "BATCH_MATMUL", "RSQRT", "GELU",
}
# op -> the types onert 0.1.0 runs it in and the tests compare (where onert refuses, the tests skip)
ONERT = {
    "ADD": "float, int8, uint8", "SUB": "int8, uint8", "MUL": "float, int8, uint8",
    "CONV_2D": "float, int8, uint8", "DEPTHWISE_CONV_2D": "float, int8, uint8", "FULLY_CONNECTED": "float, uint8",
    "AVERAGE_POOL_2D": "int8, uint8", "MAX_POOL_2D": "float, uint8", "MEAN": "float, uint8",
    "SOFTMAX": "float, int8, uint8", "CONCATENATION": "int8, uint8", "PAD": "int8, uint8", "RESHAPE": "int8, uint8",
    "RESIZE_BILINEAR": "int8, uint8", "DEPTH_TO_SPACE": "float, int8", "SPACE_TO_DEPTH": "float",
    "GREATER": "float", "SELECT_V2": "float", "LOGICAL_AND": "float", "SIN": "float", "COS": "float",
    "FLOOR_DIV": "float", "FLOOR_MOD": "float", "REVERSE_V2": "float", "TILE": "float",
    "SPACE_TO_BATCH_ND": "float", "BATCH_TO_SPACE_ND": "float", "ROUND": "float", "ADD_N": "float",
}
# the modules whose onert tests make those claims
ONERT_MODULES = ["test_lower_ops.py", "test_lower_ops_extra.py", "test_quantized_onert.py",
                 "test_lower_quantized_shape.py"]


def registered() -> dict[str, set[str]]:
    """op -> the type families it has rules for."""
    from jaxfuse.lowering import RULES
    families: dict[str, set[str]] = {}
    for op, family in RULES:
        families.setdefault(op, set()).add(family)
    return families


def markdown_table() -> str:
    rows = ["| op | float | int8 | int16x8 | tested against |", "|---|---|---|---|---|"]
    for op, families in sorted(registered().items()):
        quantized = "quantized" in families
        engines = "LiteRT" + (f"; onert ({ONERT[op]})" if op in ONERT else "")
        rows.append(f"| {op} | {'yes' if 'float' in families else ''} | {'yes' if quantized else ''} | "
                    f"{'yes' if quantized and op in INT16 else ''} | {engines} |")
    return "\n".join(rows)


def mentions(module: str, op: str) -> bool:
    return re.search(r"[\"']%s[\"']" % op, (TESTS / module).read_text()) is not None


def readme_table(readme: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"README.md has no {BEGIN} ... {END} section")
    return readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def write_readme() -> None:
    path = ROOT / "README.md"
    text = path.read_text()
    readme_table(text)  # the markers are there
    before, rest = text.split(BEGIN, 1)
    path.write_text(f"{before}{BEGIN}\n{markdown_table()}\n{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    if sys.argv[1:] == ["--write"]:
        write_readme()
    else:
        print(markdown_table())
