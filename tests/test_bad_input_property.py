"""Property-based: any job a user (or an attacker) might write, and any --set string, is either a
valid job or one line that names the problem with exit code 2, never a Python traceback.

hypothesis draws job documents from the real field names (each task's section too) with values
of every YAML type, mixed with unknown keys and garbage, and --set strings of any text."""


import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlmine_ray.app.jobfile import load_job, parse_overrides
from dlmine_ray.cli import main
from dlmine_ray.errors import DlmineError
from dlmine_ray.spec import JobSpec
from dlmine_ray.tasks import TASKS

SECTIONS = {name: list(field.annotation.model_fields) if hasattr(field.annotation, "model_fields") else []
            for name, field in JobSpec.model_fields.items()}
FIELDS = sorted(SECTIONS)
DOTTED = sorted({f"{s}.{k}" for s, ks in SECTIONS.items() for k in ks} | set(FIELDS))

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                    st.sampled_from(["builtin:digits", "classify", "cluster", "../../x", "1e-3", "[64, 32]",
                                     "__import__('os')", "@os.system", "label == 0", "-1", "0", ""]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=8)


@st.composite
def job_docs(draw):
    doc = {}
    for key in draw(st.lists(st.sampled_from(FIELDS + ["trainn", "__class__", "x"]), max_size=6, unique=True)):
        keys = SECTIONS.get(key) or []
        if keys and draw(st.booleans()):  # a section: its own fields, sometimes a stranger
            doc[key] = {k: draw(values) for k in draw(st.lists(st.sampled_from(keys + ["bogus"]), max_size=4,
                                                              unique=True))}
        else:
            doc[key] = draw(values)
    if draw(st.booleans()):
        doc["task"] = draw(st.sampled_from(sorted(TASKS) + ["nope"]))
    if draw(st.booleans()):
        doc.setdefault("data", {})
        if isinstance(doc["data"], dict):
            doc["data"]["path"] = "builtin:iris"
    return doc


def _one_line(err: DlmineError) -> None:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text, text


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(doc=job_docs(), sets=st.lists(st.text(max_size=40), max_size=3))
def test_any_job_and_set_strings_validate_or_fail_in_one_line(tmp_path, doc, sets):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        spec = load_job(path, parse_overrides(sets))
    except DlmineError as err:
        _one_line(err)
    else:
        assert isinstance(spec, JobSpec)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(DOTTED + ["a..b", ".", "data.", "tune.space.x"]), raw=st.text(max_size=30))
def test_the_cli_exits_2_with_one_error_line_for_a_bad_override(tmp_path, capsys, key, raw):
    """Through `dlmine run`: an override that makes the job invalid is exit code 2 and one line;
    a valid one is left alone here (it would run the job)."""
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "data": {"path": str(tmp_path / "none.parquet"), "target": "y"}}))
    pair = f"{key}={raw}"
    try:
        load_job(path, parse_overrides([pair]))
    except DlmineError:
        capsys.readouterr()
        code = main(["run", str(path), "-o", str(tmp_path / "out"), "--set", pair])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (pair, err)
        assert not (tmp_path / "out").exists()
