"""Find the stored steps of one agent's episode, for the replay view.

The store's read API pages through a run in seq order (optionally one agent's records), with
no lookup by episode. An agent's steps are stored in the order it took them, so its
episode index never decreases along the seq order; a binary search over ``since_seq`` with
one-row reads finds where the episode starts (about log2(run steps) small queries), and a
forward read collects it. A store method reading the natural-key index
(run, agent, episode, step) directly would make this one query.
"""

from __future__ import annotations

from telemetry.store import StepRow, TelemetryStore

MAX_EPISODE_STEPS = 100_000
_PAGE = 1000
_PAGE_BYTES = 4 * 1024 * 1024


def episode_steps(store: TelemetryStore, run_id: str, agent_id: str, episode: int) -> list[StepRow]:
    """The steps of ``agent_id``'s episode ``episode`` in ``run_id``, in step order ([] if none)."""

    def first_episode_after(seq: int) -> int | None:
        page = store.read_steps(run_id, seq, agent_id, 1)
        return page[0].episode_index if page else None

    def before(seq: int) -> bool:
        """Whether the agent's first step after ``seq`` belongs to an earlier episode."""
        found = first_episode_after(seq)
        return found is not None and found < episode

    low, high = 0, store.counts(run_id).steps
    if before(low):
        # Invariant: before(low) and not before(high); the episode's steps come after `low`.
        while high - low > 1:
            middle = (low + high) // 2
            if before(middle):
                low = middle
            else:
                high = middle
    steps: list[StepRow] = []
    after = low
    while len(steps) < MAX_EPISODE_STEPS:
        page = store.read_steps(run_id, after, agent_id, _PAGE, _PAGE_BYTES)
        for step in page:
            if step.episode_index > episode:
                return sorted(steps, key=lambda s: s.step_index)
            if step.episode_index == episode:
                steps.append(step)
        if not page:
            break
        after = page[-1].seq_id
    return sorted(steps, key=lambda s: s.step_index)
