"""NotificationVerifier against notifications and redirects signed by real PHP.

Fixtures (committed; regenerate with the generators named in each file):
- php_notifications.json: json_encode + openssl_sign (default algorithm = SHA-1, and SHA-256)
  over notifications whose desc holds /, Cyrillic, emoji, quotes, backslashes, control
  characters and DEL, with empty and missing fields, the §8.4 variants, and redirects;
- php_cast_vectors.json: PHP's (int) cast and float json_encode, which the signed bytes
  depend on.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from multidict import MultiDict, MultiDictProxy
from starlette.datastructures import FormData, QueryParams

from alikassa_async import (
    Certificate,
    Notification,
    NotificationVerifier,
    PaymentStatus,
    Redirect,
    SignatureError,
)
from alikassa_async._encoding import EncodingError, php_json_encode
from alikassa_async.webhooks import (
    MAX_INPUT_SIZE,
    NOTIFICATION_FIELDS,
    _encode_received,
    _notification_forms,
    _parse_json_body,
    _php_float_json,
    _php_int,
)

FIXTURES = Path(__file__).parent / "fixtures"
KEYS = FIXTURES / "keys" / "notification"
NOTIFICATIONS = json.loads((FIXTURES / "php_notifications.json").read_text("utf-8"))
CASTS = json.loads((FIXTURES / "php_cast_vectors.json").read_text("utf-8"))
ACCOUNT = NOTIFICATIONS["account"]
VECTORS = NOTIFICATIONS["vectors"]
GOOD = [v for v in VECTORS if v["kind"] == "notification" and v["expect_error"] is None]
BAD = [v for v in VECTORS if v["expect_error"] is not None]
REDIRECTS = [v for v in VECTORS if v["kind"] == "redirect"]
QUERY_GOOD = [v for v in GOOD if v["delivery"] == "query"]
# Vectors in which every received parameter is covered by the signature.
FULLY_SIGNED = [
    v
    for v in QUERY_GOOD
    if set(v["params"])
    <= {*NOTIFICATION_FIELDS, *(["card_brand"] if "card_brand" in v["variant"] else [])}
]


def _id(vector: dict) -> str:
    return f"{vector['name']}-{vector['hash']}"


@pytest.fixture(scope="module")
def verifier() -> NotificationVerifier:
    return NotificationVerifier.from_file(KEYS / "public.pem")


@pytest.fixture(scope="module")
def signer() -> Certificate:
    """The fixture's notification key, to sign Python-side variations of the PHP vectors."""
    return Certificate.from_pem((KEYS / "private.pem").read_bytes())


def documented_query(signer: Certificate, params: dict[str, str], hash_: str = "sha1") -> str:
    """Sign ``params`` the documented way (§8.3) and send them as PHP would (urlencoded)."""
    form: dict[str, object] = {name: params.get(name) for name in NOTIFICATION_FIELDS}
    form["id"] = _php_int(form["id"])
    sign = signer.sign(php_json_encode(form), hash_)  # type: ignore[arg-type]
    return urlencode({**params, "sign": sign})


BASE = dict(GOOD[0]["params"])  # the documented example, as received


# ---------------------------------------------------------------------------
# PHP-made vectors


def test_fixture_covers_the_issue():
    assert len(FULLY_SIGNED) >= len(QUERY_GOOD) - 2
    names = {v["name"] for v in VECTORS}
    for needed in (
        "desc slash and url",
        "desc cyrillic",
        "desc emoji",
        "desc quotes and backslashes",
        "desc control characters",
        "desc del",
        "desc empty",
        "desc missing",
        "json body received order",
    ):
        assert needed in names
    assert {v["hash"] for v in GOOD} == {"sha1", "sha256"}
    assert {v["variant"] for v in GOOD} >= {
        "documented",
        "without_commission_amount",
        "with_card_brand",
        "documented+partial_as_bool",
        "documented+id_as_received",
        "received_order",
    }


@pytest.mark.parametrize("vector", GOOD, ids=_id)
def test_every_php_signed_notification_verifies(verifier, vector):
    params = vector["params"]
    expected_account = ACCOUNT if params.get("account") else None
    note = verifier.verify_notification(vector["body"], expected_account=expected_account)
    assert isinstance(note, Notification)
    assert note.variant == vector["variant"]
    assert note.signature_hash == vector["hash"]
    assert note.type == params["type"]
    assert note.order_id == params["order_id"]
    assert note.payment_status == PaymentStatus(params["payment_status"])
    assert note.amount == Decimal(params["amount"])
    assert note.desc == params.get("desc")
    assert note.account == params.get("account")
    if vector["variant"] != "received_order":
        # The id is what PHP's (int) made of the received value, i.e. what was signed.
        signed = json.loads(base64.b64decode(vector["signed"]))
        assert note.id == int(signed["id"])
    assert dict(note.raw) == params  # everything received except sign


@pytest.mark.parametrize("vector", [v for v in GOOD if v["variant"] == "documented"], ids=_id)
def test_documented_canonical_bytes_equal_php_bytes(vector):
    params = (
        _parse_json_body(vector["body"])
        if vector["delivery"] == "json"
        else dict(parse_qsl(vector["body"], keep_blank_values=True))
    )
    params.pop("sign")
    name, form = next(_notification_forms(params))
    assert name == "documented"
    assert _encode_received(form).encode() == base64.b64decode(vector["signed"])


@pytest.mark.parametrize("vector", QUERY_GOOD[:8] + REDIRECTS, ids=_id)
def test_every_input_shape_gives_the_same_result(verifier, vector):
    body: str = vector["body"]
    pairs = parse_qsl(body, keep_blank_values=True)
    check = (
        verifier.verify_notification
        if vector["kind"] == "notification"
        else verifier.verify_redirect
    )
    expected = check(body)
    shapes = [
        body.encode(),
        "?" + body,
        dict(pairs),
        QueryParams(body),
        FormData(pairs),
        MultiDict(pairs),
        MultiDictProxy(MultiDict(pairs)),
        json.dumps(dict(pairs)),
        json.dumps(dict(pairs)).encode(),
    ]
    for shape in shapes:
        assert check(shape) == expected, type(shape).__name__


@pytest.mark.parametrize("vector", BAD, ids=_id)
def test_php_signed_notification_missing_a_required_field_is_refused(verifier, vector):
    with pytest.raises(SignatureError, match=vector["expect_error"]):
        verifier.verify_notification(vector["body"])


@pytest.mark.parametrize("vector", REDIRECTS, ids=_id)
def test_php_signed_redirect_verifies(verifier, vector):
    assert verifier.verify_redirect(vector["body"]) == Redirect(**vector["params"])


def test_tampered_redirect_is_refused(verifier):
    pairs = dict(parse_qsl(REDIRECTS[0]["body"]))
    for field in ("order_id", "uuid"):
        with pytest.raises(SignatureError, match="does not verify"):
            verifier.verify_redirect({**pairs, field: pairs[field] + "1"})
    with pytest.raises(SignatureError, match="uuid"):
        verifier.verify_redirect({k: v for k, v in pairs.items() if k != "uuid"})


@pytest.mark.parametrize("section", ["int_casts", "float_casts"])
def test_php_int_cast_matches_php(section):
    for vector in CASTS[section]:
        value = (
            base64.b64decode(vector["input"]).decode("utf-8")
            if section == "int_casts"
            else float(vector["input"])
        )
        assert _php_int(value) == vector["php"], vector["input"]


def test_php_float_json_matches_php():
    for vector in CASTS["json_floats"]:
        assert _php_float_json(float(vector["input"])) == vector["php"], vector["input"]


def test_json_numbers_reencode_as_php_does():
    for vector in CASTS["json_numbers"]:
        value = _parse_json_body('{"n":' + vector["input"] + "}")["n"]
        if vector["php"] is False:  # PHP cannot encode it (INF): it can never have been signed
            with pytest.raises(EncodingError):
                _encode_received(value)
        else:
            assert _encode_received(value) == vector["php"], vector["input"]


@pytest.mark.skipif(shutil.which("php") is None, reason="php not installed")
@pytest.mark.parametrize(
    "generator, output",
    [
        ("gen_notification_vectors.php", "php_notifications.json"),
        ("gen_php_cast_vectors.php", "php_cast_vectors.json"),
    ],
)
def test_generators_reproduce_the_committed_fixtures(generator, output):
    result = subprocess.run(
        ["php", str(FIXTURES / generator)], capture_output=True, check=True, timeout=60
    )
    assert result.stdout == (FIXTURES / output).read_bytes(), f"{output} drifted; regenerate it"


# ---------------------------------------------------------------------------
# Refusals


def test_each_tampered_field_is_refused(verifier, signer):
    query = documented_query(signer, BASE)
    assert verifier.verify_notification(query).variant == "documented"
    for field in [*NOTIFICATION_FIELDS, "sign"]:
        params = dict(parse_qsl(query, keep_blank_values=True))
        params[field] = params[field][:-1] + ("X" if params[field][-1:] != "X" else "Y")
        with pytest.raises(SignatureError):
            verifier.verify_notification(urlencode(params))


def test_signed_with_another_key_is_refused(verifier, rsa_keys):
    other = Certificate(rsa_keys["other"])
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.verify_notification(documented_query(other, BASE))


def test_expected_account_mismatch_is_refused(verifier, signer):
    query = documented_query(signer, BASE)
    assert verifier.verify_notification(query, expected_account=ACCOUNT.upper()).account == ACCOUNT
    with pytest.raises(SignatureError, match="not '00000000"):
        verifier.verify_notification(query, expected_account="00000000-0000-0000-0000-000000000000")
    no_account = documented_query(signer, {k: v for k, v in BASE.items() if k != "account"})
    assert verifier.verify_notification(no_account).account is None
    with pytest.raises(SignatureError, match="account None"):
        verifier.verify_notification(no_account, expected_account=ACCOUNT)


def test_missing_sign_and_bad_base64_are_named(verifier):
    with pytest.raises(SignatureError, match="sign"):
        verifier.verify_notification(BASE)
    with pytest.raises(SignatureError, match="sign"):
        verifier.verify_notification({**BASE, "sign": ""})
    with pytest.raises(SignatureError, match="base64"):
        verifier.verify_notification({**BASE, "sign": "not*base64!"})
    with pytest.raises(SignatureError, match="order_id, sign"):
        verifier.verify_notification({k: v for k, v in BASE.items() if k != "order_id"})


def test_signed_but_non_decimal_amount_is_refused(verifier, signer):
    with pytest.raises(SignatureError, match="amount is not a decimal"):
        verifier.verify_notification(documented_query(signer, {**BASE, "amount": "1e3"}))


def test_sign_with_unencoded_plus_still_verifies(verifier):
    vector = next(v for v in QUERY_GOOD if "%2B" in v["body"].rsplit("sign=", 1)[1])
    raw_plus = vector["body"].replace("%2B", "+")  # '+' reaches us as a space
    assert verifier.verify_notification(raw_plus).order_id == vector["params"]["order_id"]


def test_repeated_parameter_last_value_wins_like_php(verifier, signer):
    query = documented_query(signer, BASE)
    forged_first = "desc=forged&" + query
    assert verifier.verify_notification(forged_first).desc == BASE["desc"]
    assert verifier.verify_notification(MultiDict(parse_qsl(forged_first))).desc == BASE["desc"]
    with pytest.raises(SignatureError):
        verifier.verify_notification(query + "&desc=forged")
    with pytest.raises(SignatureError):
        verifier.verify_notification(QueryParams(query + "&desc=forged"))


def test_oversize_and_overlong_inputs_are_refused_early(verifier, signer):
    query = documented_query(signer, BASE)
    with pytest.raises(SignatureError, match="larger than"):
        verifier.verify_notification(query + "&pad=" + "x" * MAX_INPUT_SIZE)
    with pytest.raises(SignatureError, match="larger than"):
        verifier.verify_notification({**BASE, "pad": "x" * MAX_INPUT_SIZE})
    with pytest.raises(SignatureError, match="more than"):
        verifier.verify_notification(query + "&x=1" * 200)
    with pytest.raises(SignatureError, match="nested"):
        verifier.verify_notification('{"a":' + "[" * 100 + "]" * 100 + "}")
    with pytest.raises(SignatureError, match="JSON"):
        verifier.verify_notification("{" + "[" * 30000)


def test_at_most_thirteen_canonical_forms_are_tried():
    params = {**BASE, "is_partial_payment": "1", "card_brand": "VISA"}
    assert len(list(_notification_forms(params))) <= 13


def test_notification_repr_has_no_signature(verifier):
    vector = QUERY_GOOD[0]
    note = verifier.verify_notification(vector["body"])
    sign = dict(parse_qsl(vector["body"]))["sign"]
    assert sign not in repr(note) and sign[:20] not in repr(note)
    assert "sign" not in note.raw


def test_typed_fields(verifier, signer):
    params = {
        **BASE,
        "payment_amount": "250.00",
        "is_partial_payment": "1",
        "payment_status": "refund",
    }
    note = verifier.verify_notification(documented_query(signer, params))
    assert note.payment_amount == Decimal("250.00") and note.is_partial_payment is True
    assert note.payment_status == "refund" and not note.payment_status.is_known
    assert note.commission_amount == Decimal("10.00")
    with pytest.raises(AttributeError):
        note.amount = Decimal(1)  # type: ignore[misc]


# ---------------------------------------------------------------------------
# Properties


def _php_view(body: bytes) -> dict[str, object]:
    """The parameters as the PHP reference sees them: decoded, last value wins, (int) id."""
    params: dict[str, object] = dict(
        parse_qsl(body.decode("utf-8", "surrogateescape"), keep_blank_values=True)
    )
    if "id" in params:
        params["id"] = _php_int(params["id"])
    return params


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_any_single_byte_mutation_of_a_signed_query_is_refused(verifier, data):
    vector = data.draw(st.sampled_from(FULLY_SIGNED))
    body = vector["body"].encode()
    index = data.draw(st.integers(0, len(body) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != body[index]))
    mutated = body[:index] + bytes([byte]) + body[index + 1 :]
    # Mutations PHP reads as the same parameters ("%2f" for "%2F", "100000536x" for the
    # (int) id 100000536) change nothing that was signed: not tampering.
    assume(_php_view(mutated) != _php_view(body))
    with pytest.raises(SignatureError):
        verifier.verify_notification(mutated)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_junk = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    st.dictionaries(st.text(max_size=20), _json_values, max_size=15),
    st.builds(lambda d: json.dumps(d), st.dictionaries(st.text(max_size=10), _json_values)),
    st.builds(
        lambda d, sign: urlencode({**d, "sign": sign}),
        st.fixed_dictionaries({k: st.text(max_size=12) for k in NOTIFICATION_FIELDS}),
        st.text(max_size=400) | st.binary(max_size=256).map(lambda b: base64.b64encode(b).decode()),
    ),
    st.builds(lambda s: quote(s, safe="=&"), st.text(max_size=200)),
)


@settings(max_examples=300, deadline=None)
@given(junk=_junk)
def test_arbitrary_junk_raises_only_signature_error(verifier, junk):
    with pytest.raises(SignatureError):
        verifier.verify_notification(junk)
    with pytest.raises(SignatureError):
        verifier.verify_redirect(junk)


@pytest.mark.parametrize("junk", [None, 42, 1.5, ["a"], object(), {1: "x"}, {"sign": 5}])
def test_wrong_input_types_raise_signature_error(verifier, junk):
    with pytest.raises(SignatureError):
        verifier.verify_notification(junk)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Numeric fields: huge, signed, with exponents, in Unicode digits — in every input shape


def _numeric_text() -> st.SearchStrategy[str]:
    digits = st.text("0123456789", min_size=1, max_size=6000)
    unicode_digits = st.text(st.characters(categories=["Nd"]), min_size=1, max_size=40)
    exponent = st.builds(
        lambda m, e: f"{m}e{e}", st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6)
    )
    return st.builds(
        lambda sign, body, tail: sign + body + tail,
        st.sampled_from(["", "-", "+", " ", "\t"]),
        st.one_of(
            digits, unicode_digits, exponent, st.builds(lambda a, b: f"{a}.{b}", digits, digits)
        ),
        st.sampled_from(["", "x", ".", "e", " "]),
    )


def _digits(value: int | float) -> str:
    """The decimal text of a number, even past Python's 4,300-digit conversion limit."""
    if isinstance(value, float):
        return repr(value)
    import sys

    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return str(value)
    finally:
        sys.set_int_max_str_digits(limit)


_numeric = st.one_of(
    _numeric_text(),
    st.integers(-(10**5000), 10**5000),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=150, deadline=None)
@given(
    field=st.sampled_from(
        ["id", "amount", "payment_amount", "commission_amount", "is_partial_payment"]
    ),
    value=_numeric,
    shape=st.sampled_from(["query", "form_bytes", "mapping", "json"]),
)
def test_numeric_fields_of_any_size_or_form_raise_only_signature_error(
    verifier, field, value, shape
):
    params: dict[str, object] = {**BASE, field: value, "sign": "AAAA"}
    if shape == "mapping":
        data: object = params
    elif shape == "json":
        # A JSON body spells the number itself (json.dumps refuses ints above the limit).
        text = value if isinstance(value, str) else _digits(value)
        data = json.dumps({**params, field: 0}).replace(f'"{field}": 0', f'"{field}": {text}', 1)
    else:  # a query string or form body carries the number's digits as text
        text = value if isinstance(value, str) else _digits(value)
        query = urlencode({**params, field: text})
        data = query.encode() if shape == "form_bytes" else query
    with pytest.raises(SignatureError):
        verifier.verify_notification(data)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", ["query", "bytes", "mapping", "json"])
def test_an_id_of_4301_digits_is_a_signature_error(verifier, shape):
    digits = "7" * 4301
    params = {**BASE, "id": digits, "sign": "AAAA"}
    data: object = {
        "query": urlencode(params),
        "bytes": urlencode(params).encode(),
        "mapping": params,
        "json": json.dumps(params).replace(f'"{digits}"', digits),
    }[shape]
    with pytest.raises(SignatureError):
        verifier.verify_notification(data)  # type: ignore[arg-type]


def test_a_mapping_holding_a_huge_int_is_a_signature_error(verifier):
    import sys

    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        huge = int("7" * 5000)
    finally:
        sys.set_int_max_str_digits(limit)
    for field in ("id", "amount", "desc"):
        with pytest.raises(SignatureError):
            verifier.verify_notification({**BASE, field: huge, "sign": "AAAA"})


@pytest.mark.parametrize("account", [5, None, b"x", ["x"]])
def test_expected_account_of_the_wrong_type_is_a_configuration_error(verifier, account):
    from alikassa_async import ConfigurationError

    if account is None:
        return  # None means "do not check"
    with pytest.raises(ConfigurationError):
        verifier.verify_notification(GOOD[0]["body"], expected_account=account)


@pytest.mark.parametrize(
    "vector",
    [v for v in QUERY_GOOD if v["variant"].startswith("without_commission_amount")],
    ids=_id,
)
def test_a_field_appended_to_a_genuine_notification_types_nothing(verifier, vector):
    # A captured notification in the older layout (no commission_amount signed), replayed
    # with a commission_amount and a card_brand of the attacker's choosing.
    assert "commission_amount" not in vector["params"]
    body = vector["body"] + "&commission_amount=-1000000.00&card_brand=forged"
    note = verifier.verify_notification(body)
    assert note.variant.startswith("without_commission_amount")
    assert note.commission_amount is None  # not from the appended, unsigned parameter
    assert dict(note.unsigned) == {"commission_amount": "-1000000.00", "card_brand": "forged"}
    assert note.raw["card_brand"] == "forged"  # raw: everything received, as documented
    genuine = verifier.verify_notification(vector["body"])
    assert dict(genuine.unsigned) == {} and genuine.commission_amount is None
