"""agents.config: container files (TOML, JSON), the worker JSON, honoured fields, clear errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from agents.config import (
    DEFAULT_ASL,
    DEFAULT_EPISODES,
    AgentConfig,
    ConfigError,
    TelemetryConfig,
    XmppConfig,
    load_container_config,
    parse_container_config,
    parse_worker_json,
)
from agents.qlearning import Hyperparameters
from agents.training import build_env, build_learner, train_from_config

pytestmark = pytest.mark.timeout(60)

GUIDE_JSON = (
    '{"run_id":"test_run","env_id":"FrozenLake-v1","agent_id":"test_agent","episodes":10,'
    '"extra":{"use_grpc_telemetry":true}}'
)

CONTAINER_TOML = """
run_id = "frozenlake-demo"

[xmpp]
host = "127.0.0.1"
port = 15222
embedded = true

[telemetry]
target = "127.0.0.1:50099"

[agent_defaults]
env_id = "FrozenLake-v1"
episodes = 300
[agent_defaults.hyperparameters]
gamma = 0.95
epsilon_decay = 0.99

[[agents]]
agent_id = "learner-a"
env_kwargs = { is_slippery = false }
seed = 11
[agents.hyperparameters]
alpha = 0.5

[[agents]]
agent_id = "learner-b"
env_id = "Taxi-v3"
episodes = 50
max_steps_per_episode = 80
asl = "plans/greedy.asl"
policy_out = "policies/learner-b.json"
"""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "greedy.asl").write_text("+!learn <- .print(\"hi\").\n")
    return tmp_path


def test_guide_worker_json_is_accepted_with_defaults():
    config = parse_worker_json(GUIDE_JSON)
    assert (config.run_id, config.env_id, config.agent_id, config.episodes) == (
        "test_run",
        "FrozenLake-v1",
        "test_agent",
        10,
    )
    assert config.telemetry == TelemetryConfig("127.0.0.1:50055", True, False)
    assert config.xmpp == XmppConfig("localhost", 5222, False)
    assert config.asl == DEFAULT_ASL and config.asl.parts[-2:] == ("asl", "learner.asl")
    assert config.hyperparameters == Hyperparameters(seed=0) and config.seed == 0
    assert config.max_steps_per_episode is None and config.policy_out is None and config.env_kwargs == {}
    json.dumps(config.to_dict())


def test_worker_json_extra_carries_everything(tmp_path):
    (tmp_path / "mine.asl").write_text("+!learn <- true.\n")
    text = json.dumps(
        {
            "run_id": "r1",
            "env_id": "FrozenLake-v1",
            "agent_id": "a1",
            "episodes": 20,
            "extra": {
                "use_grpc_telemetry": False,
                "telemetry_target": "10.0.0.2:6000",
                "hyperparameters": {"alpha": 0.3, "gamma": 0.9},
                "seed": 5,
                "asl": "mine.asl",
                "max_steps_per_episode": 40,
                "env_kwargs": {"is_slippery": False},
                "policy_out": "out/q.json",
                "xmpp_host": "xmpp.example",
                "xmpp_port": 5333,
                "xmpp_embedded": True,
            },
        }
    )
    config = parse_worker_json(text, base_dir=tmp_path)
    assert config.telemetry == TelemetryConfig("10.0.0.2:6000", False, True)  # JSONL when gRPC is off
    assert config.hyperparameters == Hyperparameters(alpha=0.3, gamma=0.9, seed=5)
    assert config.seed == 5 and config.max_steps_per_episode == 40
    assert config.asl == tmp_path / "mine.asl" and config.policy_out == tmp_path / "out" / "q.json"
    assert config.env_kwargs == {"is_slippery": False}
    assert config.xmpp == XmppConfig("xmpp.example", 5333, True)


@pytest.mark.parametrize(
    "text, key, fragment",
    [
        ('{"run_id": "r",', None, "not valid JSON"),
        ("[1, 2]", None, "must be a JSON object"),
        ('{"run_id":"r","env_id":"FrozenLake-v1","agent_id":"a"}', "episodes", "episodes is required"),
        ('{"env_id":"FrozenLake-v1","episodes":3}', "run_id", "run_id, agent_id are required"),
        (
            '{"run_id":"r","env_id":"FrozenLak-v1","agent_id":"a","episodes":3}',
            "env_id",
            "Did you mean 'FrozenLake-v1'",
        ),
        ('{"run_id":"r","env_id":"CartPole-v1","agent_id":"a","episodes":3}', "env_id", "Box(shape=(4,)"),
        ('{"run_id":"r","env_id":"FrozenLake-v1","agent_id":"a","episodes":0}', "episodes", "must be an integer >= 1, got 0"),
        ('{"run_id":"r","env_id":"FrozenLake-v1","agent_id":"a","episodes":"10"}', "episodes", "got '10'"),
        ('{"run_id":"r","env_id":"FrozenLake-v1","agent_id":"a b","episodes":1}', "agent_id", "got 'a b'"),
        ('{"run_id":"","env_id":"FrozenLake-v1","agent_id":"a","episodes":1}', "run_id", "got ''"),
        (
            '{"run_id":"r","env_id":"FrozenLake-v1","agent_id":"a","episode":1}',
            "episode",
            "episode is not a known key; did you mean 'episodes'?",
        ),
        (
            '{"run_id":"r","env_id":"FrozenLake-v1","agent_id":"a","episodes":1,"extra":{"use_grpc":true}}',
            "extra.use_grpc",
            "did you mean 'use_grpc_telemetry'?",
        ),
        (
            '{"run_id":"r","env_id":"FrozenLake-v1","agent_id":"a","episodes":1,"extra":{"use_grpc_telemetry":"yes"}}',
            "extra.use_grpc_telemetry",
            "must be true or false, got 'yes'",
        ),
        (
            '{"run_id":"r","env_id":"FrozenLake-v1","agent_id":"a","episodes":1,"extra":{"hyperparameters":{"alpha":1.5}}}',
            "extra.hyperparameters.alpha",
            "extra.hyperparameters.alpha must be in (0, 1], got 1.5",
        ),
        (
            '{"run_id":"r","env_id":"FrozenLake-v1","agent_id":"a","episodes":1,"extra":{"hyperparameters":{"alpah":0.5}}}',
            "extra.hyperparameters.alpah",
            "did you mean 'alpha'?",
        ),
        (
            '{"run_id":"r","env_id":"FrozenLake-v1","agent_id":"a","episodes":1,"extra":{"hyperparameters":{"seed":2}}}',
            "extra.hyperparameters.seed",
            "set the agent's seed instead",
        ),
        (
            '{"run_id":"r","env_id":"FrozenLake-v1","agent_id":"a","episodes":1,"extra":{"env_kwargs":{"slippery":true}}}',
            "extra.env_kwargs.slippery",
            "did you mean 'is_slippery'?",
        ),
        (
            '{"run_id":"r","env_id":"FrozenLake-v1","agent_id":"a","episodes":1,"extra":{"xmpp_port":70000}}',
            "extra.xmpp_port",
            "must be an integer in [0, 65535], got 70000",
        ),
        (
            '{"run_id":"r","env_id":"FrozenLake-v1","agent_id":"a","episodes":1,"extra":{"telemetry_target":"nohost"}}',
            "extra.telemetry_target",
            "'host:port'",
        ),
        (
            '{"run_id":"r","env_id":"FrozenLake-v1","agent_id":"a","episodes":1,"extra":{"asl":"no/such.asl"}}',
            "extra.asl",
            "which is not a file",
        ),
        (
            '{"run_id":"r","env_id":"FrozenLake-v1","agent_id":"a","episodes":1,"extra":{"seed":-3}}',
            "extra.seed",
            "must be an integer >= 0, got -3",
        ),
    ],
)
def test_worker_json_errors_name_the_key_and_value(text, key, fragment):
    with pytest.raises(ConfigError) as caught:
        parse_worker_json(text)
    assert caught.value.key == key
    assert fragment in str(caught.value)
    if key:
        assert str(caught.value).startswith(key)


def test_container_toml_with_two_agents(config_dir):
    path = config_dir / "container.toml"
    path.write_text(CONTAINER_TOML)
    container = load_container_config(path)
    assert container.run_id == "frozenlake-demo"
    assert container.xmpp == XmppConfig("127.0.0.1", 15222, True)
    assert container.telemetry == TelemetryConfig("127.0.0.1:50099", True, False)
    a, b = container.agents
    assert (a.agent_id, a.env_id, a.episodes, a.seed) == ("learner-a", "FrozenLake-v1", 300, 11)
    assert a.env_kwargs == {"is_slippery": False}
    assert a.hyperparameters == Hyperparameters(alpha=0.5, gamma=0.95, epsilon_decay=0.99, seed=11)
    assert a.asl == DEFAULT_ASL and a.policy_out is None
    assert (b.agent_id, b.env_id, b.episodes, b.max_steps_per_episode) == ("learner-b", "Taxi-v3", 50, 80)
    assert b.seed == 1  # default: the agent's index
    assert b.hyperparameters == Hyperparameters(gamma=0.95, epsilon_decay=0.99, seed=1)
    assert b.asl == config_dir / "plans" / "greedy.asl"
    assert b.policy_out == config_dir / "policies" / "learner-b.json"
    for agent in container.agents:
        assert agent.run_id == "frozenlake-demo"
        assert agent.xmpp == container.xmpp and agent.telemetry == container.telemetry


def test_container_json_is_the_same_structure(config_dir):
    document = {
        "run_id": "r",
        "telemetry": {"use_grpc_telemetry": False},
        "agents": [{"agent_id": "a", "env_id": "CliffWalking-v1"}, {"agent_id": "b", "env_id": "Blackjack-v1"}],
    }
    path = config_dir / "container.json"
    path.write_text(json.dumps(document))
    container = load_container_config(path)
    assert [a.agent_id for a in container.agents] == ["a", "b"]
    assert [a.seed for a in container.agents] == [0, 1]
    assert container.telemetry.jsonl_stdout is True
    assert container.agents[0].episodes == DEFAULT_EPISODES


@pytest.mark.parametrize(
    "mutate, key, fragment",
    [
        (lambda d: d.update(run_id="r-{dat}"), "run_id", "unknown placeholder(s) {dat}"),
        (lambda d: d.update(agents=[]), "agents", "non-empty list"),
        (lambda d: d.update(agent=[]), "agent", "did you mean 'agents'?"),
        (lambda d: d["agents"][1].update(agent_id="A"), "agents[1].agent_id", "already used by agents[0]"),
        (lambda d: d["agents"][1].pop("agent_id"), "agents[1].agent_id", "agents[1].agent_id is required"),
        (
            lambda d: d["agents"][1].update(hyperparameters={"alpha": 1.5}),
            "agents[1].hyperparameters.alpha",
            "agents[1].hyperparameters.alpha must be in (0, 1], got 1.5",
        ),
        (
            lambda d: d["agents"][0].update(hyperparamters={}),
            "agents[0].hyperparamters",
            "did you mean 'hyperparameters'?",
        ),
        (
            lambda d: d.update(agent_defaults={"hyperparameters": {"gamma": 2}}),
            "agent_defaults.hyperparameters.gamma",
            "agent_defaults.hyperparameters.gamma must be in [0, 1], got 2",
        ),
        (lambda d: d.update(agent_defaults={"agent_id": "x"}), "agent_defaults.agent_id", "each agent needs its own"),
        (lambda d: d.update(agent_defaults={"episodez": 3}), "agent_defaults.episodez", "did you mean 'episodes'?"),
        (lambda d: d["agents"][0].update(env_id="Taxi-v2"), "agents[0].env_id", "'Taxi-v3' or 'Taxi-v4'"),
        (
            lambda d: d["agents"][0].update(env_kwargs={"map_name": "9x9"}),
            "agents[0].env_kwargs.map_name",
            "must be one of ['4x4', '8x8'], got '9x9'",
        ),
        (lambda d: d["agents"][0].update(max_steps_per_episode=0), "agents[0].max_steps_per_episode", "got 0"),
        (lambda d: d.update(xmpp={"prot": 1}), "xmpp.prot", "did you mean 'port'?"),
        (lambda d: d.update(xmpp={"host": "a b"}), "xmpp.host", "got 'a b'"),
        (lambda d: d.update(xmpp={"port": 0}), "xmpp.port", "xmpp.port = 0 (a free port) needs xmpp.embedded = true"),
        (lambda d: d.update(xmpp={"port": -1, "embedded": True}), "xmpp.port", "got -1"),
        (lambda d: d.update(telemetry={"target": "h:99999"}), "telemetry.target", "got 'h:99999'"),
        (lambda d: d.update(telemetry="x"), "telemetry", "must be a table"),
        (lambda d: d["agents"].append("x"), "agents[2]", "must be a table"),
    ],
)
def test_container_errors_name_the_key_path(mutate, key, fragment):
    document = {
        "run_id": "r",
        "agents": [{"agent_id": "a", "env_id": "FrozenLake-v1"}, {"agent_id": "b", "env_id": "FrozenLake-v1"}],
    }
    mutate(document)
    with pytest.raises(ConfigError) as caught:
        parse_container_config(document)
    assert caught.value.key == key
    assert fragment in str(caught.value)


def test_file_errors_name_the_file(tmp_path):
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text('run_id = "r"\n[[agents]\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: is not valid TOML"):
        load_container_config(bad_toml)
    bad_value = tmp_path / "value.toml"
    bad_value.write_text('run_id = "r"\n[[agents]]\nagent_id = "a"\nenv_id = "FrozenLake-v1"\nepisodes = -1\n')
    with pytest.raises(ConfigError) as caught:
        load_container_config(bad_value)
    assert str(caught.value).startswith(f"{bad_value}: agents[0].episodes must be an integer >= 1, got -1")
    with pytest.raises(ConfigError, match="must end in .toml or .json"):
        load_container_config(tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_container_config(tmp_path / "missing.toml")


def test_agent_config_has_one_seed():
    config = AgentConfig(agent_id="a", run_id="r", env_id="FrozenLake-v1", seed=9)
    assert config.hyperparameters.seed == 9
    with pytest.raises(ConfigError, match="one seed"):
        AgentConfig(agent_id="a", run_id="r", env_id="FrozenLake-v1", seed=9, hyperparameters=Hyperparameters(seed=4))


# --- every field is honoured: it reaches the learner / environment and changes behaviour ---------

BASE = {
    "run_id": "r",
    "env_id": "FrozenLake-v1",
    "agent_id": "a",
    "episodes": 40,
    "extra": {
        "seed": 3,
        "hyperparameters": {
            "alpha": 0.2,
            "gamma": 0.9,
            "epsilon_start": 0.9,
            "epsilon_min": 0.3,
            "epsilon_decay": 0.98,
            "alpha_min": 0.05,
            "alpha_decay": 0.95,
        },
    },
}

CHANGES = {
    "alpha": 0.7,
    "gamma": 0.5,
    "epsilon_start": 0.6,
    "epsilon_min": 0.5,
    "epsilon_decay": 0.9,
    "alpha_min": 0.15,
    "alpha_decay": 0.8,
}


def _with(**extra_changes) -> AgentConfig:
    document = json.loads(json.dumps(BASE))
    for key, value in extra_changes.items():
        if key in CHANGES:
            document["extra"]["hyperparameters"][key] = value
        elif key in ("episodes",):
            document[key] = value
        else:
            document["extra"][key] = value
    return parse_worker_json(json.dumps(document))


@pytest.mark.parametrize("name, value", CHANGES.items())
def test_each_hyperparameter_reaches_the_learner(name, value):
    base_env = build_env(_with())
    learner = build_learner(_with(**{name: value}), base_env)
    assert getattr(learner.hp, name) == value
    if name in ("alpha", "gamma", "epsilon_min", "epsilon_decay", "alpha_min", "alpha_decay"):
        assert getattr(learner, name) == value
    if name == "epsilon_start":
        assert learner.epsilon == value


def test_each_hyperparameter_changes_what_the_learner_does():
    def behaviour(config: AgentConfig) -> tuple:
        env = build_env(config)
        learner = build_learner(config, env)
        learner.q[5] = [0.0, 1.0, 0.0, 0.0]
        td = learner.learn(0, 2, 0.5, 5, terminated=False)
        epsilons, alphas = [], []
        for _ in range(30):
            epsilons.append(learner.end_episode())
            alphas.append(learner.alpha)
        picks = [learner.choose(5) for _ in range(400)]
        learner.learn(0, 2, 0.5, 5, terminated=False)  # with the decayed alpha
        return td, tuple(epsilons), tuple(picks), tuple(alphas), learner.q[0, 2]

    base = behaviour(_with())
    for name, value in CHANGES.items():
        assert behaviour(_with(**{name: value})) != base, name
    # and the seed changes the exploration stream
    assert behaviour(_with(seed=4))[2] != base[2]


def test_seed_episodes_steps_and_env_kwargs_reach_training():
    base = train_from_config(_with())
    assert train_from_config(_with()).q.tobytes() == base.q.tobytes()  # reproducible
    assert train_from_config(_with(seed=4)).q.tobytes() != base.q.tobytes()
    assert base.learner.episodes == 40
    assert train_from_config(_with(episodes=7)).learner.episodes == 7
    capped = train_from_config(_with(max_steps_per_episode=3))
    assert max(capped.lengths) <= 3 < max(base.lengths)
    assert train_from_config(_with(env_kwargs={"is_slippery": False})).q.tobytes() != base.q.tobytes()
    for name, value in CHANGES.items():
        assert train_from_config(_with(**{name: value})).q.tobytes() != base.q.tobytes(), name


def test_build_env_uses_max_steps_as_the_time_limit():
    env = build_env(_with(max_steps_per_episode=25))
    assert env.max_episode_steps == 25 and env.step_limit() == 25
    assert build_env(_with()).max_episode_steps == 100


def test_config_objects_are_immutable():
    config = parse_worker_json(GUIDE_JSON)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.episodes = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hyperparameters.alpha = 0.5  # type: ignore[misc]


def test_xmpp_port_0_means_a_free_port_for_an_embedded_server(tmp_path):
    path = tmp_path / "embedded.toml"
    path.write_text('run_id = "r"\n[xmpp]\nport = 0\nembedded = true\n'
                    '[[agents]]\nagent_id = "a"\nenv_id = "FrozenLake-v1"\n')
    xmpp = load_container_config(path).xmpp
    assert (xmpp.port, xmpp.embedded) == (0, True)
    guide = '{"run_id":"r","env_id":"FrozenLake-v1","agent_id":"a","episodes":1,"extra":{%s}}'
    assert parse_worker_json(guide % '"xmpp_port":0,"xmpp_embedded":true').xmpp.port == 0
    with pytest.raises(ConfigError) as caught:
        parse_worker_json(guide % '"xmpp_port":0')
    assert caught.value.key == "extra.xmpp_port" and "extra.xmpp_embedded = true" in str(caught.value)
