"""The installed `brainrecon` command: entry point, help, configuration and bad input."""
import subprocess

from conftest import BIN, ROOT


def brainrecon(*args, env=None):
    return subprocess.run([str(BIN / "brainrecon"), *args], capture_output=True, text=True, cwd=ROOT, env=env)


def test_help_lists_commands():
    res = brainrecon("--help")
    assert res.returncode == 0, res.stderr
    for command in ("config", "mini", "prepare", "reproduce"):
        assert command in res.stdout


def test_config_defaults_to_mini_world_and_reads_environment(isolated_env, tmp_path):
    res = brainrecon("config", env=isolated_env)
    assert res.returncode == 0, res.stderr
    assert "nsd_root: null" in res.stdout and str(tmp_path / "data") in res.stdout
    res = brainrecon("config", env={**isolated_env, "BRAINRECON_NSD_ROOT": str(tmp_path / "nsd")})
    assert f"nsd_root: {tmp_path / 'nsd'}" in res.stdout


def test_prepare_reports_missing_nsd_files(isolated_env, tmp_path):
    (tmp_path / "nsd").mkdir()
    res = brainrecon("prepare", "--nsd-root", str(tmp_path / "nsd"), "--subject", "1", env=isolated_env)
    assert res.returncode != 0
    assert "nsd_expdesign.mat" in res.stderr + res.stdout
    res = brainrecon("prepare", "--nsd-root", str(tmp_path / "nsd"), "-s", "1", "--sessions", "1-2",
                     "--list-files", env=isolated_env)
    assert res.returncode == 0
    assert "! nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session02.nii.gz" in res.stdout


def test_bad_config_is_a_clear_error(isolated_env, tmp_path):
    (tmp_path / "bad.yaml").write_text("nsd_rot: /x\n")
    res = brainrecon("config", "-c", str(tmp_path / "bad.yaml"), env=isolated_env)
    assert res.returncode != 0 and "nsd_rot" in res.stderr


def test_hub_refuses_without_root(monkeypatch):
    "`brainrecon hub` creates system accounts: as any other user it stops at once and says why."
    import os
    import re
    from typer.testing import CliRunner
    from brainrecon.cli import app
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    res = CliRunner().invoke(app, ["hub", "--run-dir", "/nonexistent/hub"])
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", res.output).split())
    assert res.exit_code == 2 and "which needs root: run it with sudo" in text, res.output
    assert not os.path.exists("/nonexistent/hub")
