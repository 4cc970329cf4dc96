"""Every list a user reads in README.md and docs/ against the registry it copies: the model families with their
defaults, the divergences with their formulas and parameters, the reductions, the objectives with their parameters'
defaults, the parameters presets, the critic's defaults, and the messages docs/errors.md quotes. A failure names the
document, the list and what to add, remove or correct."""
import contextlib
import re
from pathlib import Path

import pytest

from comfyui_unlearn.divergences import DIVERGENCES, REDUCTIONS, CriticSettings, closed_forms, get_divergence
from comfyui_unlearn.unlearning import (FAMILIES, OBJECTIVES, PRESETS, ErasureConfig, FamilyProfile, family_for,
                                        get_objective, resolve)

ROOT = Path(__file__).resolve().parents[1]


def read(document: str) -> str:
    return (ROOT / document).read_text()


def flowing(text: str) -> str:
    """The text with its line breaks and runs of spaces as single spaces, as Markdown renders it."""
    return " ".join(text.split())


def tables(text: str) -> list:
    """Every Markdown table in text: a list of rows of stripped cells, the header first, the |---| row left out."""
    found, rows = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(set(cell) <= set("-: ") for cell in cells):
                rows.append(cells)
        elif rows:
            found.append(rows)
            rows = []
    return found


def table(document: str, header: list) -> tuple:
    """(header, rows) of the one table of the document whose header starts with these cells."""
    found = [rows for rows in tables(read(document)) if rows[0][:len(header)] == header]
    assert len(found) == 1, f"{document} should have one table headed {' | '.join(header)}, has {len(found)}"
    return found[0][0], found[0][1:]


def row_starting(rows: list, start: str) -> list:
    found = [row for row in rows if row[0].startswith(start)]
    assert len(found) == 1, f"one row should start with {start!r}, {len(found)} do"
    return found[0]


def code_spans(text: str) -> list:
    return re.findall(r"`([^`]+)`", text)


def list_item(document: str, start: str) -> str:
    """The Markdown list item that starts with `start`, up to the next item or blank line, flowing."""
    match = re.search(rf"^{re.escape(start)}.*?(?=^- |^\s*$)", read(document), re.M | re.S)
    assert match, f"{document} has no list item starting {start!r}"
    return flowing(match.group(0))


def mentions(text: str, phrase: str) -> bool:
    """Whether text holds phrase as a whole (so that "cfg 4" is not found in "cfg 4.5"), ignoring case."""
    return re.search(rf"(?<![\w.]){re.escape(phrase)}(?![\w.])", text, re.I) is not None


def assert_same_names(documented: list, registered: list, where: str, registry: str) -> None:
    missing = [name for name in registered if name not in documented]
    unknown = [name for name in documented if name not in registered]
    repeated = sorted({name for name in documented if documented.count(name) > 1})
    assert not (missing or unknown or repeated), (
        f"{where} should list each name of {registry} once: "
        + "; ".join(part for part in [missing and f"add {', '.join(missing)}",
                                      unknown and f"register {', '.join(unknown)} in {registry} (or remove it from {where})",
                                      repeated and f"list {', '.join(repeated)} once"] if part))


def profiles_by_config() -> dict:
    """Each registered family's profile once, under the first ComfyUI model-config name it was registered for."""
    first = {}
    for config, profile in FAMILIES.items():
        first.setdefault(id(profile), (config, profile))
    return dict(first.values())


# Model families.

def test_the_readme_lists_every_model_family_by_its_name_and_config_names():
    _, rows = table("README.md", ["family (ComfyUI's config)"])
    documented = [config for row in rows for config in code_spans(row[0])]
    assert_same_names(documented, list(FAMILIES), "README.md's Supported models table (each family's ComfyUI config "
                      "names in backticks, first column)", "unlearning.FAMILIES")
    for row in rows:
        for config in filter(FAMILIES.__contains__, code_spans(row[0])):
            name = FAMILIES[config].name
            assert name in row[0], (f"README.md's Supported models row of `{config}` should call the family "
                                    f"{name!r}, the name its error messages use (unlearning.FAMILIES['{config}'])")


def test_the_readme_gives_every_model_family_its_default_size_steps_and_cfg():
    header, rows = table("README.md", ["family (ComfyUI's config)"])
    defaults_at = header.index("default training size")
    for row in rows:
        for config in filter(FAMILIES.__contains__, code_spans(row[0])):   # the test above names the others
            profile = FAMILIES[config]
            width, height = profile.size()
            expected = [f"{width} px" if width == height else f"{width} x {height} px",
                        f"{profile.sampling.steps} steps", f"cfg {profile.sampling.cfg:g}"]
            missing = [phrase for phrase in expected if not mentions(row[defaults_at], phrase)]
            assert not missing, (f"README.md's Supported models row of `{config}` gives {row[defaults_at]!r}; "
                                 f"unlearning.FAMILIES['{config}'] samples at {', '.join(expected)}: write "
                                 f"{', '.join(missing)}")


def test_the_readme_names_only_presets_that_exist_in_the_family_tables_header():
    header, _ = table("README.md", ["family (ComfyUI's config)"])
    for name in code_spans(" ".join(header)):
        assert name in PRESETS, f"README.md's Supported models header names the preset `{name}`, not in PRESETS"


def families_taking_uce() -> list:
    """The names of the families whose plan takes the uce objective."""
    taken = []
    for config, profile in profiles_by_config().items():
        with contextlib.suppress(ValueError):
            resolve(ErasureConfig(family=config, objective="uce"))
            taken.append(profile.name)
    return taken


def test_the_readme_names_the_families_uce_takes():
    listed = re.search(r"on the `text_input` weights of every family \(([^()]*)\)", flowing(read("README.md")))
    assert listed, ("README.md's recommended setting should name the families UCE takes: 'on the `text_input` "
                    "weights of every family (...)'")
    assert_same_names(listed.group(1).split(", "), families_taking_uce(),
                      "README.md's recommended setting (Choosing settings)", "the families whose plan takes the uce objective")


# Divergences.

def test_divergences_md_gives_every_closed_form_with_its_formula():
    header, rows = table("docs/divergences.md", ["`divergence`"])
    formula_at = header.index("g(m)")
    names = [code_spans(row[0])[0] for row in rows]
    assert_same_names(names, closed_forms(), "docs/divergences.md's table of closed forms",
                      "the closed forms of divergences.DIVERGENCES")
    for name, formula in zip(names, (row[formula_at] for row in rows)):
        registered = get_divergence(name).formula
        assert formula == registered, (f"docs/divergences.md gives {name} the formula {formula!r} and "
                                       f"divergences/registry.py {registered!r}: make them agree")


def test_divergences_md_names_every_variational_form():
    text = flowing(read("docs/divergences.md"))
    listed = re.search(r"For (`[^.]*?`), the divergence can also be trained in its min-max", text)
    assert listed, "docs/divergences.md should say 'For `kl`, ..., the divergence can also be trained in its min-max'"
    variational = [name.removeprefix("variational_") for name, d in DIVERGENCES.items() if d.variational]
    assert_same_names(code_spans(listed.group(1)), variational,
                      "docs/divergences.md's list of divergences with a variational form",
                      "the variational_* entries of divergences.DIVERGENCES")


def test_divergences_md_lists_every_reduction_and_marks_the_default():
    _, rows = table("docs/divergences.md", ["reduction"])
    assert_same_names([code_spans(row[0])[0] for row in rows], list(REDUCTIONS),
                      "docs/divergences.md's reductions table", "divergences.REDUCTIONS")
    defaults = [code_spans(row[0])[0] for row in rows if "(default)" in row[0]]
    assert defaults == [ErasureConfig().reduction], "docs/divergences.md marks the wrong reduction '(default)'"


def test_the_readme_gives_each_divergence_parameter_its_default_and_its_divergences():
    _, rows = table("README.md", ["node"])
    settings = row_starting(rows, "Unlearn Divergence Options")[1]
    documented = {name: (float(default), code_spans(owners))
                  for name, default, owners in re.findall(r"`(\w+)` \(([-\d.e]+), for ([^)]*)\)", settings)}
    registered = {}
    for name in closed_forms():
        for parameter in get_divergence(name).parameters:
            registered.setdefault(parameter.name, (parameter.default, []))[1].append(name)
    assert documented == registered, (f"README.md's Unlearn Divergence Options row gives the divergences' parameters "
                                      f"as {documented}; divergences/registry.py has {registered} "
                                      f"(name: (default, the divergences that take it))")
    config = ErasureConfig()
    for name, shown in [("temperature", f"`temperature` ({config.temperature})"),
                        ("reduction", f"`reduction` (`{config.reduction}`")]:
        assert shown in settings, (f"README.md's Unlearn Divergence Options row should give `{name}` the default of "
                                   f"unlearning.ErasureConfig: {shown}")


@pytest.mark.parametrize("document", ["README.md", "docs/divergences.md"])
def test_the_critic_defaults_in_the_docs_are_critic_settings(document):
    documented = re.findall(r"`critic_(\w+)` \(([^),;]+)", read(document))
    assert documented, f"{document} names no `critic_<setting>` (default)"
    defaults = CriticSettings()
    for field, value in documented:
        assert hasattr(defaults, field), f"{document} names `critic_{field}`, which CriticSettings does not have"
        default = getattr(defaults, field)
        expected = ("on" if default else "off") if isinstance(default, bool) else default
        assert (value if isinstance(default, bool) else float(value)) == expected, (
            f"{document} gives `critic_{field}` the default {value}; divergences.CriticSettings has {default}")


# Objectives.

def test_the_readme_names_every_objective_and_marks_the_default():
    _, rows = table("README.md", ["objective", "use it for"])
    titles = [row[0].removesuffix(" (default)") for row in rows]
    registered = [objective.title for objective in OBJECTIVES.values()]
    assert_same_names(titles, registered, "README.md's objective table (Choosing settings)",
                      "the titles of unlearning.OBJECTIVES")
    default = OBJECTIVES[ErasureConfig().objective].title
    assert [row[0] for row in rows if row[0].endswith("(default)")] == [f"{default} (default)"]
    _, option_rows = table("README.md", ["node"])
    objective_row = row_starting(option_rows, "Unlearn Objective: ")
    assert_same_names(objective_row[0].removeprefix("Unlearn Objective: ").split(" / "), registered,
                      "README.md's option node row 'Unlearn Objective: ...'", "the titles of unlearning.OBJECTIVES")
    assert f"No objective node: {default}." in objective_row[1]


def test_methods_md_gives_every_objective_with_its_parameters_and_their_defaults():
    header, rows = table("docs/methods.md", ["`objective`"])
    parameters_at = header.index("parameters (defaults)")
    names = [code_spans(row[0])[0] for row in rows]
    assert_same_names(names, list(OBJECTIVES), "docs/methods.md's objective table", "unlearning.OBJECTIVES")
    assert [code_spans(row[0])[0] for row in rows if "(default)" in row[0]] == [ErasureConfig().objective]
    for name, row in zip(names, rows):
        # "guidance eta (1.0), trajectory_steps (20)": a parameter, optionally its symbol, its default.
        documented = {parameter: float(default) for parameter, default in
                      re.findall(r"(?:^|, )([a-z_]+)(?: [a-z_]+)? \((-?[\d.e+]+)", row[parameters_at])}
        registered = {parameter.name: float(parameter.default) for parameter in OBJECTIVES[name].parameters}
        assert documented == registered, (f"docs/methods.md gives {name} the parameters (defaults) {documented}; "
                                          f"unlearning.OBJECTIVES['{name}'] has {registered}")


# Parameters presets.

def test_the_readme_and_methods_md_list_every_parameters_preset():
    assert_same_names(code_spans(list_item("README.md", "- **Parameters.**")), list(PRESETS),
                      "README.md's Parameters bullet (Choosing settings)", "unlearning.PRESETS")
    _, rows = table("docs/methods.md", ["preset", "weights", "use"])
    assert_same_names([code_spans(row[0])[0] for row in rows], list(PRESETS),
                      "docs/methods.md's presets table", "unlearning.PRESETS")
    for rows in tables(read("docs/methods.md")):
        if rows[0][0] == "preset":
            for row in rows[1:]:
                assert code_spans(row[0])[0] in PRESETS, f"docs/methods.md describes a preset {row[0]} not in PRESETS"


def test_the_readmes_input_table_gives_the_engines_defaults():
    _, rows = table("README.md", ["input", "default"])
    config = ErasureConfig()
    for row in rows:
        name, documented = code_spans(row[0])[0], row[1].strip("`")
        if hasattr(config, name):
            default = getattr(config, name)
            assert (documented if isinstance(default, str) else float(documented)) == default, (
                f"README.md's Unlearn Model table gives `{name}` the default {documented}; "
                f"unlearning.ErasureConfig has {default}")


def test_the_readmes_recommended_objective_defaults_are_its_parameters():
    recommended = list_item("README.md", "- **To erase a concept, not just one phrase of it (recommended):**")
    named = re.search(r"\*\*Unlearn Objective: ([^*]+)\*\* at its defaults \(([^;)]*)", recommended)
    assert named, "README.md's recommended setting should read '**Unlearn Objective: <title>** at its defaults (...)'"
    objective = next(o for o in OBJECTIVES.values() if o.title == named.group(1))
    documented = {name: float(value) for name, value in re.findall(r"(\w+) ([-\d.e]+)", named.group(2))}
    registered = {p.name: float(p.default) for p in objective.parameters}
    assert documented == registered, (f"README.md's recommended setting gives {objective.name}'s defaults as "
                                      f"{documented}; unlearning.OBJECTIVES['{objective.name}'] has {registered}")


# The messages docs/errors.md quotes, with "…" or "..." standing for any text.

def documented_message(start: str) -> str:
    _, rows = table("docs/errors.md", ["#", "bad input"])
    found = [message for row in rows for message in code_spans(row[2]) if message.startswith(start)]
    assert len(found) == 1, f"docs/errors.md should quote one message starting {start!r}, quotes {len(found)}"
    return found[0]


@pytest.mark.parametrize("start,refuse", [
    ("divergence 'mse' is unknown", lambda: get_divergence("mse")),
    ("model is a HunyuanDiT model", lambda: family_for("HunyuanDiT")),
    ("critic settings apply", lambda: get_divergence("hellinger").bind(critic=CriticSettings())),
    ("the element reduction applies", lambda: get_divergence("variational_kl").bind(reduction="element")),
    ("alpha = 0.0 cannot be used", lambda: get_divergence("renyi").bind(params={"alpha": 0.0})),
    ("alpha must be between", lambda: get_divergence("alpha").bind(params={"alpha": float("nan")})),
    ("the uce objective edits linear weights", lambda: get_objective("uce").check_family(FamilyProfile("Test DiT", (), {}))),
], ids=lambda value: value if isinstance(value, str) else "")
def test_the_messages_errors_md_quotes_are_the_codes(start, refuse):
    with pytest.raises(ValueError) as refused:
        refuse()
    documented = documented_message(start)
    pattern = ".*?".join(re.escape(part) for part in re.split(r"…|\.\.\.", documented))
    said = str(refused.value)
    differs = next((i for i, (a, b) in enumerate(zip(documented, said)) if a != b), min(len(documented), len(said)))
    assert re.fullmatch(pattern, said, re.S), (
        f"docs/errors.md quotes\n  {documented}\nand the code says\n  {said}\nthey part at "
        f"{said[max(differs - 20, 0):differs + 40]!r}: correct the row in docs/errors.md")
