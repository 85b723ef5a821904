"""The AgentSpeak actions a learning agent's plans call, and the beliefs they keep current.

Plans drive Q-learning through these actions; they read the outcome as beliefs. Everything a
plan needs to decide (explore or exploit, stop, react to a goal or a hole) is a belief, and every
belief is written synchronously into the interpreter's belief base by the action that changes it,
so the very next plan step sees it (spade-bdi's `set_belief` is only applied on the next cycle,
docs/spade-traps.md, trap 8). Numbers stay numbers.

Actions (arguments are AgentSpeak terms; Mode is the atom `explore`, `greedy` or `epsilon`):

  .rl_reset                start an episode (ends the current one first if it is still open)
  .rl_choose(Mode)         choose the next action: explore = uniformly random, greedy = argmax Q,
  .rl_choose(Mode, A)        epsilon = the learner's epsilon-greedy rule; binds A if given
  .rl_step                 take the chosen action in the environment
  .rl_step(A)              take action A (a plan's own choice)
  .rl_learn                apply the Q-learning update to the last step's transition
  .rl_end_episode          close the episode: decay epsilon, update success_rate, emit its record
  .rl_run_episode(Mode)    a whole episode in Python: reset, choose/step/learn to the end, close
  .rl_evaluate(N)          N greedy episodes on a separate copy of the environment (no learning,
                             no records); sets greedy_success_rate and greedy_return
  .rl_set_epsilon(E)       set the exploration rate
  .rl_save_policy          save the Q-table to the configured policy_out (no-op when none)
  .rl_save_policy(Path)    save the Q-table to Path
  .rl_stop / .rl_stop(R)   stop learning with reason R: the agent's plans end and its result is ready

Beliefs (all tagged [source(percept)]):

  episodes_target(T) n_states(N) n_actions(N) max_steps(M)     from the configuration
  episode(I)         index of the current (last started) episode, from 0
  step(K)            steps taken in the current episode
  state(S)           current state index
  action(A)          action chosen by the last .rl_choose
  last_reward(R)     reward of the last step        episode_return(G)  return so far
  total_steps(N)     training steps so far          episodes_done(N)   episodes closed so far
  epsilon(E)         current exploration rate
  success_rate(X)    fraction of successful episodes among the last `success_window`
  greedy_success_rate(X) greedy_return(R)           after .rl_evaluate
  done               present once the episode has ended (terminated or truncated)
  terminated / truncated                            which of the two
  goal_reached       the episode ended in success (the environment's own rule)
  fell_in_hole       FrozenLake: the episode ended in a hole
  outcome(K)         goal, hole (FrozenLake), failure (other terminal states) or timeout
  policy_saved(P)    path of the last saved Q-table

A plan triggered by one of these beliefs (`+goal_reached <- ...`) fires when the action adds it,
and runs before the intention that called the action continues. These beliefs are percepts: the
agent owns them, and a plan's own `+state(...)` or `-done` is overwritten at the next read.
Numbers written in a plan file reach actions as floats (`.rl_step(2)` gets 2.0); integral values
are accepted where an integer is needed.
Every step and every closed episode becomes a record in the agent's RecordBuffer; before each
environment step the agent passes its optional `Gate`: that is how telemetry backpressure
pauses an agent without the learning loop ever touching the network. Steps run synchronously
while the gate lets them through at once; only a step that has to wait becomes a coroutine.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

import agentspeak
from agentspeak import GoalType, Literal, Trigger
from agentspeak.runtime import Intention

from agents.evaluation import evaluate_greedy, greedy_success_probability
from agents.qlearning import QLearner
from agents.reasoning import PlanError
from agents.records import EpisodeRecord, RecordBuffer
from envs import TabularEnv

logger = logging.getLogger(__name__)

BACKEND = "spade-bdi"
MODES = ("explore", "greedy", "epsilon")
PERCEPT = frozenset([Literal("source", (Literal("percept"),))])
_FLAGS = ("done", "terminated", "truncated", "goal_reached", "fell_in_hole")
#: Every belief a learning agent keeps for its plans (the header of asl/learner.asl lists them);
#: the plan check warns about a context that reads any other belief nothing adds.
LEARNER_BELIEFS = frozenset({
    "episode", "step", "state", "action", "last_reward", "episode_return", "total_steps", "episodes_done",
    "episodes_target", "epsilon", "success_rate", "max_steps", "n_states", "n_actions", "greedy_success_rate",
    "greedy_return", "outcome", *_FLAGS,
})
_ADD, _DEL, _BELIEF = Trigger.addition, Trigger.removal, GoalType.belief


def _never(agent_id: str) -> bool:
    return False


def _holds_somebody() -> bool:
    """The default `holds_nobody`: without it, assume a step may be held back."""
    return False


@dataclass(frozen=True)
class Gate:
    """What an agent passes before each environment step (telemetry backpressure: pause,
    step credits, rate caps), as `try_pass` and `wait`, both called with the agent's id, and
    `holds_nobody`.

    `try_pass` answers at once: True when the agent may step now (the permission is then
    taken: a credit spent, a rate slot used), False when it would have to wait, taking
    nothing. `wait` returns once the agent may step, taking the permission. An agent steps
    synchronously while `try_pass` says yes and awaits `wait` only when it says no, so an open
    gate costs no coroutine per step. Without `try_pass`, every step awaits `wait`.
    `holds_nobody()` is True when nothing holds any agent back (no pause, credits or rate cap):
    control changes only between turns of the event loop, so an agent that runs many steps
    synchronously then skips `try_pass` for all of them.
    """

    wait: Callable[[str], Awaitable[None]]
    try_pass: Callable[[str], bool] = _never
    holds_nobody: Callable[[], bool] = _holds_somebody

    @classmethod
    def of_session(cls, session: Any) -> Gate:
        """The gate of a telemetry session (or a `telemetry.flow.RunFlow`): its
        `try_acquire`, `wait_until_allowed` and `holds_nobody`. When the session already holds
        its run's control state, the gate goes to that `RunFlow` directly: one call per step
        instead of three (the session only looks the flow up)."""
        flow = getattr(session, "flow", None)
        source = (flow() if callable(flow) else None) or session
        return cls(wait=source.wait_until_allowed, try_pass=source.try_acquire,
                   holds_nobody=getattr(source, "holds_nobody", _holds_somebody))

    async def __call__(self, agent_id: str) -> None:
        """Pass the gate: at once if `try_pass` allows, else once `wait` returns."""
        if not self.try_pass(agent_id):
            await self.wait(agent_id)


#: What an agent accepts as its gate: a `Gate`, or only the coroutine function to await.
GateLike = Gate | Callable[[str], Awaitable[None]]


def as_gate(gate: Optional[GateLike]) -> Optional[Gate]:
    """`gate` as a `Gate`: a bare coroutine function becomes its `wait` (awaited every step)."""
    if gate is None or isinstance(gate, Gate):
        return gate
    return Gate(wait=gate)


class _PerceptGroup(set):
    """The belief-base entry for one percept `functor/arity`: at most one belief, `functor(*args)`.

    Actions only store `args` (None: the belief does not hold); the Literal is built when
    something reads the group (the interpreter iterates it to answer a query), so a value that
    changes at every step costs an attribute store, not a Literal and a set. Reads always see the
    current value: beliefs stay synchronous. Percepts belong to the agent: a plan's own `+name`
    or `-name` on one of these groups is overwritten by the current value at the next read.
    """

    __slots__ = ("functor", "args", "_built", "_added", "_removed")

    def __init__(self, functor: str, added: list, removed: list):
        super().__init__()
        self.functor = functor
        self.args: Optional[tuple] = None
        self._built: Optional[tuple] = None
        # The plans reacting to +functor / -functor: the interpreter's own lists, which it only
        # ever appends to or removes from (plans told at run time included), so they stay current.
        self._added = added
        self._removed = removed

    def has_reactions(self) -> bool:
        return bool(self._added or self._removed)

    def _sync(self) -> None:
        args = self.args
        if args is None:
            if set.__len__(self):
                set.clear(self)
            self._built = None
        elif args != self._built or set.__len__(self) != 1:
            set.clear(self)
            set.add(self, Literal(self.functor, args, PERCEPT))
            self._built = args

    def __iter__(self):
        self._sync()
        return set.__iter__(self)

    def __len__(self) -> int:
        self._sync()
        return set.__len__(self)


class BeliefWriter:
    """Keeps an AgentSpeak agent's percept beliefs, synchronously, and fires plans that react.

    Each percept name/arity is a `_PerceptGroup` in the interpreter's belief base. Only when a
    plan reacts to the belief (`+name(...)` / `-name(...)`) or an intention waits for a belief
    event does a change go through the interpreter's `call`, which raises the events (Jason's
    semantics: a percept that does not change raises none).
    """

    def __init__(self, asp_agent: agentspeak.runtime.Agent):
        self.asp_agent = asp_agent
        self._intentions = asp_agent.intentions
        self._groups: dict[tuple[str, int], _PerceptGroup] = {}
        self._reactions: list = []

    def group(self, name: str, arity: int) -> _PerceptGroup:
        """The belief-base entry of percept `name/arity` (created on first use), for `put`."""
        group = self._groups.get((name, arity))
        if group is None:
            plans = self.asp_agent.plans
            added, removed = plans[(_ADD, _BELIEF, name, arity)], plans[(_DEL, _BELIEF, name, arity)]
            group = self._groups[(name, arity)] = _PerceptGroup(name, added, removed)
            self.asp_agent.beliefs[(name, arity)] = group  # replaces any initial belief of the .asl
        return group

    def put(self, group: _PerceptGroup, args: Optional[tuple]) -> None:
        """Make `functor(*args)` the group's belief (None: no belief), raising events if anything reacts."""
        old = group.args
        if old == args:
            return
        if group.has_reactions() or self._event_waiters():
            if old is not None:
                self._call(_DEL, Literal(group.functor, old, PERCEPT))
            if args is not None:
                self._call(_ADD, Literal(group.functor, args, PERCEPT))
        group.args = args

    def set(self, name: str, *args: Any) -> None:
        """Make `name(args)` the only `name/len(args)` belief."""
        self.put(self.group(name, len(args)), args)

    def flag(self, name: str, on: bool) -> None:
        """Add (on) or remove (off) the 0-arity belief `name`."""
        self.put(self.group(name, 0), () if on else None)

    def remove(self, name: str, arity: int) -> None:
        """Remove the `name/arity` belief."""
        self.put(self.group(name, arity), None)

    def _event_waiters(self) -> bool:
        # An intention suspended in `.wait("+belief")` needs the event too. The intention running
        # the current action is never the one waiting, so a single intention means none waits.
        intentions = self._intentions
        return len(intentions) > 1 and any(waiter.event is not None for waiter in self.asp_agent.waiters())

    def _call(self, trigger: Trigger, belief: Literal) -> None:
        intentions = self._intentions
        before = len(intentions)
        self.asp_agent.call(trigger, _BELIEF, belief, Intention())
        if len(intentions) > before:  # a plan reacted: the interpreter appended its intention
            self._reactions.append(intentions[-1])

    def promote_reactions(self) -> None:
        """Run the reactions raised since the last call before the intention that raised them.

        The interpreter runs the first runnable intention, and appends new ones at the end: a
        `+goal_reached` plan would wait until the learning loop that reached the goal finishes.
        Moved to the front (oldest first), reactions run to completion (or until they wait)
        as soon as the action that changed the belief returns, which is what a plan writer means
        by "when the goal is reached, do this".
        """
        if not self._reactions:
            return
        intentions = self._intentions
        for stack in reversed(self._reactions):
            for i, candidate in enumerate(intentions):
                if candidate is stack:
                    del intentions[i]
                    intentions.appendleft(stack)
                    break
        self._reactions.clear()


def _term_value(term: Any, intention: Intention) -> Any:
    """An action argument as a Python value: numbers and strings as they are, atoms as their name."""
    if type(term) is Literal and not term.args and not term.annots:  # an atom written in the plan
        return term.functor
    value = agentspeak.grounded(term, intention.scope)
    if isinstance(value, Literal) and value.is_atom():
        return value.functor
    return value


def _integer(term: Any, intention: Intention) -> Any:
    """An integer argument. The interpreter reads every number in a plan file as a float (`7` is
    7.0), so an integral float counts; anything else is returned as is for the caller to refuse."""
    value = _term_value(term, intention)
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _mode(term: Any, intention: Intention) -> str:
    mode = _term_value(term, intention)
    if mode not in MODES:
        raise PlanError(f"unknown mode {agentspeak.asl_str(mode)}: use one of {', '.join(MODES)}")
    return mode


def _observation_json(value: Any) -> str:
    return str(value) if type(value) is int else json.dumps(value)


class LearningActions:
    """One agent's Q-learning episode state, and the `.rl_*` actions that plans use to drive it.

    `defer(action, awaitable)` is the reasoning behaviour's hook for asynchronous work an action
    needs done before the next plan step (the gate, waiting for buffer space); `on_stop(reason)`
    is called by `.rl_stop`. `bind(asp_agent)` must be called once the plan library is loaded.
    """

    def __init__(
        self,
        *,
        agent_id: str,
        run_id: str,
        env: TabularEnv,
        learner: QLearner,
        records: RecordBuffer,
        episodes_target: int,
        make_eval_env: Callable[[], TabularEnv],
        max_steps: Optional[int] = None,
        seed: Optional[int] = None,
        eval_episodes: int = 100,
        success_window: int = 100,
        policy_out: Optional[str] = None,
        first_episode_index: int = 0,
        defer: Callable[[str, Awaitable], None],
        on_stop: Callable[[str], None],
    ):
        self.agent_id = agent_id
        self.run_id = run_id
        self.env = env
        self.learner = learner
        self.records = records
        records.bind(run_id, agent_id, BACKEND)
        self._add_step = records.add_step
        self.episodes_target = episodes_target
        self.step_limit = env.step_limit(max_steps)
        self.seed = seed
        self.eval_episodes = eval_episodes
        self.policy_out = policy_out
        self.gate: Optional[Gate] = None
        self._make_eval_env = make_eval_env
        self._eval_env: Optional[TabularEnv] = None
        self._defer = defer
        self._on_stop = on_stop
        self._frozen_lake = env.gym_id.startswith("FrozenLake")
        hint = env.render_hint()
        self._render_hint_json = json.dumps(hint) if hint else None
        self._successes: deque[bool] = deque(maxlen=success_window)
        self.beliefs: Optional[BeliefWriter] = None
        self._step_groups: list[_PerceptGroup] = []
        self._action_group: Optional[_PerceptGroup] = None

        # A resumed run continues its numbering (episode indexes identify records in the store).
        self.first_episode_index = first_episode_index
        self.episode_index = first_episode_index - 1
        self.episodes_done = 0
        self.total_steps = 0
        self.in_episode = False
        self.step_in_episode = 0
        self.state = 0
        self.episode_seed: Optional[int] = None
        self.episode_return = 0.0
        self.last_reward = 0.0
        self.done = self.terminated = self.truncated = self.success = False
        self.outcome: Optional[str] = None
        self.success_rate = 0.0
        self.greedy_success_rate: Optional[float] = None
        self.greedy_return: Optional[float] = None
        self.evaluated_at_steps = -1
        self._chosen: Optional[tuple[int, str]] = None
        self._transition: Optional[tuple[int, int, float, int, bool]] = None

    # ----------------------------------------------------------------- wiring

    def register(self, actions: agentspeak.Actions) -> None:
        """Add the `.rl_*` actions to an interpreter action registry."""
        add = actions.add
        add(".rl_reset", 0, self._a_reset)
        add(".rl_choose", 1, self._a_choose)
        add(".rl_choose", 2, self._a_choose)
        add(".rl_step", 0, self._a_step)
        add(".rl_step", 1, self._a_step)
        add(".rl_learn", 0, self._a_learn)
        add(".rl_end_episode", 0, self._a_end_episode)
        add(".rl_run_episode", 1, self._a_run_episode)
        add(".rl_evaluate", 1, self._a_evaluate)
        add(".rl_set_epsilon", 1, self._a_set_epsilon)
        add(".rl_save_policy", 0, self._a_save_policy)
        add(".rl_save_policy", 1, self._a_save_policy)
        add(".rl_stop", 0, self._a_stop)
        add(".rl_stop", 1, self._a_stop)

    def bind(self, asp_agent: agentspeak.runtime.Agent) -> None:
        """Attach to the loaded interpreter agent and publish the initial beliefs."""
        self.beliefs = b = BeliefWriter(asp_agent)
        # The beliefs every step changes, in the order _publish_step writes them.
        self._step_groups = [b.group(name, 1) for name in ("state", "step", "last_reward", "episode_return", "total_steps")]
        self._action_group = b.group("action", 1)
        b.set("episodes_target", self.episodes_target)
        b.set("n_states", self.env.n_states)
        b.set("n_actions", self.env.n_actions)
        b.set("max_steps", self.step_limit)
        b.set("episodes_done", 0)
        b.set("total_steps", 0)
        b.set("epsilon", float(self.learner.epsilon))
        b.set("success_rate", 0.0)

    def close(self) -> None:
        self.env.close()
        if self._eval_env is not None:
            self._eval_env.close()

    # ------------------------------------------------------------- the learning

    def reset(self) -> None:
        if self.in_episode:
            self.end_episode(ended_by="reset")
        self.episode_index += 1
        # Seeded once, at the first episode; later episodes continue the environment's stream
        # (Gymnasium's convention, and agents.training's), so episode_seed is set only there.
        self.episode_seed = self.seed if self.episode_index == self.first_episode_index else None
        self.state, _ = self.env.reset(seed=self.episode_seed)
        self.in_episode = True
        self.step_in_episode = 0
        self.episode_return = self.last_reward = 0.0
        self.done = self.terminated = self.truncated = self.success = False
        self.outcome = None
        self._chosen = self._transition = None

    def choose(self, mode: str) -> tuple[int, str]:
        self._require_open_episode(".rl_choose")
        learner, state = self.learner, self.state
        if mode == "epsilon":
            # The learner's own epsilon-greedy rule: while learning, ties among the best actions
            # are broken at random (lowest-index ties would make an untrained agent walk one way).
            action, explored = learner.choose_explained(state)
            label = "explore" if explored else "greedy"
        elif mode == "greedy":
            action, label = learner.greedy_action(state), "greedy"
        else:
            action, label = learner.random_action(), "explore"
        self._chosen = (action, label)
        return action, label

    def step(self, action: int, label: str) -> None:
        state, k = self.state, self.step_in_episode
        next_state, reward, terminated, truncated, _ = self.env.step(action)
        k += 1
        if not (terminated or truncated) and k >= self.step_limit:
            truncated = True
        self._transition = (state, action, reward, next_state, terminated)
        self._chosen = None
        self.state = next_state
        self.step_in_episode = k
        self.total_steps += 1
        self.last_reward = reward
        self.episode_return += reward
        self._add_step(
            self.episode_index,
            k - 1,
            str(action),
            _observation_json(self.env.observation),
            reward,
            terminated,
            truncated,
            time.time_ns(),
            label,
            # Per environment, so constant: sent once per episode, with its first step.
            self._render_hint_json if k == 1 else None,
            self.episode_seed,
        )
        if terminated or truncated:
            self.done, self.terminated, self.truncated = True, terminated, truncated
            self.success = self.env.is_success(reward, terminated)
            if self.success:
                self.outcome = "goal"
            elif truncated:
                self.outcome = "timeout"
            else:
                self.outcome = "hole" if self._frozen_lake else "failure"

    def learn(self) -> None:
        if self._transition is None:
            raise PlanError(".rl_learn: no step to learn from since the last .rl_reset or .rl_learn; call .rl_step first")
        state, action, reward, next_state, terminated = self._transition
        self._transition = None
        self.learner.learn(state, action, reward, next_state, terminated)

    def end_episode(self, ended_by: str = "plan") -> None:
        if not self.done:
            self.truncated = True  # the plan (or a reset, or a stop) cut the episode short
        epsilon = self.learner.end_episode()
        successes = self._successes
        successes.append(self.success)
        self.success_rate = sum(successes) / len(successes)
        self.in_episode = False
        self.episodes_done += 1
        metadata = {"success": self.success, "outcome": self.outcome, "epsilon": epsilon, "episode_seed": self.episode_seed}
        if ended_by != "plan" or not self.done:
            metadata["ended_by"] = ended_by
        self.records.add_episode(
            EpisodeRecord(
                self.run_id,
                self.agent_id,
                self.episode_index,
                self.episode_return,
                self.step_in_episode,
                self.terminated,
                self.truncated,
                time.time_ns(),
                metadata,
            )
        )

    def run_episode_steps(self, mode: str) -> bool:
        """Choose, step and learn in the open episode for as long as no step has to wait (the
        gate lets it through at once, the record buffer has room). True once the episode is
        done; False when the next step has to wait (see `finish_episode_steps`)."""
        gate, agent_id = self.gate, self.agent_id
        # Control (pause, credits, rate caps) changes only between turns of the event loop, so a
        # gate that holds nobody now holds nobody for this whole synchronous run of steps.
        try_pass = None if gate is None or gate.holds_nobody() else gate.try_pass
        room = self.records.free  # each step adds one record
        choose, step, learn = self.choose, self.step, self.learn
        while not self.done:
            if room <= 0 or (try_pass is not None and not try_pass(agent_id)):
                return False
            room -= 1
            step(*choose(mode))
            learn()
        return True

    async def finish_episode_steps(self, mode: str) -> None:
        """The open episode's remaining steps, waiting for buffer space and the gate where a
        step has to, and synchronously again as soon as none has to."""
        while not self.run_episode_steps(mode):
            await self.wait_for_record_space()
            gate = self.gate
            if gate is not None:
                await gate(self.agent_id)
                self.step(*self.choose(mode))
                self.learn()

    def evaluate(self, episodes: int) -> None:
        if self._eval_env is None:
            self._eval_env = self._make_eval_env()
        seed = None if self.seed is None else self.seed + 1_000_000
        result = evaluate_greedy(self.learner, self._eval_env, episodes, seed, max_steps=self.step_limit)
        self.greedy_success_rate = result.success_rate
        self.greedy_return = result.mean_return
        self.evaluated_at_steps = self.total_steps

    def exact_greedy_success(self) -> Optional[float]:
        """The greedy policy's exact probability of success within the step limit, where the
        environment publishes its transition model (FrozenLake, CliffWalking, Taxi); None
        elsewhere. No sampling noise: what experiments score learning by where they can."""
        if self._eval_env is None:
            self._eval_env = self._make_eval_env()
        try:
            return greedy_success_probability(self.learner, self._eval_env, max_steps=self.step_limit)
        except ValueError:
            return None

    def save_policy(self, path: str) -> Path:
        metadata = {"env": self.env.env_id, "agent": self.agent_id, "run_id": self.run_id, "episodes": self.episodes_done}
        return self.learner.save(path, metadata)

    def finish(self) -> None:
        """Close an open episode and evaluate greedily if not done since the last training step."""
        if self.in_episode:
            self.end_episode(ended_by="stop")
        if self.eval_episodes > 0 and self.evaluated_at_steps != self.total_steps:
            self.evaluate(self.eval_episodes)

    # --------------------------------------------------------------- records

    async def wait_for_record_space(self) -> None:
        """Wait while the record buffer is full: the telemetry behaviour drains it, and the agent
        takes no step meanwhile (backpressure; nothing is dropped)."""
        await self.records.wait_for_space()

    # --------------------------------------------------------------- beliefs

    def _publish_step(self) -> None:
        b, g = self.beliefs, self._step_groups
        b.put(g[0], (self.state,))
        b.put(g[1], (self.step_in_episode,))
        b.put(g[2], (self.last_reward,))
        b.put(g[3], (self.episode_return,))
        b.put(g[4], (self.total_steps,))
        if self.done:
            b.flag("terminated", self.terminated)
            b.flag("truncated", self.truncated)
            b.set("outcome", Literal(self.outcome))
            b.flag("fell_in_hole", self.outcome == "hole")
            b.flag("goal_reached", self.success)
            b.flag("done", True)

    def _publish_reset(self) -> None:
        b = self.beliefs
        for name in _FLAGS:
            b.flag(name, False)
        b.remove("outcome", 1)
        b.remove("action", 1)
        b.set("episode", self.episode_index)
        b.set("step", 0)
        b.set("state", self.state)
        b.set("last_reward", 0.0)
        b.set("episode_return", 0.0)

    def _publish_end(self) -> None:
        b = self.beliefs
        b.set("episodes_done", self.episodes_done)
        b.set("epsilon", float(self.learner.epsilon))
        b.set("success_rate", self.success_rate)

    def _publish_evaluation(self) -> None:
        self.beliefs.set("greedy_success_rate", self.greedy_success_rate)
        self.beliefs.set("greedy_return", self.greedy_return)

    # ---------------------------------------------------------------- actions

    def _require_open_episode(self, action: str) -> None:
        if not self.in_episode:
            raise PlanError(f"{action}: no episode is open; call .rl_reset first")
        if self.done:
            raise PlanError(f"{action}: the episode is over (done); call .rl_end_episode or .rl_reset")

    def _settle(self, action: str) -> None:
        """End of an action: reactions it raised run next; a full record buffer makes the agent
        wait for space before its next instruction."""
        self.beliefs.promote_reactions()
        if self.records.full:
            self._defer(action, self.wait_for_record_space())

    def _a_reset(self, agent, term, intention):
        was_open = self.in_episode
        self.reset()
        if was_open:
            self._publish_end()
        self._publish_reset()
        self._settle(".rl_reset/0")
        yield

    def _a_choose(self, agent, term, intention):
        action, _ = self.choose(_mode(term.args[0], intention))
        self.beliefs.put(self._action_group, (action,))
        self._settle(".rl_choose")
        if len(term.args) == 2 and not agentspeak.unify(term.args[1], action, intention.scope, intention.stack):
            return
        yield

    def _a_step(self, agent, term, intention):
        name = f".rl_step/{len(term.args)}"
        self._require_open_episode(name)
        if term.args:
            action = _integer(term.args[0], intention)
            if type(action) is not int:
                raise PlanError(f"{name}: the action must be an integer in range({self.env.n_actions}), got {agentspeak.asl_str(action)}")
            label = "greedy" if action == self.learner.greedy_action(self.state) else "explore"
        elif self._chosen is None:
            raise PlanError(f"{name}: no action chosen since the last step; call .rl_choose(Mode) first")
        else:
            action, label = self._chosen
        gate = self.gate
        if gate is None or gate.try_pass(self.agent_id):
            self.step(action, label)
            self._publish_step()
            self._settle(name)
        else:
            self._defer(name, self._gated_step(gate, action, label))
        yield

    async def _gated_step(self, gate: Gate, action: int, label: str) -> None:
        await gate.wait(self.agent_id)
        self.step(action, label)
        self._publish_step()
        self.beliefs.promote_reactions()
        await self.wait_for_record_space()

    def _a_learn(self, agent, term, intention):
        self.learn()
        yield

    def _a_end_episode(self, agent, term, intention):
        if not self.in_episode:
            raise PlanError(".rl_end_episode/0: no episode is open; call .rl_reset first")
        self.end_episode()
        self._publish_end()
        self._settle(".rl_end_episode/0")
        yield

    def _a_run_episode(self, agent, term, intention):
        mode = _mode(term.args[0], intention)
        self.reset()
        if self.run_episode_steps(mode):
            self.end_episode()
            self._publish_episode_run()
            self._settle(".rl_run_episode/1")
        else:
            self._defer(".rl_run_episode/1", self._gated_episode(mode))
        yield

    async def _gated_episode(self, mode: str) -> None:
        await self.finish_episode_steps(mode)
        self.end_episode()
        self._publish_episode_run()
        self.beliefs.promote_reactions()
        await self.wait_for_record_space()

    def _publish_episode_run(self) -> None:
        self._publish_reset()
        self._publish_step()
        self._publish_end()

    def _a_evaluate(self, agent, term, intention):
        episodes = _integer(term.args[0], intention)
        if type(episodes) is not int or episodes < 1:
            raise PlanError(f".rl_evaluate/1: the number of episodes must be a positive integer, got {agentspeak.asl_str(episodes)}")
        self.evaluate(episodes)
        self._publish_evaluation()
        self._settle(".rl_evaluate/1")
        yield

    def _a_set_epsilon(self, agent, term, intention):
        epsilon = _term_value(term.args[0], intention)
        if not agentspeak.is_number(epsilon) or not 0.0 <= epsilon <= 1.0:
            raise PlanError(f".rl_set_epsilon/1: epsilon must be a number in [0, 1], got {agentspeak.asl_str(epsilon)}")
        self.learner.epsilon = float(epsilon)
        self.beliefs.set("epsilon", float(epsilon))
        self._settle(".rl_set_epsilon/1")
        yield

    def _a_save_policy(self, agent, term, intention):
        path = _term_value(term.args[0], intention) if term.args else self.policy_out
        if path is None:
            logger.info("agent %s (run %s): .rl_save_policy skipped: no policy_out configured", self.agent_id, self.run_id)
            yield
            return
        if not isinstance(path, str):
            raise PlanError(f".rl_save_policy/1: the path must be a string, got {agentspeak.asl_str(path)}")
        saved = self.save_policy(path)
        self.beliefs.set("policy_saved", str(saved))
        self._settle(f".rl_save_policy/{len(term.args)}")
        yield

    def _a_stop(self, agent, term, intention):
        reason = str(_term_value(term.args[0], intention)) if term.args else "stopped by plan"
        self._on_stop(reason)
        yield
