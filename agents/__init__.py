"""SPADE BDI agents whose AgentSpeak plans drive Q-learning."""
