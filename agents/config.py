"""Run configuration: one honoured config object per agent, loaded from TOML, JSON, or the
worker JSON that `python -m agents.worker` reads (its keys: see `parse_worker_json`).

Every key is checked: a wrong type, an out-of-range value or an unknown key (a typo must never be
silently ignored) raises ``ConfigError`` whose message names the key path, the bad value and what
is allowed, e.g. ``agents[1].hyperparameters.alpha must be in (0, 1], got 1.5``. Each distinct
environment (id and options) is built once here too, so an unknown id, a bad option or spaces a
Q-table cannot hold fail before any agent starts.

Container file (TOML; JSON with the same structure is accepted too)::

    run_id = "frozenlake-{date}-{time}"     # optional; one run for every agent in the container
    resume = false                          # true: continue run_id although it has finished

    [xmpp]                                  # optional; defaults shown
    host = "localhost"
    port = 5222                             # 0 (with embedded = true): a free port
    embedded = false                        # true: start an XMPP server in-process

    [telemetry]                             # optional; defaults shown
    target = "127.0.0.1:50055"
    use_grpc_telemetry = true
    jsonl_stdout = false                    # default: true exactly when use_grpc_telemetry = false

    [agent_defaults]                        # optional; any agent key except agent_id
    env_id = "FrozenLake-v1"
    episodes = 3000

    [[agents]]
    agent_id = "learner-a"                  # required, unique; letters, digits, _ . -
    env_kwargs = { is_slippery = false }    # merged key by key over agent_defaults.env_kwargs
    seed = 1                                # default: the agent's index in the list
    [agents.hyperparameters]                # merged key by key over agent_defaults.hyperparameters
    alpha = 0.2

    [[agents]]
    agent_id = "learner-b"
    asl = "plans/greedy.asl"                # relative paths are relative to the config file
    policy_out = "policies/learner-b.json"

Agent keys: ``agent_id``, ``env_id``, ``env_kwargs``, ``episodes`` (default 3000),
``max_steps_per_episode`` (default: the environment's own time limit; when set it *becomes* the
time limit, see ``agents.training.build_env``), ``hyperparameters`` (``alpha``, ``alpha_min``,
``alpha_decay``, ``gamma``, ``epsilon_start``, ``epsilon_min``, ``epsilon_decay``; defaults in
``agents.qlearning.Hyperparameters``), ``asl`` (default: the repository's
``asl/learner.asl``), ``seed``, ``policy_out`` (where to save the Q-table; default: not saved).

One seed per agent: ``seed`` seeds the environment's first reset and the learner's exploration
RNG (``Hyperparameters.seed`` is always the agent's ``seed``; the two streams are independent,
see ``agents.qlearning``).

One run_id is one run: the daemon refuses a container whose run_id names a run that has
already finished, unless it resumes it on purpose (``resume = true`` or ``--resume``; the
agents' episode numbering then continues after what the run holds). ``run_id`` may be left
out (a fresh ``run-{date}-{time}-{unique}``) or hold the placeholders ``{date}``
(YYYYMMDD), ``{time}`` (HHMMSS) and ``{unique}`` (6 random hex digits), filled in when the
config loads; the container prints the id it uses.

Worker JSON (``python -m agents.worker``, one agent)::

    {"run_id": "test_run", "env_id": "FrozenLake-v1", "agent_id": "test_agent", "episodes": 10,
     "extra": {"use_grpc_telemetry": true}}

``run_id`` (placeholders as above), ``env_id``, ``agent_id`` and ``episodes`` are required; ``extra`` may also hold
``jsonl_stdout``, ``telemetry_target``, ``hyperparameters`` (object), ``seed``, ``asl``,
``max_steps_per_episode``, ``env_kwargs`` (object), ``policy_out``, ``xmpp_host``, ``xmpp_port``
and ``xmpp_embedded``. Relative paths there are relative to the current directory.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import functools
import json
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from agents.qlearning import HyperparameterError, Hyperparameters
from envs import InvalidEnvKwargsError, UnsupportedEnvironmentError, check_env, make_env

#: The default plan library (written by the BDI workstream), resolved inside this repository.
DEFAULT_ASL = Path(__file__).resolve().parent.parent / "asl" / "learner.asl"
DEFAULT_TELEMETRY_TARGET = "127.0.0.1:50055"
DEFAULT_XMPP_HOST = "localhost"
DEFAULT_XMPP_PORT = 5222
#: Enough for the default hyperparameters to learn slippery FrozenLake-v1 (tests/test_qlearning*).
DEFAULT_EPISODES = 3000

_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_HOST = re.compile(r"^[A-Za-z0-9_.:\[\]-]+$")


class ConfigError(ValueError):
    """Invalid configuration. ``key`` is the key path (``agents[1].hyperparameters.alpha``), or
    ``None`` when the document as a whole is wrong; ``source`` the file, when there is one."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None) -> None:
        super().__init__(f"{source}: {message}" if source else message)
        self.key = key
        self.source = source
        self.problem = message


@dataclass(frozen=True)
class TelemetryConfig:
    """Where records go. ``use_grpc_telemetry``: stream to the daemon at ``target``;
    ``jsonl_stdout``: also (or instead) print one JSON line per step and episode. Left as
    ``None``, ``jsonl_stdout`` becomes ``not use_grpc_telemetry`` (the guide's behaviour).
    ``run_secret``: protects the run at the daemon (its first producer sets it; every later
    producer or controller must give it); empty: the run is open to anyone on the port."""

    target: str = DEFAULT_TELEMETRY_TARGET
    use_grpc_telemetry: bool = True
    jsonl_stdout: bool | None = None
    run_secret: str = ""

    def __post_init__(self) -> None:
        if self.jsonl_stdout is None:
            object.__setattr__(self, "jsonl_stdout", not self.use_grpc_telemetry)


@dataclass(frozen=True)
class XmppConfig:
    """The XMPP server agents log in to; ``embedded`` starts one in-process instead."""

    host: str = DEFAULT_XMPP_HOST
    port: int = DEFAULT_XMPP_PORT
    embedded: bool = False


@dataclass(frozen=True)
class AgentConfig:
    """Everything one learning agent needs; every field is honoured (tests/test_config*).

    ``max_steps_per_episode`` ``None`` means the environment's own time limit
    (``TabularEnv.step_limit``). ``seed`` seeds both the environment and the learner:
    ``hyperparameters.seed`` is set from it (a different explicit non-zero value is an error).
    """

    agent_id: str
    run_id: str
    env_id: str
    episodes: int = DEFAULT_EPISODES
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    max_steps_per_episode: int | None = None
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    asl: Path = DEFAULT_ASL
    seed: int = 0
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    xmpp: XmppConfig = field(default_factory=XmppConfig)
    policy_out: Path | None = None

    def __post_init__(self) -> None:
        hp_seed = self.hyperparameters.seed
        if hp_seed != self.seed:
            if hp_seed != Hyperparameters.seed:
                raise ConfigError(
                    f"hyperparameters.seed ({hp_seed}) differs from seed ({self.seed}): an agent has one "
                    "seed, set it as AgentConfig.seed",
                    key="hyperparameters.seed",
                )
            object.__setattr__(self, "hyperparameters", dataclasses.replace(self.hyperparameters, seed=self.seed))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (paths as strings): for ``SubmitRun`` and for logs."""
        return _jsonable(dataclasses.asdict(self))


@dataclass(frozen=True)
class ContainerConfig:
    """A run of several agents in one process; each ``AgentConfig`` already carries the
    container's ``run_id``, ``xmpp`` and ``telemetry``."""

    run_id: str
    agents: list[AgentConfig]
    xmpp: XmppConfig = field(default_factory=XmppConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    #: continue ``run_id`` even if that run has finished (its episode numbering continues)
    resume: bool = False


# --- loading -------------------------------------------------------------------------------------


def load_container_config(path: str | os.PathLike[str]) -> ContainerConfig:
    """Read a container config from a ``.toml`` or ``.json`` file."""
    path = Path(path)
    source = str(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(f"config files must end in .toml or .json, got {path.name!r}", source=source)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read the config file: {error.strerror or error}", source=source) from None
    try:
        if suffix == ".toml":
            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw.decode("utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"is not valid TOML: {error}", source=source) from None
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}", source=source
        ) from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"is not UTF-8 text: {error}", source=source) from None
    try:
        return parse_container_config(data, base_dir=path.resolve().parent)
    except ConfigError as error:
        raise ConfigError(error.problem, key=error.key, source=source) from None


_CONTAINER_KEYS = ("run_id", "resume", "xmpp", "telemetry", "agent_defaults", "agents")
DEFAULT_RUN_ID = "run-{date}-{time}-{unique}"
_AGENT_KEYS = (
    "agent_id",
    "env_id",
    "env_kwargs",
    "episodes",
    "max_steps_per_episode",
    "hyperparameters",
    "asl",
    "seed",
    "policy_out",
)
_TUNABLE_HYPERPARAMETERS = tuple(n for n in Hyperparameters.names() if n != "seed")


def parse_container_config(data: Any, *, base_dir: str | os.PathLike[str] | None = None) -> ContainerConfig:
    """Validate an already-decoded container document; relative paths resolve against
    ``base_dir`` (default: the current directory)."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    top = _table(data, "")
    _check_keys(top, "", _CONTAINER_KEYS)
    run_id = _run_id(top.get("run_id", DEFAULT_RUN_ID), "run_id")
    resume = _boolean(top.get("resume", False), "resume")
    if resume and "{unique}" in str(top.get("run_id", DEFAULT_RUN_ID)):
        raise ConfigError("resume = true needs the run_id of the run to continue, not a fresh one", key="run_id")
    xmpp = _xmpp(_table(top.get("xmpp", {}), "xmpp"), "xmpp")
    telemetry = _telemetry(_table(top.get("telemetry", {}), "telemetry"), "telemetry")
    defaults = _table(top.get("agent_defaults", {}), "agent_defaults")
    if "agent_id" in defaults:
        raise ConfigError("agent_defaults.agent_id is not allowed: each agent needs its own", key="agent_defaults.agent_id")
    _check_keys(defaults, "agent_defaults", [k for k in _AGENT_KEYS if k != "agent_id"])
    if "agents" not in top:
        raise ConfigError("agents is required: a list of agent tables ([[agents]] in TOML)", key="agents")
    entries = top["agents"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"agents must be a non-empty list of agent tables, got {entries!r}", key="agents")
    agents = []
    seen: dict[str, str] = {}
    for index, entry in enumerate(entries):
        path = f"agents[{index}]"
        agent = _agent(
            defaults,
            _table(entry, path),
            path,
            run_id=run_id,
            default_seed=index,
            telemetry=telemetry,
            xmpp=xmpp,
            base=base,
        )
        folded = agent.agent_id.lower()
        if folded in seen:
            raise ConfigError(
                f"{path}.agent_id {agent.agent_id!r} is already used by {seen[folded]} (agent ids must be "
                "unique, ignoring case: they become XMPP addresses)",
                key=f"{path}.agent_id",
            )
        seen[folded] = path
        agents.append(agent)
    return ContainerConfig(run_id=run_id, agents=agents, xmpp=xmpp, telemetry=telemetry, resume=resume)


_WORKER_KEYS = ("run_id", "env_id", "agent_id", "episodes", "extra")
_WORKER_REQUIRED = ("run_id", "env_id", "agent_id", "episodes")
_WORKER_EXTRA_KEYS = (
    "use_grpc_telemetry",
    "jsonl_stdout",
    "telemetry_target",
    "hyperparameters",
    "seed",
    "asl",
    "max_steps_per_episode",
    "env_kwargs",
    "policy_out",
    "xmpp_host",
    "xmpp_port",
    "xmpp_embedded",
    "run_secret",
)


def parse_worker_json(text: str | bytes, *, base_dir: str | os.PathLike[str] | None = None) -> AgentConfig:
    """Parse the worker JSON (see the module docstring) into an AgentConfig."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"the worker config is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"the worker config is not UTF-8 text: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            "the worker config must be a JSON object like "
            '{"run_id": "test_run", "env_id": "FrozenLake-v1", "agent_id": "test_agent", "episodes": 10}, '
            f"got {type(data).__name__}"
        )
    _check_keys(data, "", _WORKER_KEYS)
    missing = [k for k in _WORKER_REQUIRED if k not in data]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} {'are' if len(missing) > 1 else 'is'} required "
            f"(the worker config needs {', '.join(_WORKER_REQUIRED)})",
            key=missing[0],
        )
    extra = _table(data.get("extra", {}), "extra")
    _check_keys(extra, "extra", _WORKER_EXTRA_KEYS)
    telemetry_keys = {"telemetry_target": "target", "use_grpc_telemetry": "use_grpc_telemetry", "jsonl_stdout": "jsonl_stdout",
                      "run_secret": "run_secret"}
    telemetry = _telemetry(
        {name: extra[k] for k, name in telemetry_keys.items() if k in extra},
        "extra",
        names={name: k for k, name in telemetry_keys.items()},
    )
    xmpp_keys = {"xmpp_host": "host", "xmpp_port": "port", "xmpp_embedded": "embedded"}
    xmpp = _xmpp(
        {name: extra[k] for k, name in xmpp_keys.items() if k in extra},
        "extra",
        names={name: k for k, name in xmpp_keys.items()},
    )
    agent_fields = {k: data[k] for k in ("agent_id", "env_id", "episodes")}
    for key in ("hyperparameters", "seed", "asl", "max_steps_per_episode", "env_kwargs", "policy_out"):
        if key in extra:
            agent_fields[key] = extra[key]
    return _agent(
        {},
        agent_fields,
        "",
        run_id=_run_id(data["run_id"], "run_id"),
        default_seed=0,
        telemetry=telemetry,
        xmpp=xmpp,
        base=base,
        key_paths={k: f"extra.{k}" for k in extra},
    )


# --- sections ------------------------------------------------------------------------------------


def _agent(
    defaults: Mapping[str, Any],
    entry: Mapping[str, Any],
    path: str,
    *,
    run_id: str,
    default_seed: int,
    telemetry: TelemetryConfig,
    xmpp: XmppConfig,
    base: Path,
    key_paths: Mapping[str, str] | None = None,
) -> AgentConfig:
    """One agent from its entry merged over ``defaults``; errors name where each value came from."""
    _check_keys(entry, path, _AGENT_KEYS)
    # Where each value was written, so an error points at the line the user must fix.
    origin: dict[str, str] = {}
    values: dict[str, Any] = {}
    for source_path, table in (("agent_defaults", defaults), (path, entry)):
        for key, value in table.items():
            if key in ("hyperparameters", "env_kwargs"):
                continue
            values[key] = value
            origin[key] = (key_paths or {}).get(key) or _join(source_path, key)

    def where(key: str) -> str:
        return origin.get(key, _join(path, key))

    hp_values, hp_origin = _merged_table("hyperparameters", defaults, entry, path, key_paths)
    env_kwargs, kw_origin = _merged_table("env_kwargs", defaults, entry, path, key_paths)
    agent_id = _agent_id(_require(values, path, "agent_id", "a name such as 'learner-a'"), where("agent_id"))
    env_id = _string(_require(values, path, "env_id", "an environment id such as 'FrozenLake-v1'"), where("env_id"))
    _environment(env_id, env_kwargs, where("env_id"), kw_origin, _join(path, "env_kwargs"))
    episodes = _integer(values.get("episodes", DEFAULT_EPISODES), where("episodes"), minimum=1)
    max_steps = values.get("max_steps_per_episode")
    if max_steps is not None:
        max_steps = _integer(max_steps, where("max_steps_per_episode"), minimum=1)
    seed = _integer(values.get("seed", default_seed), where("seed"), minimum=0)
    hyperparameters = _hyperparameters(hp_values, hp_origin, _join(path, "hyperparameters"), seed)
    asl = _existing_file(values["asl"], where("asl"), base) if "asl" in values else DEFAULT_ASL
    policy_out = _path(values["policy_out"], where("policy_out"), base) if "policy_out" in values else None
    return AgentConfig(
        agent_id=agent_id,
        run_id=run_id,
        env_id=env_id,
        episodes=episodes,
        env_kwargs=env_kwargs,
        max_steps_per_episode=max_steps,
        hyperparameters=hyperparameters,
        asl=asl,
        seed=seed,
        telemetry=telemetry,
        xmpp=xmpp,
        policy_out=policy_out,
    )


def _merged_table(
    key: str,
    defaults: Mapping[str, Any],
    entry: Mapping[str, Any],
    path: str,
    key_paths: Mapping[str, str] | None,
) -> tuple[dict[str, Any], dict[str, str]]:
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source_path, table in (("agent_defaults", defaults), (path, entry)):
        if key not in table:
            continue
        table_path = (key_paths or {}).get(key) or _join(source_path, key)
        for name, value in _table(table[key], table_path).items():
            merged[name] = value
            origin[name] = f"{table_path}.{name}"
    return merged, origin


def _hyperparameters(values: Mapping[str, Any], origin: Mapping[str, str], path: str, seed: int) -> Hyperparameters:
    if "seed" in values:
        raise ConfigError(
            f"{origin['seed']} is not a hyperparameter here: set the agent's seed instead (one seed "
            "seeds both the environment and the learner)",
            key=origin["seed"],
        )
    _check_keys(values, path, _TUNABLE_HYPERPARAMETERS, origin=origin)
    try:
        return Hyperparameters(**values, seed=seed)
    except HyperparameterError as error:
        key = origin.get(error.field, f"{path}.{error.field}")
        raise ConfigError(f"{key} must be {error.allowed}, got {error.value!r}", key=key) from None


def _environment(
    env_id: str, env_kwargs: dict[str, Any], id_path: str, kw_origin: Mapping[str, str], kw_path: str
) -> None:
    """Build the environment once (cached per id and options) so that an unknown id, a bad
    option or non-tabular spaces fail here, naming the key, before any agent starts."""
    try:
        _check_env_cached(env_id, json.dumps(env_kwargs, sort_keys=True, default=repr))
    except UnsupportedEnvironmentError as error:
        raise ConfigError(f"{id_path}: {error}", key=id_path) from None
    except InvalidEnvKwargsError as error:
        key = kw_origin.get(error.key, kw_path) if error.key else kw_path
        raise ConfigError(f"{key}: {error}", key=key) from None


@functools.lru_cache(maxsize=64)
def _check_env_cached(env_id: str, env_kwargs_json: str) -> None:
    env_kwargs = json.loads(env_kwargs_json)
    check_env(env_id, env_kwargs)
    make_env(env_id, **env_kwargs).close()


def _telemetry(values: Mapping[str, Any], path: str, names: Mapping[str, str] | None = None) -> TelemetryConfig:
    names = names or {}

    def where(key: str) -> str:
        return _join(path, names.get(key, key))

    if not names:
        _check_keys(values, path, ("target", "use_grpc_telemetry", "jsonl_stdout", "run_secret"))
    target = _target(values.get("target", DEFAULT_TELEMETRY_TARGET), where("target"))
    use_grpc = _boolean(values.get("use_grpc_telemetry", True), where("use_grpc_telemetry"))
    jsonl = values.get("jsonl_stdout")
    if jsonl is not None:
        jsonl = _boolean(jsonl, where("jsonl_stdout"))
    secret = _string(values.get("run_secret", ""), where("run_secret")) if "run_secret" in values else ""
    return TelemetryConfig(target=target, use_grpc_telemetry=use_grpc, jsonl_stdout=jsonl, run_secret=secret)


def _xmpp(values: Mapping[str, Any], path: str, names: Mapping[str, str] | None = None) -> XmppConfig:
    names = names or {}

    def where(key: str) -> str:
        return _join(path, names.get(key, key))

    if not names:
        _check_keys(values, path, ("host", "port", "embedded"))
    host = _string(values.get("host", DEFAULT_XMPP_HOST), where("host"))
    if not _HOST.match(host):
        raise ConfigError(f"{where('host')} must be a host name or address, got {host!r}", key=where("host"))
    embedded = _boolean(values.get("embedded", False), where("embedded"))
    # 0 asks the embedded server for a free port (as `--xmpp-port 0` does); a server that is
    # already running needs its real port.
    port = _integer(values.get("port", DEFAULT_XMPP_PORT), where("port"), minimum=0, maximum=65535)
    if port == 0 and not embedded:
        raise ConfigError(
            f"{where('port')} = 0 (a free port) needs {where('embedded')} = true; to use a running XMPP "
            f"server give the port it listens on (e.g. {DEFAULT_XMPP_PORT})",
            key=where("port"),
        )
    return XmppConfig(host=host, port=port, embedded=embedded)


# --- values --------------------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _table(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        what = path or "the config"
        raise ConfigError(f"{what} must be a table (an object), got {value!r}", key=path or None)
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"{path or 'the config'} has a non-string key {key!r}", key=path or None)
    return value


def _check_keys(
    table: Mapping[str, Any], path: str, allowed: Iterable[str], *, origin: Mapping[str, str] | None = None
) -> None:
    allowed = list(allowed)
    for key in table:
        if key in allowed:
            continue
        where = (origin or {}).get(key) or _join(path, key)
        message = f"{where} is not a known key"
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {close[0]!r}?"
        section = path or "the top level"
        message += f" (allowed in {section}: {', '.join(allowed)})"
        raise ConfigError(message, key=where)


def _require(table: Mapping[str, Any], path: str, key: str, what: str) -> Any:
    if key not in table:
        raise ConfigError(f"{_join(path, key)} is required ({what})", key=_join(path, key))
    return table[key]


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a non-empty string, got {value!r}", key=key)
    return value


def _integer(value: Any, key: str, *, minimum: int, maximum: int | None = None) -> int:
    allowed = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(f"{key} must be {allowed}, got {value!r}", key=key)
    return value


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}", key=key)
    return value


def _agent_id(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _AGENT_ID.match(value):
        raise ConfigError(
            f"{key} must be 1-64 letters, digits, '_', '.' or '-' starting with a letter or digit "
            f"(it becomes an XMPP address), got {value!r}",
            key=key,
        )
    return value


_RUN_ID_FIELD = re.compile(r"\{([^{}]*)\}")


def expand_run_id(template: str, key: str = "run_id", *, now: datetime.datetime | None = None) -> str:
    """``template`` with ``{date}`` (YYYYMMDD), ``{time}`` (HHMMSS, local time) and
    ``{unique}`` (6 random hex digits) filled in; any other ``{...}`` is a ConfigError."""
    now = now or datetime.datetime.now()
    values = {"date": now.strftime("%Y%m%d"), "time": now.strftime("%H%M%S"), "unique": secrets.token_hex(3)}
    unknown = sorted({name for name in _RUN_ID_FIELD.findall(template) if name not in values})
    if unknown:
        raise ConfigError(
            f"{key} has unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
            "use {date}, {time} or {unique}",
            key=key,
        )
    return _RUN_ID_FIELD.sub(lambda m: values[m.group(1)], template)


def _run_id(value: Any, key: str) -> str:
    if isinstance(value, str):
        value = expand_run_id(value, key)
    if not isinstance(value, str) or not _RUN_ID.match(value):
        raise ConfigError(
            f"{key} must be 1-128 letters, digits, '_', '.', ':' or '-' starting with a letter or digit, got {value!r}",
            key=key,
        )
    return value


def _target(value: Any, key: str) -> str:
    allowed = "'host:port' such as '127.0.0.1:50055' (or 'unix:/path')"
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be {allowed}, got {value!r}", key=key)
    if value.startswith("unix:") and len(value) > len("unix:"):
        return value
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535 or not _HOST.match(host):
        raise ConfigError(f"{key} must be {allowed}, got {value!r}", key=key)
    return value


def _path(value: Any, key: str, base: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a file path string, got {value!r}", key=key)
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _existing_file(value: Any, key: str, base: Path) -> Path:
    path = _path(value, key, base)
    if not path.is_file():
        raise ConfigError(f"{key} names {path}, which is not a file (relative paths start at {base})", key=key)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
