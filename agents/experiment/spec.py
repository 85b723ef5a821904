"""Experiment files: what to run (conditions x seeds), checked completely before anything runs.

An experiment is a TOML file (see experiments/*.toml)::

    name = "frozenlake8x8-sharing"       # required: letters, digits, '_', '.', '-'
    question = "Does sharing ..."         # optional: repeated at the top of summary.md
    seeds = 5                             # required: N (seeds 1..N) or a list of distinct integers >= 0
    learners = 2                          # agents per cell (hunting conditions need exactly 2)
    env_id = "FrozenLake8x8-v1"           # required
    env_kwargs = { is_slippery = true }
    episodes = 6000                       # required: the training budget of every agent
    max_steps_per_episode = 200           # optional (default: the environment's time limit)
    jobs = 2                              # optional: parallel cell processes (--jobs overrides)
    cell_time_limit_s = 1800              # optional: a cell still running then fails

    [threshold]                           # when an agent counts as having learned
    value = "registered"                  # the environment's reward_threshold, or a number
    measure = "greedy_evaluation"         # or "training_window"
    eval_every = 250                      # greedy_evaluation: plans evaluate every K episodes
    eval_episodes = 100                   # ... over this many greedy episodes
    window = 100                          # training_window: success rate of the last W episodes

    [final_evaluation]                    # hunting conditions: joint greedy evaluation at the end,
    episodes = 200                        # on the world seeded with seed + the cell's seed
    seed = 12345

    [hyperparameters]                     # agents.qlearning.Hyperparameters (seed: per agent)
    gamma = 0.999

    [telemetry]
    steps = false                         # stream every step too (default true); episodes and
                                          # coordination messages are always streamed

    [quick]                               # optional: what --quick runs instead (a direction
    seeds = 2                             # check in minutes, not a result): fewer seeds,
    episodes = 150                        # fewer training episodes/trials,
    test_episodes = 50                    # fewer final_evaluation episodes

    [report]                              # optional, reporting only (cells do not depend on it)
    equivalence_margin = 5.0              # Tan: TOST of "the same" late and test means, +- this
    deviations = ["..."]                  # how the setup departs from the reference, stated in the summary
    reference = "Tan (1993), Table 2"     # where the conditions' reference numbers come from

    [[conditions]]
    name = "policy_sharing"               # required, unique
    kind = "policy_sharing"               # required: see KINDS
    plan = "asl/coord_policy_sharing.asl" # optional: default asl/coord_<kind>.asl
    [conditions.settings]                 # beliefs for the plans
    share_every = 100
    merge_rule = "visits"
    [conditions.reference]                # Tan: the published steps per trial (training, late, test)
    training = 46.33

Tan (1993) conditions (kind ``tan``, env_id ``MosaicTan-v0``) take their movers from the world:
``env_kwargs`` holds the world shared by every condition, a condition's settings may change its
world keys (``TAN_WORLD_SETTINGS``: e.g. ``scouts = 1``, ``scout_depth = 3``, ``view =
"scouted"``), and its plan (required: an ``asl/coord_tan_*.asl`` file) says what is told and
shared. Every agent trains ``episodes`` trials, then plays ``final_evaluation.episodes`` test
trials (the world reseeded with ``final_evaluation.seed`` + the cell's seed, the same in every
condition); ``learners`` does not apply.

Every problem raises `ExperimentError` whose `key` names the key (``conditions[1].kind``,
``threshold.value``, ``hyperparameters.alpha``) and whose message says what is allowed.
Paths are relative to the experiment file.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import envs.multiagent  # noqa: F401 - registers MosaicPursuit-v0
from agents.asl_check import AslError, check_asl
from agents.config import ConfigError, parse_container_config
from agents.coordination.agent import plan_actions
from agents.coordination.merge import RULES
from envs import make_env
from envs.multiagent import PURSUIT_ENV_ID, TAN_ENV_ID

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
ASL_DIR = REPO_ROOT / "asl"

#: Condition kinds: the learners' kind and what their plans do.
SHARING_KINDS = ("independent", "policy_sharing", "experience_sharing")
HUNTING_KINDS = ("joint_hunters", "independent_hunters", "random_hunters")
TAN_KIND = "tan"
KINDS = SHARING_KINDS + HUNTING_KINDS + (TAN_KIND,)
#: Settings of a tan condition that change its world (the rest become beliefs, as for any kind).
TAN_WORLD_SETTINGS = ("hunters", "scouts", "depth", "scout_depth", "capture", "view")
#: Settings each kind requires (name -> check), beyond which any number or string is a belief.
_REQUIRED_SETTINGS = {"policy_sharing": ("share_every",)}
MEASURES = ("greedy_evaluation", "training_window")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOP_KEYS = (
    "name", "question", "seeds", "learners", "env_id", "env_kwargs", "episodes", "max_steps_per_episode",
    "jobs", "cell_time_limit_s", "threshold", "final_evaluation", "hyperparameters", "telemetry", "conditions",
    "quick", "report",
)
#: Keys of a [quick] table, and of a condition's [conditions.reference] (Tan's measures).
QUICK_KEYS = ("seeds", "episodes", "test_episodes")
REFERENCE_MEASURES = ("training", "late", "test")


class ExperimentError(ValueError):
    """An experiment file is invalid; `key` names the offending key."""

    def __init__(self, message: str, key: Optional[str] = None, source: Optional[str] = None):
        super().__init__(f"{source}: {message}" if source else message)
        self.key = key


@dataclass(frozen=True)
class Condition:
    name: str
    kind: str
    plan: str
    settings: dict[str, Any] = field(default_factory=dict)
    #: published values of this condition (reporting only: not part of the digest)
    reference: dict[str, float] = field(default_factory=dict)

    @property
    def hunting(self) -> bool:
        return self.kind in HUNTING_KINDS

    @property
    def tan(self) -> bool:
        return self.kind == TAN_KIND

    def world_kwargs(self, env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """A tan condition's world options: the experiment's, changed by its world settings."""
        return {**env_kwargs, **{k: v for k, v in self.settings.items() if k in TAN_WORLD_SETTINGS}}


@dataclass(frozen=True)
class Threshold:
    value: float
    measure: str
    source: str  # "registered" (the environment's reward_threshold) or "experiment file"
    eval_every: int = 250
    eval_episodes: int = 100
    window: int = 100


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    question: str
    seeds: list[int]
    learners: int
    env_id: str
    env_kwargs: dict[str, Any]
    episodes: int
    max_steps_per_episode: Optional[int]
    jobs: int
    cell_time_limit_s: float
    threshold: Threshold
    final_eval_episodes: int
    final_eval_seed: int
    hyperparameters: dict[str, Any]
    telemetry_steps: bool
    conditions: list[Condition]
    source: str
    #: run with the [quick] sizes (--quick): a direction check, not a result
    quick: bool = False
    #: reporting only (not part of the digest): equivalence margin, deviations, reference source
    equivalence_margin: Optional[float] = None
    deviations: list[str] = field(default_factory=list)
    reference_source: str = ""

    def digest(self) -> str:
        """Identifies what the cells compute: a rerun may only resume cells of the same digest."""
        data = asdict(self)
        for reporting in ("jobs", "source", "equivalence_margin", "deviations", "reference_source"):
            data.pop(reporting)
        for condition in data["conditions"]:
            condition.pop("reference")
            condition["plan"] = _portable_plan(condition["plan"])
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def cells(self) -> list[tuple[Condition, int]]:
        return [(condition, seed) for seed in self.seeds for condition in self.conditions]


def _portable_plan(plan: str) -> str:
    """A plan as the digest sees it: its path inside the checkout (so a moved or second
    checkout resumes the same cells) and a hash of its text (so an edited plan does not)."""
    path = Path(plan)
    try:
        shown = path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        shown = path.name
    try:
        text = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        text = "unreadable"
    return f"{shown}@{text}"


def load_experiment(path: str | Path, *, quick: bool = False) -> ExperimentSpec:
    """Read and check an experiment file; ExperimentError names the key of any problem.
    ``quick``: with the sizes of its [quick] table (an error when it has none)."""
    path = Path(path)
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ExperimentError(f"cannot read the experiment file: {err.strerror or err}", source=source) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ExperimentError(f"is not valid TOML: {err}", source=source) from None
    try:
        return parse_experiment(data, base_dir=path.resolve().parent, source=source, quick=quick)
    except ExperimentError as err:
        raise ExperimentError(str(err), key=err.key, source=source) from None


def _fail(key: str, message: str) -> ExperimentError:
    return ExperimentError(f"{key} {message}", key=key)


def _require(table: Mapping[str, Any], key: str, path: str = "") -> Any:
    full = f"{path}.{key}" if path else key
    if key not in table:
        raise _fail(full, "is required")
    return table[key]


def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], path: str = "") -> None:
    for key in table:
        if key not in allowed:
            full = f"{path}.{key}" if path else key
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _fail(full, f"is not a known key{hint} (allowed: {', '.join(allowed)})")


def _int(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(key, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(key, f"must be a table, got {value!r}")
    return value


def _quick_sizes(data: Mapping[str, Any]) -> dict[str, Any]:
    """The experiment with its [quick] table's sizes in place of the full ones."""
    if "quick" not in data:
        raise _fail("quick", "is required for --quick: a [quick] table with seeds, episodes and test_episodes "
                    "(fewer seeds and trials for a direction check)")
    quick = _table(data["quick"], "quick")
    _check_keys(quick, QUICK_KEYS, "quick")
    out = dict(data)
    if "seeds" in quick:
        out["seeds"] = quick["seeds"]
    if "episodes" in quick:
        out["episodes"] = quick["episodes"]
    if "test_episodes" in quick:
        out["final_evaluation"] = {**_table(data.get("final_evaluation", {}), "final_evaluation"),
                                   "episodes": quick["test_episodes"]}
    threshold = _table(data.get("threshold", {}), "threshold")
    episodes = out.get("episodes")
    if isinstance(episodes, int) and isinstance(threshold.get("window"), int) and threshold["window"] > episodes:
        raise _fail("quick.episodes", f"must be at least threshold.window ({threshold['window']}), got {episodes}")
    return out


def _report(data: Mapping[str, Any]) -> tuple[Optional[float], list[str], str]:
    report = _table(data.get("report", {}), "report")
    _check_keys(report, ("equivalence_margin", "deviations", "reference"), "report")
    margin = report.get("equivalence_margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin <= 0):
        raise _fail("report.equivalence_margin", f"must be a number > 0 (steps per trial), got {margin!r}")
    deviations = report.get("deviations", [])
    if not isinstance(deviations, list) or not all(isinstance(d, str) and d.strip() for d in deviations):
        raise _fail("report.deviations", f"must be a list of sentences, got {deviations!r}")
    source = report.get("reference", "")
    if not isinstance(source, str):
        raise _fail("report.reference", f"must be a string naming the source, got {source!r}")
    return (None if margin is None else float(margin)), list(deviations), source


def parse_experiment(data: Mapping[str, Any], *, base_dir: Path, source: str = "", quick: bool = False) -> ExperimentSpec:
    _check_keys(data, _TOP_KEYS)
    if quick:
        data = _quick_sizes(data)
    margin, deviations, reference_source = _report(data)
    name = _require(data, "name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail("name", f"must be 1-64 letters, digits, '_', '.' or '-', got {name!r}")
    question = data.get("question", "")
    if not isinstance(question, str):
        raise _fail("question", f"must be a string, got {question!r}")
    seeds = _seeds(_require(data, "seeds"))
    learners = _int(data.get("learners", 2), "learners", 1)
    env_id = _require(data, "env_id")
    env_kwargs = _table(data.get("env_kwargs", {}), "env_kwargs")
    episodes = _int(_require(data, "episodes"), "episodes", 1)
    max_steps = data.get("max_steps_per_episode")
    if max_steps is not None:
        max_steps = _int(max_steps, "max_steps_per_episode", 1)
    jobs = _int(data.get("jobs", 2), "jobs", 1)
    time_limit = data.get("cell_time_limit_s", 3600)
    if isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)) or time_limit <= 0:
        raise _fail("cell_time_limit_s", f"must be a number of seconds > 0, got {time_limit!r}")
    hyperparameters = _table(data.get("hyperparameters", {}), "hyperparameters")
    _check_agent_settings(env_id, env_kwargs, episodes, max_steps, hyperparameters)
    telemetry = _table(data.get("telemetry", {}), "telemetry")
    _check_keys(telemetry, ("steps",), "telemetry")
    steps = telemetry.get("steps", True)
    if not isinstance(steps, bool):
        raise _fail("telemetry.steps", f"must be true or false, got {steps!r}")
    conditions = _conditions(data.get("conditions"), base_dir, env_id, learners, env_kwargs)
    threshold = _threshold(_table(_require(data, "threshold"), "threshold"), env_id, env_kwargs, episodes, conditions)
    final = _table(data.get("final_evaluation", {}), "final_evaluation")
    _check_keys(final, ("episodes", "seed"), "final_evaluation")
    final_episodes = _int(final.get("episodes", 200), "final_evaluation.episodes", 1)
    final_seed = _int(final.get("seed", 12345), "final_evaluation.seed", 0)
    return ExperimentSpec(
        name=name,
        question=question,
        seeds=seeds,
        learners=learners,
        env_id=env_id,
        env_kwargs=dict(env_kwargs),
        episodes=episodes,
        max_steps_per_episode=max_steps,
        jobs=jobs,
        cell_time_limit_s=float(time_limit),
        threshold=threshold,
        final_eval_episodes=final_episodes,
        final_eval_seed=final_seed,
        hyperparameters=dict(hyperparameters),
        telemetry_steps=steps,
        conditions=conditions,
        source=source,
        quick=quick,
        equivalence_margin=margin,
        deviations=deviations,
        reference_source=reference_source,
    )


def _seeds(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise _fail("seeds", f"must be a number of seeds >= 1 or a list of seeds, got {value!r}")
        return list(range(1, value + 1))
    if not isinstance(value, list) or not value:
        raise _fail("seeds", f"must be a number of seeds >= 1 or a non-empty list of seeds, got {value!r}")
    for i, seed in enumerate(value):
        _int(seed, f"seeds[{i}]", 0)
    if len(set(value)) != len(value):
        raise _fail("seeds", f"must not repeat a seed, got {value!r}")
    return list(value)


def _check_agent_settings(env_id: Any, env_kwargs: dict, episodes: int, max_steps: Optional[int], hyperparameters: dict) -> None:
    """The learners' settings, checked by the container config's own validation (agents.config)."""
    defaults: dict[str, Any] = {"env_id": env_id, "env_kwargs": env_kwargs, "episodes": episodes, "hyperparameters": hyperparameters}
    if max_steps is not None:
        defaults["max_steps_per_episode"] = max_steps
    try:
        parse_container_config({"run_id": "check", "agent_defaults": defaults, "agents": [{"agent_id": "check"}]})
    except ConfigError as err:
        key = (err.key or "").removeprefix("agent_defaults.") or "env_id"
        raise ExperimentError(err.problem.replace("agent_defaults.", ""), key=key) from None


def _conditions(value: Any, base_dir: Path, env_id: str, learners: int, env_kwargs: Mapping[str, Any]) -> list[Condition]:
    if not isinstance(value, list) or not value:
        raise _fail("conditions", "is required: a list of [[conditions]] tables, each with name and kind")
    conditions: list[Condition] = []
    names: set[str] = set()
    actions = plan_actions()
    for i, entry in enumerate(value):
        path = f"conditions[{i}]"
        entry = _table(entry, path)
        _check_keys(entry, ("name", "kind", "plan", "settings", "reference"), path)
        name = _require(entry, "name", path)
        if not isinstance(name, str) or not _NAME.match(name):
            raise _fail(f"{path}.name", f"must be 1-64 letters, digits, '_', '.' or '-', got {name!r}")
        if name in names:
            raise _fail(f"{path}.name", f"repeats the condition name {name!r}")
        names.add(name)
        kind = _require(entry, "kind", path)
        if kind not in KINDS:
            close = difflib.get_close_matches(str(kind), KINDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _fail(f"{path}.kind", f"is an unknown condition {kind!r}{hint} (known: {', '.join(KINDS)})")
        hunting = kind in HUNTING_KINDS
        if (kind == TAN_KIND) != (env_id == TAN_ENV_ID):
            raise _fail(f"{path}.kind", f"Tan's conditions (kind {TAN_KIND!r}) and only they run in {TAN_ENV_ID!r}: got kind {kind!r} with env_id {env_id!r}")
        if kind == TAN_KIND and "plan" not in entry:
            raise _fail(f"{path}.plan", "is required for a tan condition: one of the asl/coord_tan_*.asl plans (what is told and shared)")
        if hunting and env_id != PURSUIT_ENV_ID:
            raise _fail(f"{path}.kind", f"{kind!r} hunts in the shared pursuit world: env_id must be {PURSUIT_ENV_ID!r}, got {env_id!r}")
        if not hunting and env_id == PURSUIT_ENV_ID and kind != TAN_KIND:
            raise _fail(f"{path}.kind", f"{kind!r} learns alone: the pursuit world needs joint_hunters, independent_hunters or random_hunters")
        if hunting and learners != 2:
            raise _fail("learners", f"must be 2 for the hunting conditions (two hunters), got {learners}")
        if kind in ("policy_sharing", "experience_sharing") and learners < 2:
            raise _fail("learners", f"must be at least 2 for {kind!r} (someone to share with), got {learners}")
        settings = _table(entry.get("settings", {}), f"{path}.settings")
        for key in _REQUIRED_SETTINGS.get(kind, ()):
            _require(settings, key, f"{path}.settings")
        for key, setting in settings.items():
            if isinstance(setting, bool) or not isinstance(setting, (int, float, str)):
                raise _fail(f"{path}.settings.{key}", f"must be a number or a word (it becomes a belief), got {setting!r}")
        if "share_every" in settings:
            _int(settings["share_every"], f"{path}.settings.share_every", 1)
        if "merge_rule" in settings and settings["merge_rule"] not in RULES:
            raise _fail(f"{path}.settings.merge_rule", f"must be one of {', '.join(RULES)}, got {settings['merge_rule']!r}")
        if kind == TAN_KIND:
            _check_tan_world(settings, env_kwargs, path)
        plan = Path(entry["plan"]) if "plan" in entry else ASL_DIR / f"coord_{kind}.asl"
        if not plan.is_absolute():
            plan = (base_dir / plan).resolve() if "plan" in entry else plan
        try:
            check_asl(plan, actions)
        except AslError as err:
            raise _fail(f"{path}.plan", str(err)) from None
        reference = _table(entry.get("reference", {}), f"{path}.reference")
        _check_keys(reference, REFERENCE_MEASURES, f"{path}.reference")
        for key, number in reference.items():
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise _fail(f"{path}.reference.{key}", f"must be a number (steps per trial), got {number!r}")
        conditions.append(Condition(name, kind, str(plan), dict(settings), {k: float(v) for k, v in reference.items()}))
    return conditions


def _check_tan_world(settings: Mapping[str, Any], env_kwargs: Mapping[str, Any], path: str) -> None:
    """A tan condition's world must build, for its hunters and its scout."""
    world = {**env_kwargs, **{k: v for k, v in settings.items() if k in TAN_WORLD_SETTINGS}}
    roles = ["hunter"] + (["scout"] if world.get("scouts", 0) else [])
    for role in roles:
        try:
            with make_env(TAN_ENV_ID, **{**world, "role": role}):
                pass
        except ValueError as err:
            raise _fail(f"{path}.settings", f"make a world that cannot be built: {err}") from None


def _threshold(table: dict, env_id: str, env_kwargs: dict, episodes: int, conditions: list[Condition]) -> Threshold:
    _check_keys(table, ("value", "measure", "eval_every", "eval_episodes", "window"), "threshold")
    value = _require(table, "value", "threshold")
    if value == "registered":
        with make_env(env_id, **env_kwargs) as env:
            registered = env.reward_threshold
        if registered is None:
            raise _fail("threshold.value", f"is 'registered' but {env_id} registers no reward_threshold: give a number")
        value, source = float(registered), "registered"
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise _fail("threshold.value", f"must be 'registered' or a success rate in (0, 1], got {value!r}")
    else:
        value, source = float(value), "experiment file"
    measure = table.get("measure", "greedy_evaluation")
    if measure not in MEASURES:
        raise _fail("threshold.measure", f"must be one of {', '.join(MEASURES)}, got {measure!r}")
    if measure == "greedy_evaluation" and any(c.hunting for c in conditions):
        raise _fail("threshold.measure", "must be 'training_window' for hunting conditions (a hunter cannot evaluate the joint policy alone)")
    eval_every = _int(table.get("eval_every", 250), "threshold.eval_every", 1)
    if measure == "greedy_evaluation" and eval_every > episodes:
        raise _fail("threshold.eval_every", f"is larger than the budget of {episodes} episodes: no evaluation would run")
    eval_episodes = _int(table.get("eval_episodes", 100), "threshold.eval_episodes", 1)
    window = _int(table.get("window", 100), "threshold.window", 1)
    if measure == "training_window" and window > episodes:
        raise _fail("threshold.window", f"is larger than the budget of {episodes} episodes")
    return Threshold(value, measure, source, eval_every, eval_episodes, window)
