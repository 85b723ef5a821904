"""Multi-agent environments: worlds several agents act in together, and the environment agent
that hosts one over XMPP.

Importing this package registers ``MosaicPursuit-v0`` with Gymnasium (one hunter's view of the
two-hunter pursuit world, see ``envs.multiagent.pursuit``) and ``MosaicTan-v0`` (one agent's view
of Tan's 1993 world, see ``envs.multiagent.tan`` and ``envs.multiagent.tan_env``), so ``envs.make_env`` builds it like
any other tabular environment.
"""

from gymnasium.envs.registration import register, registry

from envs.multiagent.pursuit import (
    CAPTURE_REWARD,
    HUNTERS,
    N_ACTIONS,
    PursuitHunterEnv,
    PursuitWorld,
    WorldStep,
    joint_state_index,
    sensation_index,
    wrap_offset,
)

PURSUIT_ENV_ID = "MosaicPursuit-v0"
TAN_ENV_ID = "MosaicTan-v0"

if PURSUIT_ENV_ID not in registry:
    # No max_episode_steps: the world truncates by itself (its max_steps option), and a
    # TimeLimit wrapper would count the steps of an attached view a second time.
    register(id=PURSUIT_ENV_ID, entry_point="envs.multiagent.pursuit:PursuitHunterEnv")
if TAN_ENV_ID not in registry:
    register(id=TAN_ENV_ID, entry_point="envs.multiagent.tan_env:TanAgentEnv")

__all__ = [
    "CAPTURE_REWARD",
    "HUNTERS",
    "N_ACTIONS",
    "PURSUIT_ENV_ID",
    "TAN_ENV_ID",
    "PursuitHunterEnv",
    "PursuitWorld",
    "WorldStep",
    "joint_state_index",
    "sensation_index",
    "wrap_offset",
]
