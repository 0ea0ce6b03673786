"""Field rules for request builders: each :class:`Rule` checks one raw value and
returns it normalised for the wire, or raises :class:`Invalid` with messages.

Rules never let anything but :class:`Invalid` out, whatever they are given, and
their messages never echo card or phone numbers unmasked (API reference §6.1,
§6.4, §7, §11). The service registry (:mod:`alikassa_async.services`) composes
them per field and per service.

>>> amount(Decimal("500"))
Decimal('500.00')
>>> amount(1.5)
Traceback (most recent call last):
...
alikassa_async._validation.Invalid: must be a Decimal, int or str, not float (floats lose cents)
"""

from __future__ import annotations

import datetime
import decimal
import ipaddress
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from urllib.parse import urlsplit

import attrs

from ._errors import mask

__all__ = [
    "EUR_CARD_EXTRA_FIELDS",
    "ISO_COUNTRY_CODES",
    "Invalid",
    "Rule",
    "amount",
    "any_of",
    "bank_code",
    "card_number",
    "digits",
    "email",
    "gateway_value",
    "http_url",
    "integer",
    "ip_address",
    "mask",
    "not_given",
    "one_of",
    "order_id",
    "payout_extra",
    "positive_id",
    "post_code",
    "ru_phone",
    "sbp_bank_id",
    "text",
]

_CENT = Decimal("0.01")
#: amounts are "decimal (11.2)": at most 9 integer digits (API reference §11)
_AMOUNT_LIMIT = Decimal(10) ** 9
# An explicit context: the caller's thread-local decimal context (precision,
# traps) must not change what we accept.
_CTX = decimal.Context(prec=50, traps=[decimal.InvalidOperation])
_AMOUNT_TEXT = re.compile(r"\s*\+?(\d+(?:\.\d*)?|\.\d+)\s*", re.ASCII)
_MAX_ID = 2**63 - 1


class Invalid(Exception):
    """A value failed a rule. ``nested`` holds sub-field messages (``extra.*``)."""

    def __init__(self, *messages: str, nested: Mapping[str, list[str]] | None = None) -> None:
        self.messages = list(messages)
        self.nested = dict(nested or {})
        super().__init__("; ".join(self.messages) or "invalid")


@attrs.frozen
class Rule:
    """A named check: ``rule(value)`` returns the wire value or raises :class:`Invalid`.

    ``describe`` is the one-line summary shown in the README's service table.
    """

    describe: str
    check: Callable[[object], object] = attrs.field(repr=False)

    def __call__(self, value: object) -> object:
        return self.check(value)


def not_given(value: object) -> bool:
    """``None`` and ``""`` both mean "not given": the gateway (Laravel) turns "" into null,
    and CSV/form input has empty cells for optional fields."""
    return value is None or (isinstance(value, str) and value == "")


def _type_name(value: object) -> str:
    return "None" if value is None else type(value).__name__


def _str(value: object, what: str = "a string") -> str:
    """``value`` as a plain ``str`` that PHP can encode, or :class:`Invalid`."""
    if not isinstance(value, str):
        raise Invalid(f"must be {what}, not {_type_name(value)}")
    plain = str.__str__(value)  # drop str subclasses (StrEnum and friends) to plain str
    try:
        plain.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid("must be valid Unicode text (contains a lone surrogate)") from None
    return plain


def _int(value: object) -> int:
    """An ``int`` (not bool), or a string of ASCII digits, as ``int``."""
    if isinstance(value, bool):
        raise Invalid("must be an integer, not bool")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str) and 0 < len(value) <= 20 and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, str):
        raise Invalid("must be an integer (digits only)")
    raise Invalid(f"must be an integer, not {_type_name(value)}")


def _show(value: str, limit: int = 40) -> str:
    """A short repr for messages about values that are not secret (codes, URLs)."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


# ---------------------------------------------------------------------------
# Money and identifiers


def _amount(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str)):
        hint = " (floats lose cents)" if isinstance(value, float) else ""
        raise Invalid(f"must be a Decimal, int or str, not {_type_name(value)}{hint}")
    if isinstance(value, str):
        if len(value) > 64 or not _AMOUNT_TEXT.fullmatch(value):
            raise Invalid("must be a plain decimal number such as '500' or '1000.44'")
        number = Decimal(value.strip())
    else:
        number = Decimal(value)
    if not number.is_finite():
        raise Invalid("must be a finite number")
    if number <= 0:
        raise Invalid("must be greater than 0")
    if number >= _AMOUNT_LIMIT:
        raise Invalid("must have at most 9 digits before the decimal point (decimal 11.2)")
    cents = _CTX.quantize(number, _CENT)
    if cents != number:
        raise Invalid("must have at most 2 decimal places (refusing to round money)")
    return cents


amount = Rule("Decimal/int/str > 0, ≤ 2 decimals, ≤ 9 integer digits; floats refused", _amount)


def _order_id(value: object) -> str:
    text_value = _str(value)
    if not text_value or not text_value.strip():
        raise Invalid("must not be empty")
    if len(text_value) > 128:
        raise Invalid(f"must be at most 128 characters (got {len(text_value)})")
    if text_value != text_value.strip():
        # The gateway trims input; " A-1" would be stored as "A-1" and lookups would miss.
        raise Invalid("must not start or end with whitespace")
    if not text_value.isprintable():
        # Control characters (newline, NUL, ...) break CSVs, logs and lookups alike.
        raise Invalid("must not contain control characters")
    return text_value


order_id = Rule("string 1..128, printable, no surrounding whitespace", _order_id)


def integer(low: int, high: int, describe: str | None = None) -> Rule:
    """An int (or digit string) in ``low..high`` inclusive."""

    def check(value: object) -> object:
        number = _int(value)
        if not low <= number <= high:
            raise Invalid(f"must be between {low} and {high}")
        return number

    return Rule(describe or f"int {low}..{high}", check)


positive_id = integer(1, _MAX_ID, "positive int")


def _ip(value: object) -> object:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(value)
    text_value = _str(value)
    try:
        if "%" in text_value:  # scoped IPv6 is meaningless to the gateway
            raise ValueError(text_value)
        ipaddress.ip_address(text_value)
    except ValueError:
        raise Invalid(f"must be an IPv4 or IPv6 address (got {_show(text_value)})") from None
    return text_value


ip_address = Rule("IPv4 or IPv6 address", _ip)


def _url(value: object) -> object:
    text_value = _str(value)
    problems = []
    if len(text_value) > 255:
        problems.append(f"must be at most 255 characters (got {len(text_value)})")
    try:
        parts = urlsplit(text_value)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid or any(ch.isspace() or ord(ch) < 0x20 for ch in text_value):
        problems.append("must be an absolute http(s) URL without spaces")
    if problems:
        raise Invalid(*problems)
    return text_value


http_url = Rule("http(s) URL ≤ 255", _url)


# ---------------------------------------------------------------------------
# Text


def text(max_len: int) -> Rule:
    """A non-empty string of at most ``max_len`` characters."""

    def check(value: object) -> object:
        text_value = _str(value)
        if not text_value.strip():
            raise Invalid("must not be empty")
        if len(text_value) > max_len:
            raise Invalid(f"must be at most {max_len} characters (got {len(text_value)})")
        return text_value

    return Rule(f"string ≤ {max_len}", check)


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _email(value: object) -> object:
    text_value = text(50)(value)
    assert isinstance(text_value, str)
    if not _EMAIL.fullmatch(text_value):
        raise Invalid("must be an e-mail address")
    return text_value


email = Rule("e-mail ≤ 50", _email)


def _post_code(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < 10**12:
            raise Invalid("must be at most 12 digits")
        return int(value)
    return text(12)(value)


post_code = Rule("int or string ≤ 12", _post_code)


def one_of(*choices: str) -> Rule:
    """Exactly one of the documented values."""
    allowed = ", ".join(choices)

    def check(value: object) -> object:
        text_value = _str(value)
        if text_value not in choices:
            raise Invalid(f"must be one of {allowed} (got {_show(text_value)})")
        return text_value

    return Rule("one of " + allowed, check)


def _pattern(regex: str, describe: str, message: str, *, sensitive: bool) -> Rule:
    compiled = re.compile(regex, re.ASCII)

    def check(value: object) -> object:
        text_value = _str(value)
        if not compiled.fullmatch(text_value):
            shown = mask(text_value) if sensitive else _show(text_value)
            raise Invalid(f"{message} (got {shown})")
        return text_value

    return Rule(describe, check)


def digits(count: int, what: str, *, sensitive: bool = False) -> Rule:
    """A string of exactly ``count`` ASCII digits (leading zeros kept: pass a str)."""
    return _pattern(
        rf"\d{{{count}}}",
        f"{count} digits",
        f"must be {what}: exactly {count} digits",
        sensitive=sensitive,
    )


#: SBP (NSPK) participant id, e.g. ``100000000111`` (API reference §7.4)
sbp_bank_id = _pattern(
    r"1000000\d{5}",
    "SBP bank id 1000000XXXXX",
    "must be an SBP bank id like 100000000111",
    sensitive=False,
)

_BANK_SLUG = re.compile(r"[a-z][a-z0-9_-]{0,99}", re.ASCII)


def _bank_code(value: object) -> object:
    text_value = _str(value)
    if text_value.isdigit():
        return sbp_bank_id(text_value)
    if not _BANK_SLUG.fullmatch(text_value):
        raise Invalid(
            "must be an SBP bank id like 100000000111 or a bank slug like 'sberbank' "
            f"(got {_show(text_value)})"
        )
    return text_value


#: ⚠ both documented forms: SBP id (seed) or lowercase bank slug (peer), §13.8
bank_code = Rule("SBP bank id or bank slug", _bank_code)


def any_of(*rules: Rule) -> Rule:
    """Passes when any rule passes; reports the first rule's messages otherwise."""

    def check(value: object) -> object:
        first: Invalid | None = None
        for rule in rules:
            try:
                return rule(value)
            except Invalid as exc:
                first = first or exc
        assert first is not None
        raise first

    return Rule(" or ".join(r.describe for r in rules), check)


# ---------------------------------------------------------------------------
# Payout recipients (card, phone, account)


def _luhn_ok(number: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = ord(char) - 48
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _card(value: object) -> object:
    number = _str(value)
    if not (number.isascii() and number.isdigit() and 12 <= len(number) <= 19):
        raise Invalid(f"must be a card number of 12..19 digits, digits only (got {mask(number)})")
    if not _luhn_ok(number):
        raise Invalid(f"card number {mask(number)} fails the Luhn check (mistyped?)")
    return number


card_number = Rule("card number, 12..19 digits, Luhn", _card)


def _ru_phone(value: object) -> object:
    phone = _str(value)
    bare = phone[1:] if phone.startswith("+") else phone
    if not (len(bare) == 11 and bare.isascii() and bare.isdigit() and bare.startswith("7")):
        raise Invalid(
            "must be a Russian phone 7XXXXXXXXXX: 11 digits starting with 7, "
            f"optionally after a + (got {mask(phone)})"
        )
    return bare


ru_phone = Rule("phone 7XXXXXXXXXX (leading + dropped)", _ru_phone)


# ---------------------------------------------------------------------------
# ``extra`` object of payouts (EUR accounts), API reference §6.4

# ISO 3166-1 alpha-2, officially assigned codes.
ISO_COUNTRY_CODES = frozenset(
    """
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR
BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ
EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW
GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY
KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV
MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY
QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG
TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM
ZW
""".split()
)


def _country(value: object) -> object:
    code = _str(value)
    if code not in ISO_COUNTRY_CODES:
        raise Invalid(f"must be an ISO 3166-1 alpha-2 code such as 'UA' (got {_show(code)})")
    return code


def _birth_date(value: object) -> object:
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        day = value
    else:
        raw = _str(value, "a YYYY-MM-DD string or a date")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw, re.ASCII):
            raise Invalid("must be a date formatted YYYY-MM-DD")
        try:
            day = datetime.date.fromisoformat(raw)
        except ValueError:
            raise Invalid("must be a real calendar date (YYYY-MM-DD)") from None
    if day >= datetime.date.today():
        raise Invalid("must be in the past")
    return day.isoformat()


_EUR_EXTRA_RULES: dict[str, Rule] = {
    "card_exp_year": _pattern(
        r"\d{2}", "2 digits", "must be two digits, e.g. '27'", sensitive=False
    ),
    "card_exp_month": _pattern(
        r"0[1-9]|1[0-2]", "01..12", "must be a two-digit month 01..12", sensitive=False
    ),
    "card_holder": text(100),
    "card_country": Rule("ISO 3166-1 alpha-2", _country),
    "card_recipient_birth_date": Rule("YYYY-MM-DD in the past", _birth_date),
}
#: the five ``extra.*`` fields an EUR account's card payout must carry, in wire order
EUR_CARD_EXTRA_FIELDS: tuple[str, ...] = tuple(_EUR_EXTRA_RULES)


def gateway_value(value: object) -> object:
    """A field the SDK does not know: any str or int goes through unchanged."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Invalid(f"must be a str or int, not {_type_name(value)}")
    if isinstance(value, str):
        return _str(value)
    if not -_MAX_ID - 1 <= value <= _MAX_ID:  # PHP would read it as a float
        raise Invalid("must fit in a signed 64-bit integer")
    return int(value)


def payout_extra(*, card_fields_required: bool) -> Rule:
    """The payout ``extra`` object: known keys format-checked, new keys str/int."""

    def check(value: object) -> object:
        if not isinstance(value, Mapping):
            raise Invalid(f"must be a mapping of field -> value, not {_type_name(value)}")
        nested: dict[str, list[str]] = {}
        out: dict[str, object] = {}
        keys = list(value)
        if card_fields_required:
            for key in EUR_CARD_EXTRA_FIELDS:
                if value.get(key) in (None, ""):
                    nested.setdefault(key, []).append("is required for card payouts in EUR")
        for key in keys:
            if not isinstance(key, str):
                nested.setdefault("<key>", []).append(f"keys must be str, not {_type_name(key)}")
                continue
            item = value[key]
            if item is None or (isinstance(item, str) and item == ""):  # not given
                continue
            try:
                out[key] = _EUR_EXTRA_RULES.get(key, Rule("", gateway_value))(item)
            except Invalid as exc:
                nested.setdefault(key, []).extend(exc.messages)
        if nested:
            raise Invalid(nested=nested)
        ordered = {k: out[k] for k in EUR_CARD_EXTRA_FIELDS if k in out}
        ordered.update(out)
        return ordered

    summary = "all five card_* keys" if card_fields_required else "object; card_* keys checked"
    return Rule(summary, check)
