"""Hunter actions: how a learner's plans act in a shared pursuit world over XMPP.

The world lives in the environment agent (agents.coordination.world_agent); a hunter's (or a
scout's) Gymnasium environment is a *view* of it (``MosaicPursuit-v0`` or ``MosaicTan-v0``)
attached to this module's `HunterLink`.
The ordinary learning actions (.rl_choose, .rl_learn, .rl_end_episode) work unchanged on the
view; these actions replace .rl_reset / .rl_step, because a step now waits for the world's
answer (and, in the joint condition, for the partner's sensation):

  .world_reset         ask the environment agent to start the next episode; wait for the start
                         observation                                      (kinds world_reset / world_observation)
  .world_act(A)        send action A for this step; wait for the world's answer (world_action)
  .tell_sensation      tell the partner what this agent sees (the prey's offset; in Tan's world
                         also its cell, so the partner can place the prey)              (sensation)
  .tell_location       tell the partner only where this agent is (Tan's world: its cell)  (location)
  .world_observe       take the answer in: the view's state (with the partner's report when the
                         view includes it: it waits for the partner's message), the reward and the
                         episode's end, as the beliefs .rl_reset / .rl_step set (state, step, done,
                         goal_reached, ...)
  .choose_boltzmann(T, A)  A: an action drawn with probability proportional to exp(Q(s, a) / T)
                         (Tan's exploration), from the learner's own random stream

A plan for a step: ``.rl_choose(epsilon, A); .world_act(A); .tell_sensation; .world_observe; .rl_learn``.
A hunter that never tells its sensation leaves a partner that needs it waiting: after
`answer_timeout_s` that partner's .world_observe fails with a message saying so. A location
report satisfies that wait but carries no prey: the partner's state then uses its own sensation.

Information bits of a report: in Tan's world a cell is one of size**2 and a sensation one of the
teller's (2d+1)**2 + 1 offsets; in the pursuit world an offset is one of size**2.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, Any, Optional

import agentspeak

from agents.actions import PlanError, _integer, _term_value
from agents.coordination import wire
from envs.multiagent.tan import Percept, offset_states, reported_prey
from envs.multiagent.tan_env import TanAgentEnv

if TYPE_CHECKING:
    from agents.coordination.agent import CoordinatingAgent

logger = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 30.0


class HunterLink:
    """A hunter's side of the world protocol: what it asked, what came back, the view's answers.

    Implements `envs.multiagent.pursuit.WorldLink` for the hunter's view.
    """

    def __init__(self, agent: "CoordinatingAgent", world_jid: str, partner_id: Optional[str], answer_timeout_s: float = ANSWER_TIMEOUT_S):
        self.agent = agent
        self.world_jid = world_jid
        self.partner_id = partner_id
        self.answer_timeout_s = answer_timeout_s
        self.view = agent.learning.env.gym_env.unwrapped
        self.view.attach(self)
        self.episode = -1
        self.step = 0
        self._answers: dict[tuple[str, int, int], asyncio.Future] = {}
        self._pending: Optional[dict[str, Any]] = None  # the world's last answer, not yet observed
        self._pending_action: Optional[tuple[int, str]] = None
        self._partner_offset: tuple[int, int] = (0, 0)
        self._report: Optional[dict[str, Any]] = None
        self.tan = isinstance(self.view, TanAgentEnv)

    # -------------------------------------------------------------- messages in

    def receive(self, peer: str, payload: dict[str, Any]) -> None:
        """A world_observation (from the world) or a report (from the partner). PayloadError for
        one this hunter cannot use (no valid episode, step, cell or prey; a second one for a step)."""
        kind = wire.SENSATION if payload["kind"] in wire.REPORT_KINDS else payload["kind"]
        try:
            episode, step = _whole(payload["episode"]), _whole(payload["step"])
            if self.tan and kind == wire.SENSATION:
                _check_report(payload, self.view.options.size)
        except (KeyError, TypeError, ValueError) as err:
            raise wire.PayloadError(f"{payload['kind']} from {peer} is not usable: {err}") from None
        future = self._future(kind, episode, step)
        if future.done():
            raise wire.PayloadError(f"a second {payload['kind']} from {peer} for episode {episode} step {step}")
        future.set_result(payload)

    def _future(self, kind: str, episode: int, step: int) -> asyncio.Future:
        key = (kind, episode, step)
        future = self._answers.get(key)
        if future is None:
            future = self._answers[key] = asyncio.get_running_loop().create_future()
        return future

    async def _answer(self, kind: str, who: str) -> dict[str, Any]:
        key = (kind, self.episode, self.step)
        future = self._future(*key)
        try:
            return await asyncio.wait_for(future, self.answer_timeout_s)
        except asyncio.TimeoutError:
            hint = " (does its plan call .tell_sensation before .world_observe?)" if kind == wire.SENSATION else ""
            raise PlanError(f"no {kind} from {who}{hint} for episode {self.episode} step {self.step} within {self.answer_timeout_s:g}s") from None
        finally:
            self._answers.pop(key, None)

    # ---------------------------------------------------------- actions' work

    async def request_reset(self) -> None:
        self.episode += 1
        self.step = 0
        # A reset request tells the world nothing it does not know (the next episode): 0 bits.
        await self.agent.send_coordination(self.world_jid, wire.WORLD_RESET, wire.encode(wire.WORLD_RESET, episode=self.episode), 0)
        self._pending = await self._answer(wire.WORLD_OBSERVATION, "the environment agent")
        self._pending_action = None

    async def act(self, action: int, label: str) -> None:
        if self._pending is not None:
            raise PlanError(".world_act: the world's last answer has not been taken in; call .world_observe first")
        body = wire.encode(wire.WORLD_ACTION, episode=self.episode, step=self.step, action=action)
        await self.agent.send_coordination(self.world_jid, wire.WORLD_ACTION, body, math.log2(self.agent.learning.env.n_actions))
        self.step += 1
        self._pending = await self._answer(wire.WORLD_OBSERVATION, "the environment agent")
        self._pending_action = (action, label)

    def tell(self, kind: str) -> None:
        """Send the partner this step's report: a sensation or (Tan's world) a location."""
        if self.partner_id is None:
            raise PlanError(f".tell_{kind}: this agent has no partner to tell")
        if self._pending is None:
            raise PlanError(f".tell_{kind}: nothing seen yet in this step; call .world_reset or .world_act first")
        seen = self._pending
        if not self.tan:
            if kind != wire.SENSATION:
                raise PlanError(f".tell_{kind}: the pursuit world has no cells to tell; use .tell_sensation")
            fields, bits = {"offset": seen["offset"]}, math.log2(self.view.size**2)
        else:
            options = self.view.options
            fields, bits = {"cell": seen["cell"]}, math.log2(options.size**2)
            if kind == wire.SENSATION:
                depth = options.scout_depth if self.view.scout else options.depth
                fields["prey"] = seen["prey"]
                bits += math.log2(offset_states(depth))
        body = wire.encode(kind, episode=self.episode, step=self.step, **fields)
        self.agent.post(self.agent.peers[self.partner_id], kind, body, bits)

    async def observe(self) -> None:
        if self._pending is None:
            raise PlanError(".world_observe: no answer to take in; call .world_reset or .world_act first")
        if self.view.needs_report:
            self._report = await self._answer(wire.SENSATION, f"partner {self.partner_id}")
            if not self.tan:
                self._partner_offset = tuple(self._report["offset"])
        learning = self.agent.learning
        if self._pending_action is None:
            learning.reset()  # asks the view, which answers take_reset()
            learning._publish_reset()
        else:
            learning.step(*self._pending_action)  # asks the view, which answers take_step()
            learning._publish_step()
        learning.beliefs.promote_reactions()
        await learning.wait_for_record_space()

    # ------------------------------------------------- the view's questions

    def _state(self) -> int:
        seen = self._pending
        if not self.tan:
            return self.view.state_of(seen["offset"], self._partner_offset)
        cell = tuple(seen["cell"])
        prey = None if seen["prey"] is None else tuple(seen["prey"])
        partner = None if seen["partner"] is None else tuple(seen["partner"])
        report = self._report
        told = None
        if report is not None and report.get("prey") is not None:
            told = reported_prey(self.view.options, cell, report["cell"], report["prey"])
        return self.view.state_of(Percept(cell, prey, partner), told)

    def take_reset(self) -> int:
        state = self._state()
        self._pending = None
        return state

    def take_step(self, action: int) -> tuple[int, float, bool, bool]:
        answer = self._pending
        state = self._state()
        self._pending = None
        return state, float(answer["reward"]), bool(answer["terminated"]), bool(answer["truncated"])


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _check_report(payload: dict[str, Any], size: int) -> None:
    """A Tan report's cell must be on the grid and its prey (if any) an offset within it."""
    cell, prey = payload["cell"], payload.get("prey")
    if not (isinstance(cell, list) and len(cell) == 2 and all(0 <= _whole(c) < size for c in cell)):
        raise ValueError(f"cell must be [row, column] on the {size}x{size} grid, got {cell!r}")
    if prey is not None and not (isinstance(prey, list) and len(prey) == 2 and all(abs(_whole(d)) < size for d in prey)):
        raise ValueError(f"prey must be null or [dx, dy] within the grid, got {prey!r}")


class HunterActions:
    """The .world_* and .tell_sensation plan actions of a hunter (see the module docstring)."""

    def __init__(self, agent: "CoordinatingAgent"):
        self.agent = agent
        self.link: Optional[HunterLink] = None

    def register(self, actions: agentspeak.Actions) -> None:
        add = actions.add
        add(".world_reset", 0, self._a_world_reset)
        add(".world_act", 1, self._a_world_act)
        add(".tell_sensation", 0, self._a_tell_sensation)
        add(".tell_location", 0, self._a_tell_location)
        add(".world_observe", 0, self._a_world_observe)
        add(".choose_boltzmann", 2, self._a_choose_boltzmann)

    def _require_link(self, action: str) -> HunterLink:
        if self.link is None:
            raise PlanError(f"{action}: this agent takes part in no shared world (it has no environment agent)")
        return self.link

    def _a_world_reset(self, agent, term, intention):
        link = self._require_link(".world_reset")
        learning = self.agent.learning
        if learning.in_episode:
            learning.end_episode(ended_by="reset")
            learning._publish_end()
        self.agent.defer_work(".world_reset/0", link.request_reset())
        yield

    def _a_world_act(self, agent, term, intention):
        link = self._require_link(".world_act")
        learning = self.agent.learning
        learning._require_open_episode(".world_act/1")
        action = _integer(term.args[0], intention)
        if type(action) is not int or not 0 <= action < learning.env.n_actions:
            raise PlanError(f".world_act/1: the action must be an integer in range({learning.env.n_actions}), got {agentspeak.asl_str(action)}")
        values = learning.learner.q[learning.state]
        label = "greedy" if values[action] == values.max() else "explore"
        self.agent.defer_work(".world_act/1", self._gated_act(link, action, label))
        yield

    async def _gated_act(self, link: HunterLink, action: int, label: str) -> None:
        gate = self.agent.learning.gate
        if gate is not None:
            await gate(self.agent.agent_id)
        await link.act(action, label)

    def _a_tell_sensation(self, agent, term, intention):
        self._require_link(".tell_sensation").tell(wire.SENSATION)
        yield

    def _a_tell_location(self, agent, term, intention):
        self._require_link(".tell_location").tell(wire.LOCATION)
        yield

    def _a_choose_boltzmann(self, agent, term, intention):
        learning = self.agent.learning
        learning._require_open_episode(".choose_boltzmann/2")
        temperature = _term_value(term.args[0], intention)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise PlanError(f".choose_boltzmann/2: the temperature must be a number > 0, got {agentspeak.asl_str(temperature)}")
        action = learning.learner.choose_boltzmann(learning.state, float(temperature))
        if agentspeak.unify(term.args[1], action, intention.scope, intention.stack):
            yield

    def _a_world_observe(self, agent, term, intention):
        link = self._require_link(".world_observe")
        self.agent.defer_work(".world_observe/0", link.observe())
        yield
