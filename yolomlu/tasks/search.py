"""task=search: a multi-objective Optuna study over the port space — maximise fps, maximise
map50_95 — within an accuracy budget.

``conf/search/<name>.yaml`` names the space: dimensions whose choices are lists of overrides
(``engine: {ov_int8: [experiments=ov_int8], ...}``) or values of one key (``quant.per_channel:
[false, true]``), the baseline choice (the first trial, against whose map50_95 the drop is measured),
``max_drop`` (the same definition of drop as ``quant.max_drop``: the baseline's map50_95 minus the
trial's; trials over it are infeasible, never winners) and ``n_trials``, the study's total.

Each trial is one ordinary job (``tasks.jobs``: the search's own overrides plus the trial's, run as
``python -m yolomlu``), a child run of one search parent run. A combination the config or a backend
refuses (validated before any work, e.g. ORT with int16) is pruned with its reason and not counted; a
trial whose config an earlier trial already measured reuses that result; a job that fails for another
reason is recorded FAILED and the study goes on. The study lives in a SQLite file under
``<paths.cache_dir>/search/``: running the same command again after an interruption resumes the same
study and the same parent until ``n_trials`` trials have run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from yolomlu.tasks import common, jobs
from yolomlu.tracking import TrackingSettings
from yolomlu.tracking.owner import process_state

TRIALS_ARTIFACT = "search_trials.json"
INTERRUPTED_ATTR = "interrupted_trials"  # study attribute: trials whose search process was stopped
# Overrides that say what the search is, not what a trial computes: they stay with the search.
_SEARCH_KEYS = ("task=", "search=", "search.", "experiments/sweep=")


class TrialFailed(RuntimeError):
    """A trial's job ran and failed (recorded FAILED in its run); the study goes on."""


@dataclass(frozen=True)
class Space:
    """dimension -> ((choice label, overrides), ...), in the order written."""

    dims: dict[str, tuple[tuple[str, tuple[str, ...]], ...]]

    def label(self, chosen: Mapping[str, str]) -> str:
        """A short name for a trial's variant: each named choice (``ov_int8``), and each key dimension
        whose value is not its first (``per_channel=true``)."""
        parts = []
        for dim, options in self.dims.items():
            if any(o != (f"{dim}={label}",) for label, o in options):  # a dimension of named choices
                parts.append(chosen[dim])
            elif chosen[dim] != options[0][0]:
                parts.append(f"{dim.rsplit('.', 1)[-1]}={chosen[dim]}")
        return " ".join(parts)

    def overrides(self, chosen: Mapping[str, str]) -> list[str]:
        out: list[str] = []
        for dim, options in self.dims.items():
            out += list(dict(options)[chosen[dim]])
        return out


def parse_space(space: Mapping[str, Any]) -> Space:
    """``search.space`` -> :class:`Space`. A mapping of choices gives each choice's overrides; a list
    gives values of the key named by the dimension."""
    if not space:
        raise ValueError("search.space is empty: name at least one dimension to search")
    dims: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {}
    for dim, choices in space.items():
        if isinstance(choices, Mapping):
            options = []
            for label, overrides in choices.items():
                items = [overrides] if isinstance(overrides, str) else list(overrides or [])
                if not all(isinstance(o, str) and "=" in o for o in items):
                    raise ValueError(f"search.space.{dim}.{label} must be a list of overrides such as experiments=ov_int8, got {overrides!r}")
                options.append((str(label), tuple(items)))
        elif isinstance(choices, (list, tuple)) and choices:
            options = [(_label(v), (f"{dim}={_value(v)}",)) for v in choices]
        else:
            raise ValueError(f"search.space.{dim} must be a mapping of named override lists or a non-empty list of values, got {choices!r}")
        if len({label for label, _ in options}) != len(options):
            raise ValueError(f"search.space.{dim} names a choice twice")
        dims[str(dim)] = tuple(options)
    return Space(dims)


def _value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return str(v).lower()
    return "null" if v is None else str(v)


def _label(v: Any) -> str:
    return _value(v)


def _base_overrides() -> list[str]:
    """The search command's own overrides that shape every trial (the model, the data, bookkeeping)."""
    from hydra.core.hydra_config import HydraConfig

    return [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(_SEARCH_KEYS)]


def study_name(cfg: DictConfig, base: list[str], env: Mapping[str, str]) -> str:
    """What makes a run of this command the same study: the search's settings but its total (which
    may grow), the trials' shared overrides, and the code, host and torch that measure."""
    search = {k: v for k, v in OmegaConf.to_container(cfg.search, resolve=True).items() if k != "n_trials"}
    text = json.dumps([search, sorted(base), env["code_hash"], env["host"], env["torch"]], sort_keys=True, default=str)
    return f"search-{cfg.search.name}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def search_task(cfg: DictConfig) -> dict[str, Any]:
    import optuna

    if cfg.get("search") is None:
        raise ValueError("task=search needs a search config: search=<name> (conf/search/*.yaml, e.g. search=demo)")
    s = cfg.search
    space = parse_space(OmegaConf.to_container(s.space, resolve=True))
    baseline = _baseline_choice(space, OmegaConf.to_container(s.baseline, resolve=True) or {})
    if not isinstance(s.n_trials, int) or s.n_trials < 1:
        raise ValueError(f"search.n_trials={s.n_trials!r} must be a positive integer")
    settings = common.tracking_settings(cfg)
    if settings.offline_dir:
        raise ValueError("task=search reads each trial's result back from the store: it cannot run with tracking.offline_dir")
    env = common.environment_tags()
    base = _base_overrides() + [f"tracking.uri={settings.uri}"]
    name = study_name(cfg, base, env)
    folder = Path(cfg.paths.cache_dir).expanduser().resolve() / "search"
    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=f"sqlite:///{folder / (name + '.db')}",
        directions=["maximize", "maximize"],
        sampler=optuna.samplers.TPESampler(seed=s.seed, constraints_func=_constraints, multivariate=True),
        load_if_exists=True,
    )
    parent = _parent_run(settings, name, cfg, env)
    out = common.log_stream()
    print(f"[yolomlu] search {name}: study {folder / (name + '.db')}, parent run {parent.run_id}", file=out)
    if not study.trials:
        study.enqueue_trial(baseline)
    objective = _Objective(cfg, space, base, name, parent.run_id, settings)
    _settle_orphans(study, objective)
    start = time.time()
    status = "KILLED"
    try:
        attempts = 0
        while _ran(study) < s.n_trials and attempts < 5 * s.n_trials:
            attempts += 1
            study.optimize(objective, n_trials=1, catch=(TrialFailed,))
            _log_trials(parent, study, s.max_drop)
        status = "FINISHED"
    finally:
        _log_trials(parent, study, s.max_drop)
        parent.set_tags({"search.trials_run": _ran(study), "search.wall_s": round(time.time() - start, 1) + float(parent_tag(settings, parent.run_id, "search.wall_s") or 0)})
        parent.end(status)
    front = _front(study, s.max_drop)
    print(f"[yolomlu] search {name}: {_ran(study)} trials; feasible Pareto front (fps, map50_95):", file=out)
    for trial in front:
        print(f"  #{trial.number}: fps {trial.values[0]:.4g}, map50_95 {trial.values[1]:.4f}  {' '.join(trial.user_attrs['overrides'])}", file=out)
    from yolomlu.report import build_report

    report = build_report(settings, parent.run_id, Path(cfg.report.out_dir).expanduser(), repeats=cfg.report.repeats)
    print(f"[yolomlu] report (the front, every trial and why any was rejected): {report.html.resolve()}", file=out)
    return {"trials": _ran(study), "front": len(front), "html": str(report.html)}


def _baseline_choice(space: Space, asked: Mapping[str, Any]) -> dict[str, str]:
    """The baseline trial's choice in every dimension: those ``search.baseline`` names, the first
    choice elsewhere."""
    chosen = {}
    for dim, options in space.dims.items():
        label = _label(asked[dim]) if dim in asked else options[0][0]
        if label not in dict(options):
            raise ValueError(f"search.baseline.{dim}={label!r} is not one of the dimension's choices {[o[0] for o in options]}")
        chosen[dim] = label
    unknown = sorted(set(asked) - set(space.dims))
    if unknown:
        raise ValueError(f"search.baseline names {unknown}, which are not dimensions of search.space")
    return chosen


def _ran(study) -> int:
    """Trials that ran a job to its end (complete or failed); pruned ones, refused before any work, and
    interrupted ones (the search was stopped during them) do not count."""
    from optuna.trial import TrialState

    interrupted = set(study.user_attrs.get(INTERRUPTED_ATTR, []))
    return sum(1 for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.FAIL) and t.number not in interrupted)


def _constraints(trial) -> list[float]:
    """Optuna's feasibility: <= 0 is within the budget."""
    return [trial.user_attrs.get("constraint", 1.0)]


def _settle_orphans(study, objective: "_Objective") -> None:
    """Trials left RUNNING by a search process that is gone (killed). One whose job had finished and
    recorded both objectives before the kill is completed with them (nothing measured is lost); the
    others are closed as failed and listed as interrupted: the study's total does not count them, so
    the resumed search runs as many more."""
    import optuna
    from optuna.trial import TrialState

    interrupted = list(study.user_attrs.get(INTERRUPTED_ATTR, []))
    for frozen in study.trials:
        if frozen.state != TrialState.RUNNING:
            continue
        pid = frozen.user_attrs.get("search_pid")
        if pid is not None and pid != os.getpid() and process_state(int(pid)).alive:
            continue  # another search process is still at work on it
        run = _trial_run(objective.settings, objective.parent, frozen.number)
        if run is not None and run["status"] == "FINISHED" and run["fps"] is not None and run["map50_95"] is not None:
            trial = optuna.trial.Trial(study, frozen._trial_id)
            trial.set_user_attr("run_id", run["run_id"])
            study.tell(trial, objective._score(trial, run["fps"], run["map50_95"]))
        else:
            study.tell(frozen.number, state=TrialState.FAIL)
            interrupted.append(frozen.number)
    study.set_user_attr(INTERRUPTED_ATTR, interrupted)


def _parent_run(settings: TrackingSettings, name: str, cfg: DictConfig, env: Mapping[str, str]):
    """The study's parent run: the one an earlier, interrupted run of the command opened, reopened; else new."""
    from yolomlu.tracking import lookup

    found = lookup.find_run(settings, {"search_study": name})
    if found is not None:
        return lookup.reopen(settings, found)
    from yolomlu.tracking import start_run

    tags = {
        "sweep": "true",
        "search": "true",
        "search_study": name,
        "sweep_preset": f"search-{cfg.search.name}",
        "sweep_key": name,
        "search.max_drop": cfg.search.max_drop,
        "search.n_trials": cfg.search.n_trials,
        **env,
    }
    return start_run(settings, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags)


def parent_tag(settings: TrackingSettings, run_id: str, key: str) -> str | None:
    from yolomlu.tracking import lookup

    return lookup.tag_of(settings, run_id, key)


class _Objective:
    def __init__(self, cfg: DictConfig, space: Space, base: list[str], name: str, parent: str, settings: TrackingSettings) -> None:
        self.cfg, self.space, self.base, self.name, self.parent, self.settings = cfg, space, base, name, parent, settings

    def __call__(self, trial) -> tuple[float, float]:
        import optuna

        chosen = {dim: trial.suggest_categorical(dim, [label for label, _ in options]) for dim, options in self.space.dims.items()}
        overrides = self.space.overrides(chosen)
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("search_pid", os.getpid())
        try:
            digest = _check(self.base + overrides)
        except Exception as exc:  # refused before any work: not a failure, not counted
            from yolomlu.tasks.errors import describe

            reason = describe(exc) or f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("rejected", reason)
            raise optuna.TrialPruned(reason) from None
        trial.set_user_attr("config_hash", digest)
        earlier = self._measured(trial.study, digest)
        if earlier is not None:  # a combination that computes what an earlier trial did: its result, marked
            from yolomlu.tracking import lookup, reuse_run

            name, _ = lookup.run_metrics(self.settings, earlier.user_attrs["run_id"])  # the same variant, the same name
            # one baseline (trial 0); the same variant name as the run it copies
            tags = {"search.trial": trial.number, "search.study": self.name, "baseline": "false", "variant": self.space.label(chosen)}
            run_id = reuse_run(self.settings, earlier.user_attrs["run_id"], name, parent_run_id=self.parent, tags=tags)
            trial.set_user_attr("same_as", earlier.number)
            trial.set_user_attr("run_id", run_id)
            return self._score(trial, *earlier.values)
        tags = {"search.trial": trial.number, "search.study": self.name, "variant": self.space.label(chosen)}
        # The study's baseline is trial 0 alone, whatever its presets say (cpu_reference sets baseline=true).
        is_baseline = "true" if trial.number == 0 else "false"
        jobs.run_job([*self.base, *overrides, f"baseline={is_baseline}"], self.parent, tags, key=self.name, shared=self.base)
        run = _trial_run(self.settings, self.parent, trial.number)
        if run is None or run["status"] != "FINISHED":
            error = run["error"] if run else "its job recorded no run"
            trial.set_user_attr("failed", error)
            raise TrialFailed(f"trial {trial.number} ({' '.join(overrides)}) failed: {error}")
        trial.set_user_attr("run_id", run["run_id"])
        if run["map50_95"] is None or run["fps"] is None:
            reason = "no map50_95 (accuracy not measured)" if run["map50_95"] is None else "no fps (benchmark off)"
            trial.set_user_attr("failed", reason)
            raise TrialFailed(f"trial {trial.number}: {reason}: the search needs both objectives")
        return self._score(trial, run["fps"], run["map50_95"])

    def _measured(self, study, digest: str):
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.user_attrs.get("config_hash") == digest and "same_as" not in t.user_attrs:
                return t  # the trial that measured it (not one that reused it)
        return None

    def _score(self, trial, fps: float, score: float) -> tuple[float, float]:
        study = trial.study
        if trial.number == 0 or "baseline_map50_95" not in study.user_attrs:
            study.set_user_attr("baseline_map50_95", score)
        drop = study.user_attrs["baseline_map50_95"] - score
        trial.set_user_attr("drop", drop)
        trial.set_user_attr("constraint", drop - self.cfg.search.max_drop)
        return fps, score


def _check(overrides: list[str]) -> str:
    """Compose the trial's config and validate it as a job would, before any work; its config_hash."""
    from hydra import compose

    from yolomlu.tasks.common import config_hash, validate_config

    cfg = compose(config_name="config", overrides=overrides)
    validate_config(cfg)  # values, combinations, and what the backend's quantizer honours
    return config_hash(cfg)


def _trial_run(settings: TrackingSettings, parent: str, number: int) -> dict | None:
    from yolomlu.tracking import lookup

    return lookup.child_with_tag(settings, parent, "search.trial", str(number))


def trials_table(study, max_drop: float) -> pd.DataFrame:
    """One row per trial: number, state, choices, objectives, drop, feasible, and why it was rejected."""
    rows = []
    interrupted = set(study.user_attrs.get(INTERRUPTED_ATTR, []))
    for t in study.trials:
        drop = t.user_attrs.get("drop")
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "overrides": " ".join(t.user_attrs.get("overrides", [])),
                "fps": t.values[0] if t.values else None,
                "map50_95": t.values[1] if t.values else None,
                "drop": drop,
                "feasible": (drop <= max_drop) if drop is not None else None,
                "same_as": t.user_attrs.get("same_as"),
                "run_id": t.user_attrs.get("run_id"),
                "why": t.user_attrs.get("rejected") or t.user_attrs.get("failed")
                or ("interrupted: the search was stopped during this trial (not counted)" if t.number in interrupted else "")
                or (f"over the budget: drop {drop:.4f} > {max_drop}" if drop is not None and drop > max_drop else ""),
                "seconds": (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None,
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def _log_trials(parent, study, max_drop: float) -> None:
    # As text, rewritten whole each time (log_table would append to the rows logged before).
    parent.log_text(trials_table(study, max_drop).to_json(orient="split", index=False), TRIALS_ARTIFACT)


def _front(study, max_drop: float) -> list:
    """The completed, feasible trials no other feasible trial beats in both objectives."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get("drop", 1) <= max_drop]
    return sorted(
        (t for t in done if not any(o.values[0] >= t.values[0] and o.values[1] >= t.values[1] and o.values != t.values for o in done)),
        key=lambda t: -t.values[0],
    )
