"""Multi-agent environments: worlds several agents act in together, and the environment agent
that hosts one over XMPP.

Importing this package registers ``MosaicPursuit-v0`` with Gymnasium (one hunter's view of the
two-hunter pursuit world, see ``envs.multiagent.pursuit``), so ``envs.make_env`` builds it like
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

if PURSUIT_ENV_ID not in registry:
    # No max_episode_steps: the world truncates by itself (its max_steps option), and a
    # TimeLimit wrapper would count the steps of an attached view a second time.
    register(id=PURSUIT_ENV_ID, entry_point="envs.multiagent.pursuit:PursuitHunterEnv")

__all__ = [
    "CAPTURE_REWARD",
    "HUNTERS",
    "N_ACTIONS",
    "PURSUIT_ENV_ID",
    "PursuitHunterEnv",
    "PursuitWorld",
    "WorldStep",
    "joint_state_index",
    "sensation_index",
    "wrap_offset",
]
