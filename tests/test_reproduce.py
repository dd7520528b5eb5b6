"""The main job's fast path: `brainrecon reproduce` on the mini world into a temporary run folder, with small
parameters; then a second run skips every stage, and changing `steps` reruns only the stages downstream of it. Two of
the runs are first stopped while a stage's kernel runs, by SIGTERM and by SIGINT: the command ends with its kernels,
leaves no executed notebook without its stage record, and the next run resumes at the stopped stage."""
import json
import signal
import subprocess

import nbformat
import pandas as pd

from conftest import BIN, ROOT, output, start_tagged, stop_and_check, tagged_processes, wait_until

FAST = ["-p", "sampling_steps=5", "-p", "noise_levels=[0.0]", "-p", "n_eval=8", "-p", "guidance_scales=[3.0]",
        "-p", "rounds=3", "-p", "seeds=[0, 1]", "-p", "n_images=4", "-p", "steps=5",
        "-p", "n_samples=100", "-p", "n_voxels=200", "-p", "measure_wire=false", "-p", "qualitative_images=4",
        "-p", "schedulers=[ddim, euler]", "-p", "step_counts=[2, 4]"]


def _reproduce(env, *extra):
    res = subprocess.run([str(BIN / "brainrecon"), "reproduce", *FAST, *extra], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    status = dict(line.split(": ", 1)[0:2] for line in res.stdout.splitlines() if ": " in line)
    return {k: v.split(" (")[0] for k, v in status.items()}


def _stop_during(env, sig, ready, *extra):
    "Start `reproduce`, wait until `ready()` and a stage's kernel runs, stop it with `sig`; check it ended cleanly."
    proc, tag = start_tagged([BIN / "brainrecon", "reproduce", *FAST, *extra], env)
    kernel = lambda: any("ipykernel" in " ".join(p.cmdline()) for p in tagged_processes(tag))
    wait_until(lambda: ready() and kernel(), 600, "a stage's kernel", proc)
    err = stop_and_check(proc, tag, sig)
    assert "Rerun the same command to resume" in err, err[-2000:]
    return output(proc)[0]


def test_reproduce_runs_skips_and_reruns_downstream(isolated_env, tmp_path):
    env = {**isolated_env, "BRAINRECON_SUBJECTS": "1,2"}
    stages = [p.stem for p in sorted((ROOT / "nbs" / "experiments").glob("[0-9]*.ipynb"))]
    notebooks = tmp_path / "run" / "notebooks"
    # stopped by SIGTERM once stages 00 and 01 are done and the next stage's kernel runs
    _stop_during(env, signal.SIGTERM, lambda: (notebooks / "01_prepare_data.stage.json").is_file())
    assert not list(notebooks.glob(".tmp*")) and not list(notebooks.glob("*.failed.ipynb"))
    assert {p.name[:-len(".ipynb")] for p in notebooks.glob("*.ipynb")} == {p.name[:-len(".stage.json")] for p in notebooks.glob("*.stage.json")}
    first = _reproduce(env)                                                    # resumes: 00 and 01 are kept
    assert list(first) == stages, first
    assert [first[s] for s in stages[:2]] == ["up to date, skipped"] * 2 and all(first[s].startswith("ran") for s in stages[2:]), first

    executed = sorted((tmp_path / "run" / "notebooks").glob("*.ipynb"))
    assert [p.stem for p in executed] == stages
    nb = nbformat.read(executed[0], as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and str(tmp_path / "data") in injected[0].source   # the run's config reached the notebook
    for name in ("data_overview", "mini_models", "quantitative", "qualitative", "efficiency", "learning_curves", "adaptation",
                 "decoding_frontier"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000, name
    mini = nbformat.read(tmp_path / "run" / "notebooks" / "00_mini_models.ipynb", as_version=4)
    assert "not retrained" in "".join(o.get("text", "") for c in mini.cells for o in c.get("outputs", []))   # shipped weights

    quant = pd.read_csv(tmp_path / "figures" / "quantitative.csv")
    ours = quant[quant.method.str.startswith("this run")]
    assert list(ours.method) == ["this run: RR (ridge)", "this run: BG (federated)"]
    assert (ours.source.str.contains("mini world")).all()
    assert (ours["clip"] == "not computed").all()                                   # no CLIP weights here: no number
    assert ours.pixcorr.str.contains("±").all()                                  # mean ± std over the two seeds
    assert "thesis RR (ridge)" in set(quant.method) and "BrainGuard" in set(quant.method)
    rounds = pd.read_csv(tmp_path / "run" / "federated" / "rounds.csv")
    assert sorted(set(rounds["round"])) == [1, 2, 3] and sorted(set(rounds.subject)) == [1, 2]
    eff = pd.read_csv(tmp_path / "figures" / "efficiency.csv")
    fit = eff[eff.measure == "ridge weights"].set_index("side").value
    assert fit.iloc[1] > 15 * fit.iloc[0]                                        # 256,512 vs 12,288 targets
    curves = pd.read_csv(tmp_path / "run" / "arms" / "learning_curves.csv")
    assert set(curves.arm) == {"RR", "BG-local", "BG-fed"} and set(curves.train_sessions) == {1, 2, 8}
    adapt = json.loads((tmp_path / "run" / "arms" / "adapt" / "seed0" / "summary.json").read_text())
    assert adapt["federation_subjects"] == [1, 2] and adapt["subject"] == 7 and len(adapt["arms"]) == 4

    frontier = pd.read_csv(tmp_path / "figures" / "decoding_frontier.csv")
    assert [tuple(r) for r in frontier[["scheduler", "steps"]].values] == [("ddim", 100), ("ddim", 2), ("ddim", 4), ("euler", 2), ("euler", 4)]
    ref = frontier.iloc[0]
    assert ref.same_as_thesis and ref.pixcorr_diff == 0 and ref.time_vs_thesis == 1
    assert (frontier.seconds_per_image > 0).all()                                 # measured; which is faster is bench/'s job
    assert ((frontier.time_vs_thesis - frontier.seconds_per_image / ref.seconds_per_image).abs() < 1e-2).all()

    second = _reproduce(env)
    assert all(v == "up to date, skipped" for v in second.values()), second

    # steps=6 reruns 05 and what depends on it; stopped by SIGINT (Ctrl-C) while 05 runs, then run again
    _stop_during(env, signal.SIGINT, lambda: not (notebooks / "05_reconstruct.stage.json").exists(), "-p", "steps=6")
    assert not list(notebooks.glob(".tmp*")) and not (notebooks / "05_reconstruct.stage.json").exists()
    third = _reproduce(env, "-p", "steps=6")
    rerun = {k for k, v in third.items() if v.startswith("ran")}
    assert rerun == {"05_reconstruct", "06_evaluate", "08_figures", "09_arms"}, third    # 09 decodes its adaptation images
    record = json.loads((tmp_path / "run" / "notebooks" / "05_reconstruct.stage.json").read_text())
    assert record["parameters"]["steps"] == 6 and any(f.endswith("seed0.npy") for f in record["outputs"])
