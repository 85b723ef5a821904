"""Coordination between learning agents over XMPP, driven by their plans.

- `agent.CoordinatingAgent`: a LearningAgent with peers, coordination actions and a message
  ledger; `actions` (policy and experience sharing, progress evaluation) and `hunting` (acting
  in a shared world through the environment agent) are its plan actions;
- `wire`: message bodies (compact Q-tables and transitions); `merge`: Q-table merge rules;
  `learner.SharingQLearner`: a Q-learner that keeps what sharing needs;
- `ledger`: per-agent message accounting; `telemetry`: streaming it to the daemon.
"""
