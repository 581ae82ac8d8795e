"""The README's job-spec and configuration tables match the code they document."""

from pathlib import Path

from scripts.gen_reference import config_table, replace_block, spec_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_reference_tables_are_current():
    text = README.read_text()
    regenerated = replace_block(replace_block(text, "spec-reference", spec_table()), "config-reference", config_table())
    assert regenerated == text, "README reference tables are stale: run `python scripts/gen_reference.py --write`"


def test_every_spec_field_is_documented():
    table = spec_table()
    for needle in ("`edit.keep_mass`", "`calibration.max_tokens`", "`evaluation.agreement.k`", "`output.path`"):
        assert needle in table
