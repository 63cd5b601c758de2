"""The dispatcher from a rule's shell line to its stage: every command's options come from its job function's
signature, so an option is written once, and none restates a config default."""

import inspect
import re
import subprocess
import sys

import pytest

from advkd.cli import STAGES, main, stage_function, stage_parser


@pytest.mark.parametrize("command", sorted(STAGES))
def test_every_stage_builds_its_options_from_its_signature_without_config_defaults(command):
    func = stage_function(command)
    parser = stage_parser(command, func)   # raises on a positional parameter or a type it has no option for
    options = {a.dest: a for a in parser._actions if a.dest not in ("help", "threads")}
    assert set(options) == set(inspect.signature(func).parameters)
    # an option a rule leaves out means "not given" (None) or "not asked" (a flag left off), never a config value
    defaults = {name: a.default for name, a in options.items() if not a.required}
    assert all(v in (None, False) for v in defaults.values()), defaults


def test_every_rule_command_is_a_stage(repo_root):
    """The shell line of every rule calls a stage the dispatcher knows, with options the stage has."""
    for smk in sorted((repo_root / "workflow" / "rules").glob("*.smk")):
        for command, line in re.findall(r'"advkd ([a-z-]+)((?:[^"]|"\s*\n\s*")*)"', smk.read_text()):
            assert command in STAGES, f"{smk.name}: advkd {command}"
            known = {a for act in stage_parser(command, stage_function(command))._actions
                     for a in act.option_strings}
            used = set(re.findall(r"(--[a-z][a-z0-9-]*)", line))
            assert used <= known, f"{smk.name}: advkd {command} has no {sorted(used - known)}"


def test_a_missing_option_or_unknown_stage_stops_with_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["merge-samples", "--shards", "a", "--n", "4", "--out", "x"])
    assert e.value.code == 2 and "--grid" in capsys.readouterr().err
    assert main(["no-such-stage"]) == 2 and "unknown stage 'no-such-stage'" in capsys.readouterr().err


def test_help_lists_every_stage_without_importing_torch():
    code = ("import sys; from advkd.cli import main; main(['--help']); "
            "assert 'torch' not in sys.modules, 'advkd --help imported torch'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert all(command in out.stdout for command in STAGES)
