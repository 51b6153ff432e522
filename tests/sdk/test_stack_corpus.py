"""sdk.stack against 80 real stack files (``../shared/corpus/stack-yml``, see its INDEX.md).

Every file INDEX.md marks **ANOMALY** must fail with a specific message; every other file
must parse with an empty environment and match the facts INDEX.md records for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from sdk.openfaas import Resources
from sdk.stack import Stack, StackError, check_languages, load_stack, parse_stack

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "stack-yml"
pytestmark = pytest.mark.skipif(
    not (CORPUS / "INDEX.md").is_file(), reason=f"stack.yml corpus not found at {CORPUS}"
)


@dataclass(frozen=True)
class Entry:
    """One INDEX.md line: what the corpus notes say about a file."""

    file: str
    has_version: bool
    provider: str
    gateway_form: str  # "url", "${}" (substituted) or "none"
    functions: int
    langs: frozenset[str]
    fields: frozenset[str]  # function-level keys used somewhere in the file
    configuration: frozenset[str]  # e.g. {"templates"}, {"copy_extra_paths"}
    anomaly: bool


_ENTRY = re.compile(
    r"^- `(?P<file>[^`]+)` .*? — (?P<ver>ver|no-ver); prov=(?P<prov>[^;]+); gw=(?P<gw>[^;]+); "
    r"fns=(?P<fns>\d+); langs=(?P<langs>[^;]+); fields=(?P<fields>[^;—]+?)"
    r"(?:; configuration:(?P<config>[^;—\s]+))?(?:; provider\.network)? — (?P<notes>.*)$"
)


def _entries() -> dict[str, Entry]:
    if not (CORPUS / "INDEX.md").is_file():
        return {}
    out = {}
    for line in (CORPUS / "INDEX.md").read_text(encoding="utf-8").splitlines():
        if not line.startswith("- `"):
            continue
        m = _ENTRY.match(line)
        assert m, f"INDEX.md line not understood: {line[:120]}"
        out[m["file"]] = Entry(
            file=m["file"],
            has_version=m["ver"] == "ver",
            provider=m["prov"],
            gateway_form=m["gw"],
            functions=int(m["fns"]),
            langs=frozenset(m["langs"].split(",")) - {"-"},
            fields=frozenset(m["fields"].split(",")) - {"-"},
            configuration=frozenset((m["config"] or "").split(",")) - {""},
            anomaly="**ANOMALY" in m["notes"],
        )
    return out


ENTRIES = _entries()
VALID = sorted(name for name, e in ENTRIES.items() if not e.anomaly)

# Every anomaly: (line, field, fragments the message must contain).
ANOMALIES = {
    "ajaxe__openfaas-functions__all.yml": (
        25, "functions.unfluff", ["duplicate key 'unfluff'", "line 5", "line 25"]),
    "stevef1uk__openfaas-go-handler__stack.yml": (
        10, "functions.go1.image", ["duplicate key 'image'", "line 9", "line 10"]),
    "fjudith__nozzle__openfaas_stack.yml": (
        68, "functions.rescale-replicas.constraints",
        ["duplicate key 'constraints'", "line 62", "line 68"]),
    "openfaas__faas__sample-functions_stack.yml": (46, None, ["TAB character at column 20"]),
    "halay08__hasura-openfaas__functions_send-notification.yml": (
        9, "functions.send-notification.timeout", ["unknown field 'timeout'", "read_timeout"]),
    "Alexandreschoukroun__mspr-serveurless-cofrap__stack.yml": (
        11, "functions.generate-password.imagePullPolicy", ["unknown field 'imagePullPolicy'"]),
    "alexellis__go-long__stack.yml": (
        45, "functions.py-long.annotation",
        ["unknown field 'annotation' (did you mean 'annotations'?)"]),
    "DriesCruyskens__openfaas-faasd-cron-connector-template__functions_stack.yml": (
        4, "provider.gateway", ["'<fill in your gateway URL>' is not a URL"]),
    "stefanprodan__openfaas-gke__functions_stack.yml": (
        8, "functions.certinfo.handler",
        ["handler must be a folder path, not a command", "'node main.js'"]),
}  # fmt: skip

# Attribute of StackFunction that is non-empty when INDEX.md lists the field.
_FIELD_ATTRIBUTES = {
    "lang", "handler", "image", "fprocess", "environment", "environment_file", "secrets",
    "skip_build", "constraints", "labels", "limits", "requests", "build_options",
    "annotations", "build_args", "readonly_root_filesystem",
}  # fmt: skip


def load(name: str) -> Stack:
    return load_stack(CORPUS / name, {})


def test_index_lists_every_corpus_file():
    on_disk = {p.name for p in CORPUS.iterdir() if p.name != "INDEX.md"}
    assert on_disk == set(ENTRIES)
    assert len(ENTRIES) == 80


def test_every_indexed_anomaly_has_an_expected_message():
    assert {n for n, e in ENTRIES.items() if e.anomaly} == set(ANOMALIES)


@pytest.mark.parametrize("name", sorted(ANOMALIES))
def test_corpus_anomaly_raises_specific_stack_error(name):
    line, field, fragments = ANOMALIES[name]
    with pytest.raises(StackError) as caught:
        load(name)
    err = caught.value
    assert (err.file, err.line, err.field) == (str(CORPUS / name), line, field)
    for fragment in fragments:
        assert fragment in str(err)


def test_corpus_empty_functions_anomaly_also_reports_no_functions():
    # The file has two faults; the gateway comes first. With it fixed, the other shows.
    name = "DriesCruyskens__openfaas-faasd-cron-connector-template__functions_stack.yml"
    text = (CORPUS / name).read_text().replace("<fill in your gateway URL>", "http://gw:8080")
    with pytest.raises(StackError) as caught:
        parse_stack(text, filename=name, env={})
    assert str(caught.value) == f"{name}:5: functions: no functions defined"


def test_corpus_nodejs_anomaly_also_has_an_unknown_language():
    name = "stefanprodan__openfaas-gke__functions_stack.yml"
    text = (CORPUS / name).read_text().replace("node main.js", "./certinfo")
    stack = parse_stack(text, filename=name, env={})
    with pytest.raises(StackError) as caught:
        check_languages(stack, ["node", "node18", "python3-http"])
    assert str(caught.value) == (
        f"{name}:6: functions.certinfo.lang: unknown language 'nodejs' "
        "(available: node, node18, python3-http)"
    )


@pytest.mark.parametrize("name", VALID)
def test_corpus_valid_file_matches_its_index_entry(name):
    entry, stack = ENTRIES[name], load(name)
    functions = list(stack.functions.values())
    assert len(functions) == entry.functions
    assert {fn.lang.lower() for fn in functions if fn.lang} == {x.lower() for x in entry.langs}
    assert stack.provider_name == entry.provider
    assert (stack.version == "1.0") is entry.has_version
    if entry.gateway_form == "none":
        assert stack.gateway == ""
    else:
        assert stack.gateway.startswith(("http://", "https://"))
    for field in entry.fields & _FIELD_ATTRIBUTES:
        assert any(getattr(fn, field) for fn in functions), f"no function has {field}"
    assert bool(stack.templates) is ("templates" in entry.configuration)
    assert bool(stack.copy) is ("copy_extra_paths" in entry.configuration)
    assert all(fn.line > 0 for fn in functions)


# (file, function, attribute, expected): facts the INDEX.md notes call out.
FACTS = [
    ("halay08__hasura-openfaas__functions_authorize-otp.ci.yml", "authorize-otp", "image",
     "localhost:5000/authorize-otp"),
    ("alexellis__python3-http-vs-fastapi__stack.yaml", "fastapi", "image",
     "docker.io/alexellis2/fastapi:latest"),
    ("openfaas__store-functions__stack.yml", "figlet", "image", "ghcr.io/openfaas/figlet:latest"),
    ("openfaas__faas-cli__stack.yml", "url-ping", "image", "alexellis/faas-url-ping:0.2"),
    ("ccfontes__faas-bb__examples_stack.yml", "bb-http-hello", "image", "/bb-http-hello"),
    ("mrwormhole__lamia__functions_stack.yml", "get-invoice", "build_args", {"GO111MODULE": "off"}),
    ("genebean__fbc-slackbot__functions_stack.yml", "fbc-slackbot-python", "environment",
     {"RAW_BODY": "True"}),
    ("stephanprobst__issue-bot__issue-bot.yml", "issue-bot", "environment_file", ["env.yml"]),
    ("stephanprobst__issue-bot__issue-bot.yml", "sentimentanalysis", "lang", ""),
    ("Qolzam__openfaas-email__stack.yml", "email-fn", "labels",
     {"com.openfaas.scale.zero": "false"}),
    ("roleypoly__faas-rpc-example__functions_stack.yml", "greeter--say-hello", "annotations",
     {"com.roleypoly/faas-rpc": "greeter.Greeter/SayHello$"}),
    ("milosveljkovic__openfaas-edge__functions_director.yml", "director", "annotations",
     {"rescheduled/quasi": ""}),
    ("zanderhavgaard__faas-benchmarker__cloud_functions_openfaas_faas_benchmarker_functions.yml",
     "monolith", "build_options", ["dev"]),
    ("Desno365__location-aware-edge-api__functions_stack.yml", "myfunc", "requests",
     Resources(memory="1Mi", cpu="0m")),
    ("YusufYrkl__BA2-OpenFaaS-ML-Functions__yolov5s-inference.yml", "yolov5s-inference",
     "requests", Resources(memory="1.5Gi", cpu="1")),
    ("jpauwels__faas-audio-analysis__stack.yml", "sonic-annotator", "readonly_root_filesystem",
     False),
    ("jpauwels__faas-audio-analysis__stack.yml", "analysis", "readonly_root_filesystem", True),
    ("openfaas__openfaas-cloud__stack.yml", "echo", "skip_build", True),
    ("openfaas__openfaas-cloud__stack.yml", "echo", "fprocess", "cat"),
    ("alexellis__derek__stack.yml", "open-derek", "handler", "./"),
    ("alexellis__derek__stack.yml", "open-derek", "is_dockerfile", True),
    ("MehmetcanMutlu__openfaas-chaos-engineering-framework__stack.yml", "order-validator",
     "handler", "."),
    ("openfaas__faas__stack_arm.yml", "nodeinfo", "handler", ""),
    ("openfaas__faas__stack_arm.yml", "wordcount", "fprocess", "wc"),
    ("openfaas__faas-cli__samples.yml", "url_ping", "lang", "python"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "function", "attribute", "expected"),
    FACTS,
    ids=[f"{fn}-{attribute}" for _, fn, attribute, _ in FACTS],
)
def test_corpus_file_value_is_read_as_faas_cli_reads_it(name, function, attribute, expected):
    assert getattr(load(name).functions[function], attribute) == expected


def test_corpus_configuration_entries_are_read():
    assert load("LucasRoesler__copy-common-example__stack.yml").copy == ["./common"]
    templates = load("LucasRoesler__openfaas-golang-template-workspace__stack.yml").templates
    assert [(t.name, t.source.rsplit("#", 1)[-1]) for t in templates] == [
        ("go", "feat-upgrade-golang-to-118-and-support-mod")
    ]


def test_corpus_file_with_env_set_substitutes_values():
    stack = load_stack(CORPUS / "openfaas__store-functions__stack.yml", {"OWNER": "me", "TAG": "1"})
    assert stack.functions["figlet"].image == "ghcr.io/me/figlet:1"
