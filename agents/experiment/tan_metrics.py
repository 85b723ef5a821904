"""Tan (1993)'s measures, from the trials the environment agent recorded.

Tan reports steps per trial (the steps from a trial's start to the capture), averaged over
blocks of 50 trials while training, and the mean steps per trial of the learned policy over
test trials. Here, per cell (one seed):

- ``blocks``: mean steps per trial of each block of `block` training trials;
- ``early`` / ``late``: mean steps of the first / last `window` training trials;
- ``test``: mean steps of the test trials (the learned policies, no learning, Boltzmann choice
  as in training: a greedy policy can walk into a wall for ever in the "unseen" state, where
  every action looks the same to it);
- ``censored``: how many trials hit the cut-off. A cut-off trial counts as the cut-off (as Tan's
  cut-off would): a mean that includes one is a lower bound of the true mean, and is reported
  with its censored count so the summary can say so.

Across seeds, ``crossover_trial`` says from which training trial on a cooperative condition's
block means stay below the independent condition's.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

BLOCK = 50


def blocks(steps: Sequence[int], block: int = BLOCK) -> list[float]:
    """Mean steps of each whole block of `block` trials (a last partial block is left out)."""
    whole = len(steps) // block
    return [float(np.mean(steps[i * block : (i + 1) * block])) for i in range(whole)]


def window_mean(steps: Sequence[int], window: int, *, last: bool) -> float:
    """Mean steps of the first (or `last`) `window` trials."""
    if not 0 < window <= len(steps):
        raise ValueError(f"a window of {window} trials needs at least that many trials, got {len(steps)}")
    part = steps[-window:] if last else steps[:window]
    return float(np.mean(part))


def crossover_trial(cooperative: Sequence[float], independent: Sequence[float], block: int = BLOCK) -> Optional[int]:
    """The first training trial (a block's start) from which every later block mean of the
    cooperative curve is below the independent one; None if the last block is not below."""
    n = min(len(cooperative), len(independent))
    below = [cooperative[i] < independent[i] for i in range(n)]
    if not below or not below[-1]:
        return None
    start = n - 1
    while start > 0 and below[start - 1]:
        start -= 1
    return start * block


def trial_metrics(trials: Sequence[Sequence], training: int, cutoff: int, window: int, block: int = BLOCK) -> dict:
    """One cell's measures from the world's trials ((steps, captured) in order: `training`
    training trials, then the test trials)."""
    if len(trials) < training:
        raise ValueError(f"the world recorded {len(trials)} trials, fewer than the {training} training trials")
    train = [int(s) for s, _ in trials[:training]]
    test = [int(s) for s, _ in trials[training:]]
    train_censored = sum(1 for _, captured in trials[:training] if not captured)
    test_censored = sum(1 for _, captured in trials[training:] if not captured)
    return {
        "cutoff": cutoff,
        "block": block,
        "blocks": blocks(train, block),
        "early": window_mean(train, window, last=False),
        "late": window_mean(train, window, last=True),
        "early_censored": sum(1 for s, c in trials[:window] if not c),
        "late_censored": sum(1 for s, c in trials[training - window : training] if not c),
        "test": float(np.mean(test)) if test else None,
        "training_censored": train_censored,
        "test_censored": test_censored,
        "test_trials": len(test),
        "training_steps": int(sum(train)),
    }
