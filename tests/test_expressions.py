"""Smart Mapping expressions: static values, paths, templates and formulas."""

from __future__ import annotations

import copy
import hashlib
import pickle
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadrelay.mapping.expressions import (
    MISSING,
    EvaluationError,
    ExpressionError,
    compile_expression,
    compile_path,
    read_path,
)

EVENT: dict[str, Any] = {
    "event_name": "lead_qualified",
    "id": 123456789012345,
    "big": 12345678901234567,
    "price": 19.9,
    "round": 2.0,
    "tiny": 1e-7,
    "huge": 1e20,
    "flag": True,
    "off": False,
    "zero": 0,
    "empty": "",
    "blank": "  ",
    "nothing": None,
    "tags": ["a", "b"],
    "no_tags": [],
    "user": {
        "email": "  Jane.Doe@Example.COM ",
        "firstname": "Jane",
        "lastname": "Doe",
        "phone": "+33 6 12 34 56 78",
        "consent_categories": [1, "4"],
        "address": {"city": "Lyon", "zip": None},
    },
    "context": {"event_timestamp": 1718000000000, "event_id": "e-1"},
    "items": [{"product": {"id": "p1", "price": 10}}, {"product": {"id": "p2"}}],
    "table": {"0": "zero-key", "1": {"x": "one-x"}},
    "id_text": "0001234567890123456",
}


def run(source: str, event: Mapping[str, Any] = EVENT) -> Any:
    return compile_expression(source, key="smart_mapping.test").evaluate(event)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------- MISSING


def test_missing_is_a_falsy_singleton_named_missing() -> None:
    assert not MISSING
    assert repr(MISSING) == "MISSING"
    assert copy.deepcopy(MISSING) is MISSING
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING


# ---------------------------------------------------------------------------- static


@pytest.mark.parametrize("source", ["Lead form", "", "a } b", "{ not a path }", " =LOWER(x)"])
def test_static_values_are_sent_as_written(source: str) -> None:
    expr = compile_expression(source, key="k")
    assert (expr.kind, expr.paths, expr.evaluate(EVENT)) == ("static", (), source)


# ---------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{event_name}}", "lead_qualified"),
        ("{{id}}", 123456789012345),
        ("{{big}}", 12345678901234567),
        ("{{price}}", 19.9),
        ("{{flag}}", True),
        ("{{off}}", False),
        ("{{zero}}", 0),
        ("{{empty}}", ""),
        ("{{tags}}", ["a", "b"]),
        ("{{user.address}}", {"city": "Lyon", "zip": None}),
        ("{{ user.firstname }}", "Jane"),
        ("{{user.address.city}}", "Lyon"),
        ("{{context.event_timestamp}}", 1718000000000),
        ("{{items.0.product.id}}", "p1"),
        ("{{items.1.product.id}}", "p2"),
        ("{{user.consent_categories.1}}", "4"),
        ("{{table.0}}", "zero-key"),
        ("{{table.1.x}}", "one-x"),
    ],
)
def test_single_path_keeps_the_native_value(source: str, expected: Any) -> None:
    expr = compile_expression(source, key="k")
    value = expr.evaluate(EVENT)
    assert expr.kind == "path"
    assert value == expected
    assert type(value) is type(expected)


MISSING_PATHS = [
    "absent",
    "nothing",  # JSON null
    "user.absent",
    "user.address.zip",  # null at the end
    "user.address.zip.code",  # through null
    "user.email.domain",  # through a string
    "id.x",  # through an int
    "tags.x",  # a name on a list
    "tags.2",  # index out of range
    "tags.-1",  # not an index
    "items.5.product.id",
    "items.0.product.nope",
    "table.2",
    "absent.deeper.still.more",
]


@pytest.mark.parametrize("path", MISSING_PATHS)
def test_absent_null_and_wrong_container_read_as_missing(path: str) -> None:
    assert compile_path(path)(EVENT) is MISSING
    assert read_path(EVENT, path) is MISSING
    assert run("{{" + path + "}}") is MISSING


@pytest.mark.parametrize(
    ("event", "path", "expected"),
    [
        (MappingProxyType({"a": MappingProxyType({"b": 1})}), "a.b", 1),
        ({"a": MappingProxyType({"b": {"c": 2}})}, "a.b.c", 2),
        ({"a": ({"b": 3},)}, "a.0.b", 3),
        ({"a": [[0, [1, 2]]]}, "a.0.1.1", 2),
        ({"a-b": {"$c": {"@d": 4}}}, "a-b.$c.@d", 4),
        ({"é": {"ü": 5}}, "é.ü", 5),
    ],
)
def test_paths_read_other_mappings_sequences_and_permissive_names(
    event: Mapping[str, Any], path: str, expected: Any
) -> None:
    assert compile_path(path)(event) == expected
    assert read_path(event, path) == expected


@pytest.mark.parametrize(("path", "position"), [("a..b", 2), (".a", 0), ("a.", 1), ("a b", 1)])
def test_compile_path_rejects_malformed_paths(path: str, position: int) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_path(path)
    assert caught.value.position == position


# ---------------------------------------------------------------------------- templates


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Stage: {{event_name}}", "Stage: lead_qualified"),
        ("{{user.firstname}} {{user.lastname}}", "Jane Doe"),
        ("id={{id}}", "id=123456789012345"),
        ("{{big}}!", "12345678901234567!"),
        ("{{price}} EUR", "19.9 EUR"),
        ("{{round}} EUR", "2 EUR"),
        ("x{{tiny}}", "x0.0000001"),
        ("n={{huge}}", "n=100000000000000000000"),
        ("{{flag}}/{{off}}", "true/false"),
        ("[{{empty}}]", "[]"),
        ("tags: {{tags}}", 'tags: ["a","b"]'),
        ("at {{user.address}}", 'at {"city":"Lyon","zip":null}'),
        ("{{ context.event_id }}-{{items.0.product.price}}", "e-1-10"),
        ("} {{zero}} {", "} 0 {"),
    ],
)
def test_templates_render_to_text(source: str, expected: str) -> None:
    expr = compile_expression(source, key="k")
    assert expr.kind == "template"
    assert expr.evaluate(EVENT) == expected


@pytest.mark.parametrize(
    "source", ["Stage: {{absent}}", "{{user.firstname}} {{nothing}}", "{{absent}} {{event_name}}"]
)
def test_template_with_any_missing_path_is_missing(source: str) -> None:
    assert run(source) is MISSING


# ---------------------------------------------------------------------------- functions

FUNCTION_CASES: list[tuple[str, Any]] = [
    # COALESCE: first value that is neither MISSING, "" nor only spaces
    ("=COALESCE(absent, id)", 123456789012345),
    ("=COALESCE(blank, id)", 123456789012345),
    ("=COALESCE(id, blank)", 123456789012345),
    ("=COALESCE(absent, blank)", MISSING),
    ("=COALESCE(blank, absent, blank)", MISSING),
    ("=COALESCE(empty, nothing, user.firstname)", "Jane"),
    ("=COALESCE(zero, id)", 0),
    ("=COALESCE(off, id)", False),
    ("=COALESCE(absent, empty)", MISSING),
    ("=COALESCE(absent, nothing, empty)", MISSING),
    ("=COALESCE(absent, 'x', id)", "x"),
    # CONCAT: MISSING parts are ""
    ('=CONCAT(user.firstname, " ", user.lastname)', "Jane Doe"),
    ("=CONCAT(user.firstname, absent, '-', id)", "Jane-123456789012345"),
    ("=CONCAT(flag, round, tags)", 'true2["a","b"]'),
    ("=CONCAT(absent)", ""),
    # LOWER / UPPER / TRIM
    ("=LOWER(TRIM(user.email))", "jane.doe@example.com"),
    ("=UPPER(user.firstname)", "JANE"),
    ("=TRIM('  a b  ')", "a b"),
    ("=LOWER(flag)", "true"),
    ("=UPPER(absent)", MISSING),
    ("=TRIM(nothing)", MISSING),
    ("=lower(Trim(user.email))", "jane.doe@example.com"),
    # REPLACE
    ("=REPLACE(user.phone, ' ', '')", "+33612345678"),
    ("=REPLACE('a-b-c', '-', '+')", "a+b+c"),
    ("=REPLACE('abc', '', 'x')", "abc"),
    ("=REPLACE('abc', 'b', absent)", "ac"),
    ("=REPLACE(absent, 'b', 'c')", MISSING),
    # SUBSTRING, LEFT, RIGHT (1-based like spreadsheets)
    ("=SUBSTRING('abcdef', 2, 3)", "bcd"),
    ("=SUBSTRING('abcdef', 4)", "def"),
    ("=SUBSTRING('abc', 10)", ""),
    ("=SUBSTRING('abc', '2', 1.0)", "b"),
    ("=SUBSTRING(absent, 1, 2)", MISSING),
    ("=LEFT(user.firstname, 2)", "Ja"),
    ("=LEFT('ab', 5)", "ab"),
    ("=RIGHT(user.firstname, 2)", "ne"),
    ("=RIGHT('abc', 0)", ""),
    ("=RIGHT('abc', 9)", "abc"),
    ("=LEFT(absent, 1)", MISSING),
    # LENGTH
    ("=LENGTH(user.firstname)", 4),
    ("=LENGTH(tags)", 2),
    ("=LENGTH(no_tags)", 0),
    ("=LENGTH(id)", 15),
    ("=LENGTH(absent)", MISSING),
    # NUMBER: exact ints, floats from decimals
    ("=NUMBER(id_text)", 1234567890123456),
    ("=NUMBER('12345678901234567')", 12345678901234567),
    ("=NUMBER(' -42 ')", -42),
    ("=NUMBER('+7')", 7),
    ("=NUMBER('12.50')", 12.5),
    ("=NUMBER('1e3')", 1000.0),
    ("=NUMBER(big)", 12345678901234567),
    ("=NUMBER(price)", 19.9),
    ("=NUMBER(flag)", 1),
    ("=NUMBER(absent)", MISSING),
    ("=NUMBER(empty)", MISSING),
    # STRING
    ("=STRING(id)", "123456789012345"),
    ("=STRING(round)", "2"),
    ("=STRING(tags)", '["a","b"]'),
    ("=STRING(absent)", MISSING),
    # IF and truthiness
    ("=IF(flag, 'yes', 'no')", "yes"),
    ("=IF(off, 'yes', 'no')", "no"),
    ("=IF(zero, 'yes', 'no')", "no"),
    ("=IF(empty, 'yes', 'no')", "no"),
    ("=IF(no_tags, 'yes', 'no')", "no"),
    ("=IF(absent, 'yes', 'no')", "no"),
    ("=IF(nothing, 'yes', 'no')", "no"),
    ("=IF(tags, 'yes', 'no')", "yes"),
    ("=IF('0', 'yes', 'no')", "yes"),
    ("=IF(absent, 'yes')", MISSING),
    ("=IF(true, id)", 123456789012345),
    # ISEMPTY
    ("=ISEMPTY(absent)", True),
    ("=ISEMPTY(nothing)", True),
    ("=ISEMPTY(empty)", True),
    ("=ISEMPTY(blank)", True),
    ("=ISEMPTY(no_tags)", True),
    ("=ISEMPTY(zero)", False),
    ("=ISEMPTY(off)", False),
    ("=ISEMPTY(user.firstname)", False),
    # EQUALS: strings compared when the types differ
    ("=EQUALS(1, '1')", True),
    ("=EQUALS(user.consent_categories.0, '1')", True),
    ("=EQUALS(round, 2)", True),
    ("=EQUALS(flag, 'true')", True),
    ("=EQUALS(flag, 1)", False),
    ("=EQUALS(event_name, 'lead_qualified')", True),
    ("=EQUALS(event_name, 'Lead_Qualified')", False),
    ("=EQUALS(absent, nothing)", True),
    ("=EQUALS(absent, '')", False),
    # SHA256 / MD5
    ("=SHA256(LOWER(TRIM(user.email)))", sha("jane.doe@example.com")),
    ("=SHA256(id)", sha("123456789012345")),
    ("=SHA256(absent)", MISSING),
    ("=MD5('abc')", hashlib.md5(b"abc").hexdigest()),
    ("=MD5(absent)", MISSING),
    # SPLIT (1-based; -1 is the last part)
    ("=SPLIT(user.email, '@', 2)", "Example.COM "),
    ("=SPLIT('a,b,c', ',', 1)", "a"),
    ("=SPLIT('a,b,c', ',', -1)", "c"),
    ("=SPLIT('a,b,c', ',', 4)", MISSING),
    ("=SPLIT('a,b,c', ',', -4)", MISSING),
    ("=SPLIT(absent, ',', 1)", MISSING),
    # literals, bare and braced paths inside formulas
    ("=user.firstname", "Jane"),
    ("={{ user.firstname }}", "Jane"),
    ("=CONCAT({{user.firstname}}, '!')", "Jane!"),
    ("=items.0.product.price", 10),
    ("=42", 42),
    ("=-1.5", -1.5),
    ("=TRUE", True),
    ("=null", MISSING),
    ("='=not a formula'", "=not a formula"),
    ('="say \\"hi\\"\\n"', 'say "hi"\n'),
    ("='it\\'s \\u00e9'", "it's é"),
    ("  =  not_a_formula_but_static", "  =  not_a_formula_but_static"),
    (
        "=IF(ISEMPTY(user.email), user.email_sha256, SHA256(LOWER(TRIM(user.email))))",
        sha("jane.doe@example.com"),
    ),
    ("=IF(ISEMPTY(absent), COALESCE(absent, 'fallback'), 'x')", "fallback"),
]


@pytest.mark.parametrize(("source", "expected"), FUNCTION_CASES)
def test_functions(source: str, expected: Any) -> None:
    value = run(source)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    "source",
    [
        "=IF(flag, 'ok', NUMBER(event_name))",
        "=IF(off, NUMBER(event_name), 'ok')",
        "=COALESCE('ok', NUMBER(event_name))",
        "=COALESCE(absent, 'ok', NUMBER(event_name))",
    ],
)
def test_if_and_coalesce_evaluate_only_what_they_need(source: str) -> None:
    assert run(source) == "ok"


@pytest.mark.parametrize(
    ("source", "event", "fragment", "reason"),
    [
        ("=NUMBER(v)", {"v": "abc"}, "not a number: 'abc'", "invalid_number"),
        ("=NUMBER(v)", {"v": "12,5"}, "'12,5'", "invalid_number"),
        ("=NUMBER(v)", {"v": "1e999"}, "'1e999'", "invalid_number"),
        ("=NUMBER(v)", {"v": [1]}, "list", "invalid_number"),
        ("=LEFT('abc', v)", {"v": "two"}, "whole number, got 'two'", "invalid_argument"),
        ("=LEFT('abc', v)", {}, "got no value", "invalid_argument"),
        ("=SUBSTRING('abc', v)", {"v": 0}, "1 or more, got 0", "invalid_argument"),
        ("=SPLIT('a b', v, 1)", {"v": ""}, "separator is empty", "invalid_argument"),
        ("=SPLIT('a b', ' ', v)", {"v": 0}, "counts from 1", "invalid_argument"),
    ],
)
def test_unusable_values_raise_evaluation_error(
    source: str, event: dict[str, Any], fragment: str, reason: str
) -> None:
    with pytest.raises(EvaluationError) as caught:
        run(source, event)
    assert fragment in caught.value.message
    assert caught.value.reason == reason


def test_evaluation_error_clips_long_values() -> None:
    with pytest.raises(EvaluationError) as caught:
        run("=NUMBER(v)", {"v": "x" * 500})
    assert "xxxx" in str(caught.value)
    assert len(str(caught.value)) < 100


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("source", "position", "fragment"),
    [
        ("=LOWR(user.email)", 1, "unknown function LOWR; did you mean LOWER?"),
        ("=LOWER(TRIM(user.email)", 6, "'(' of LOWER is never closed"),
        ("=LOWER(", 6, "never closed"),
        ("=LOWER(user.email, 'x')", 19, "LOWER takes 1 argument, got 2"),
        ("=REPLACE(a, b)", 13, "REPLACE takes 3 arguments, got 2"),
        ("=SUBSTRING(a)", 12, "SUBSTRING takes 2 to 3 arguments"),
        ("=CONCAT()", 8, "CONCAT takes 1 or more arguments, got 0"),
        ("=CONCAT('a', \"b)", 13, 'string is never closed; add a closing "'),
        ("=LOWER(a) b", 10, "unexpected 'b' after the end of the formula"),
        ("=LOWER(a))", 9, "unexpected ')'"),
        ("=a = b", 3, "use EQUALS(a, b)"),
        ("=CONCAT(a + b)", 10, "use CONCAT"),
        ("=CONCAT(a b)", 10, "expected ',' or ')'"),
        ("=CONCAT(a,,b)", 10, "expected a value before ','"),
        ("=CONCAT(a,)", 10, "expected a value before ')'"),
        ("=", 1, "empty formula"),
        ("=   ", 4, "empty formula"),
        ("=user..email", 6, "empty segment"),
        ("=LOWER(.email)", 7, "starts with '.'"),
        ("=LOWER(user.)", 11, "ends with '.'"),
        ("=user.email(x)", 1, "not a function name"),
        ("=NUMBER('abc')", 1, "NUMBER: not a number: 'abc'"),
        ("=SUBSTRING(x, 0, 2)", 14, "1 or more"),
        ("=LEFT(x, 'a')", 9, "whole number"),
        ("=SPLIT(x, '', 1)", 10, "separator is empty"),
        ("=SPLIT(x, ',', 0)", 15, "counts from 1"),
        ("='a\\qb'", 3, "unknown escape '\\q'"),
        ("='\\u12'", 2, "4 hex digits"),
        ("=CONCAT({{a}", 8, "'{{' is never closed"),
        ("={{ }}", 1, "empty '{{ }}'"),
        ("=FOO(x)", 1, "unknown function FOO"),
        ("=" + "LOWER(" * 40 + "x" + ")" * 40, 193, "nested more than 32"),
        ("Hello {{user.firstname", 6, "'{{' is never closed"),
        ("Hello {{}}", 6, "empty '{{ }}'"),
        ("Hi {{ user..x }}", 11, "empty segment"),
        ("Hi {{ first name }}", 11, "' ' cannot appear in a property path"),
        ("{{a}} {{b.}}", 9, "ends with '.'"),
        # Typos that were sent as they are ("Won}" as a Facebook event name):
        ("{{crm_stage}}}", 13, "one '}' too many"),
        ("crm_stage}}", 9, "'}}' closes no '{{'"),
        ("Won }} {{a}}", 4, "'}}' closes no '{{'"),
        ("{{a}} and }}", 10, "'}}' closes no '{{'"),
        ("[CRM] {{crm_stage}}}", 19, "one '}' too many"),
        ("{Lead}} qualified", 5, "'}}' closes no '{{'"),
    ],
)
def test_expression_errors_point_at_the_problem(source: str, position: int, fragment: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source, key="smart_mapping.user_data.em")
    err = caught.value
    assert (err.key, err.position) == ("smart_mapping.user_data.em", position)
    assert fragment in err.message
    assert str(err).startswith(
        f"smart_mapping.user_data.em: {err.message} (at position {position}: "
    )


def test_error_excerpt_shows_the_text_around_the_position() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("=LOWER(user..email)", key="k")
    assert str(caught.value).endswith("(at position 12: '=LOWER(user.>>>.email)')")


# ---------------------------------------------------------------------------- paths attribute


@pytest.mark.parametrize(
    ("source", "kind", "paths"),
    [
        ("static", "static", ()),
        ("{{ user.email }}", "path", ("user.email",)),
        ("{{b}} and {{a}} and {{b}}", "template", ("b", "a")),
        (
            "=IF(ISEMPTY(user.email), user.email_sha256, SHA256(LOWER(user.email)))",
            "formula",
            ("user.email", "user.email_sha256"),
        ),
        (
            "=COALESCE(id, facebook_lead_id, {{crm.id}})",
            "formula",
            ("id", "facebook_lead_id", "crm.id"),
        ),
        ("=CONCAT('a', 1, true)", "formula", ()),
    ],
)
def test_paths_lists_what_the_expression_reads(
    source: str, kind: str, paths: tuple[str, ...]
) -> None:
    expr = compile_expression(source, key="k")
    assert (expr.kind, expr.paths, expr.source) == (kind, paths, source)


# ---------------------------------------------------------------------------- properties

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["", "12", "-3", "1.5", "abc", " 7 ", "a,b", "0"])
)
KEYS = st.sampled_from(["a", "b", "0", "1", "user"])
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12,
)
EVENTS = st.dictionaries(KEYS, JSON, max_size=5)

PATHS = st.sampled_from(["a", "b", "a.b", "a.0", "user.a", "b.1.a", "0", "user.0.b"])
LITERALS = st.sampled_from(
    ["''", "'x'", "','", "' a '", "0", "1", "-1", "2", "1.5", "true", "null"]
)


ARITIES = [
    (name, arity)
    for name, arities in {
        "COALESCE": (1, 2, 3),
        "CONCAT": (1, 2, 3),
        "EQUALS": (2,),
        "IF": (2, 3),
        "ISEMPTY": (1,),
        "LEFT": (2,),
        "LENGTH": (1,),
        "LOWER": (1,),
        "MD5": (1,),
        "NUMBER": (1,),
        "REPLACE": (3,),
        "RIGHT": (2,),
        "SHA256": (1,),
        "SPLIT": (3,),
        "STRING": (1,),
        "SUBSTRING": (2, 3),
        "TRIM": (1,),
        "UPPER": (1,),
    }.items()
    for arity in arities
]


def _calls(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        *[
            st.lists(inner, min_size=arity, max_size=arity).map(
                lambda args, name=name: f"{name}({', '.join(args)})"
            )
            for name, arity in ARITIES
        ]
    )


FORMULA_VALUES = st.recursive(PATHS | LITERALS, _calls, max_leaves=10)

FORMULA_ALPHABET = "=(){}.,'\"\\ -_$@01azLOWERTRIMCONAT"


@settings(max_examples=500)
@given(
    st.text()
    | st.text(alphabet=FORMULA_ALPHABET)
    | st.text(alphabet=FORMULA_ALPHABET).map(lambda text: "=" + text)
    | FORMULA_VALUES.map(lambda body: "=" + body)
)
def test_compile_raises_only_expression_errors(source: str) -> None:
    try:
        expr = compile_expression(source, key="k")
    except ExpressionError as err:
        assert 0 <= err.position <= len(source)
    else:
        assert expr.source == source


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(FORMULA_VALUES, EVENTS)
def test_evaluation_raises_only_evaluation_errors_and_never_returns_none(
    body: str, event: dict[str, Any]
) -> None:
    try:
        expr = compile_expression("=" + body, key="k")
    except ExpressionError:
        return  # constant arguments that fail are config errors, tested above
    try:
        value = expr.evaluate(event)
    except EvaluationError:
        return
    assert value is not None


@pytest.mark.parametrize(
    "source",
    ['{"a":{"b":1}}', '{"n":{{n}}}', '[{"id":"{{id}}"}]', '{{plan}}: {"tier":{"a":1}}', "a } b"],
)
def test_text_may_close_its_own_braces(source: str) -> None:
    """The check for a stray '}}' counts the text's own braces: JSON-like text keeps them, and
    a lone '}' is text."""
    assert compile_expression(source, key="smart_mapping.custom_data.x").source == source
