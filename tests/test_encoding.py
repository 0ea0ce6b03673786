"""php_json_encode is byte-identical to PHP json_encode, checked against vectors made by real PHP.

The vectors (tests/fixtures/php_json_vectors.json) are committed, so the suite needs
no PHP; when php is on PATH, a test re-runs the generator and asserts it reproduces
the committed file, so the fixture cannot drift from what PHP really does.
"""

from __future__ import annotations

import base64
import json
import math
import random
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from alikassa_async._encoding import EncodingError, php_json_encode, php_json_string

FIXTURES = Path(__file__).parent / "fixtures"
VECTORS_FILE = FIXTURES / "php_json_vectors.json"
GENERATOR = FIXTURES / "gen_php_vectors.php"
VECTORS = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))["vectors"]


# The cases that break naive encoders, with what PHP's json_encode gives for each (the
# same inputs are in the committed vectors; here they are spelled out so a reader sees them).
PHP_SAYS = [
    ("slash", "a/b", b'"a\\/b"'),
    ("cyrillic", "Оплата №6", b'"\\u041e\\u043f\\u043b\\u0430\\u0442\\u0430 \\u21166"'),
    ("emoji: surrogate pairs", "😀💳", b'"\\ud83d\\ude00\\ud83d\\udcb3"'),
    ("del stays raw", "a\x7fb", b'"a\x7fb"'),
    # the text backslash-u007f is not a DEL: it stays escaped (a backslash, then "u007f")
    ("escaped-looking del", "C:\\x\\u007f", b'"C:\\\\x\\\\u007f"'),
    ("line separators", "a\u2028b\u2029c", b'"a\\u2028b\\u2029c"'),
    ("control characters", "\x00\x08\t\n\x0b\x0c\r\x1f", b'"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f"'),
    ("quote and backslash", 'say "hi" \\', b'"say \\"hi\\" \\\\"'),
    ("int min", -9223372036854775808, b"-9223372036854775808"),
    ("empty array", [], b"[]"),
    (
        "object insertion order",
        {"z": 1, "a": 2, "m": {"y": None, "b": []}},
        b'{"z":1,"a":2,"m":{"y":null,"b":[]}}',
    ),
]


@pytest.mark.parametrize(
    ("value", "php"), [(v, php) for _, v, php in PHP_SAYS], ids=[name for name, *_ in PHP_SAYS]
)
def test_the_cases_that_break_naive_encoders(value, php):
    assert php_json_encode(value) == php


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_matches_php_json_encode_byte_for_byte(vector):
    assert php_json_encode(vector["input"]) == base64.b64decode(vector["php_output"])


def test_strings_alone_match_php():
    for vector in VECTORS:
        if isinstance(vector["input"], str):
            expected = base64.b64decode(vector["php_output"]).decode("ascii")
            assert php_json_string(vector["input"]) == expected, vector["name"]


def test_empty_mapping_and_empty_list_are_php_empty_array():
    assert php_json_encode({}) == b"[]"
    assert php_json_encode([]) == b"[]"
    assert php_json_encode({"a": {}}) == b'{"a":[]}'


def test_decimal_is_sent_as_string():
    assert php_json_encode({"amount": Decimal("500.00")}) == b'{"amount":"500.00"}'


def test_bool_is_never_an_int():
    assert php_json_encode([True, False, 1, 0]) == b"[true,false,1,0]"


@pytest.mark.parametrize(
    "value", [1.0, 0.1, -0.0, math.nan, math.inf, -math.inf, {"amount": 500.0}, [1, 2.5]]
)
def test_floats_nan_and_infinity_are_refused(value):
    with pytest.raises(EncodingError):
        php_json_encode(value)


@pytest.mark.parametrize("value", ["\ud800", "a\udfffb", {"desc": "\udc00"}, {"\ud83d": 1}])
def test_lone_surrogates_are_refused(value):
    # PHP's json_encode returns false on invalid UTF-8; we must not invent bytes.
    with pytest.raises(EncodingError):
        php_json_encode(value)


@pytest.mark.parametrize("mapping", [{1: "a"}, {None: 1}, {b"k": 1}, {"ok": {2: "x"}}])
def test_non_str_keys_are_refused(mapping):
    with pytest.raises(EncodingError):
        php_json_encode(mapping)


@pytest.mark.parametrize("value", [b"bytes", object(), {1, 2}])
def test_other_types_are_refused(value):
    with pytest.raises(EncodingError):
        php_json_encode(value)


def test_encoding_error_is_a_type_and_value_error():
    with pytest.raises(TypeError):
        php_json_encode(1.5)
    with pytest.raises(ValueError):
        php_json_encode(1.5)


@pytest.mark.skipif(shutil.which("php") is None, reason="php not installed")
def test_random_hostile_strings_match_php_byte_for_byte():
    # Differential: 3,000 strings over the characters encoders get wrong, against PHP itself.
    rng = random.Random(7)
    alphabet = ["\\", "u", "0", "7", "f", "/", '"', "\x7f", "\x00", "\n", "é", "😀", "\u2028", "a"]
    values = ["".join(rng.choices(alphabet, k=rng.randint(0, 12))) for _ in range(3000)]
    script = (
        "$a = json_decode(stream_get_contents(STDIN), true);"
        'foreach ($a as $s) { echo base64_encode(json_encode($s)), "\\n"; }'
    )
    result = subprocess.run(
        ["php", "-r", script],
        input=json.dumps(values).encode(),
        capture_output=True,
        check=True,
        timeout=60,
    )
    php = [base64.b64decode(line) for line in result.stdout.split()]
    assert len(php) == len(values)
    wrong = [(v, php_json_encode(v), p) for v, p in zip(values, php) if php_json_encode(v) != p]
    assert not wrong, wrong[:3]


@pytest.mark.skipif(shutil.which("php") is None, reason="php not installed")
def test_generator_reproduces_the_committed_vectors():
    result = subprocess.run(["php", str(GENERATOR)], capture_output=True, check=True, timeout=60)
    assert result.stdout == VECTORS_FILE.read_bytes(), (
        "php_json_vectors.json drifted from its generator; regenerate with "
        "`php tests/fixtures/gen_php_vectors.php > tests/fixtures/php_json_vectors.json`"
    )
