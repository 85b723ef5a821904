// The default learner: Q-learning on a Gymnasium environment, one step per reasoning cycle.
//
// These plans decide what the agent does; the agent only provides actions (.rl_*) and keeps
// beliefs current. Edit this file (or copy it and point the agent's `asl` setting at the copy)
// to change when the agent explores, exploits, stops, or what it does on reaching the goal.
// The file is checked when the agent starts: a syntax error, an unknown action or a goal no
// plan handles is reported with its file and line.
//
// Actions (Mode is explore | greedy | epsilon):
//   .rl_reset              start an episode               .rl_end_episode   close it
//   .rl_choose(Mode)       pick the next action           .rl_choose(Mode, A) ...and bind it to A
//   .rl_step               take the picked action         .rl_step(A)       take action A
//   .rl_learn              Q-update from the last step    .rl_run_episode(Mode)  a whole episode
//   .rl_evaluate(N)        N greedy test episodes         .rl_set_epsilon(E)
//   .rl_save_policy        save the Q-table (policy_out)  .rl_stop(Reason)  finish
// Beliefs (numbers): episode(I) step(K) state(S) action(A) last_reward(R) episode_return(G)
//   total_steps(N) episodes_done(N) episodes_target(T) epsilon(E) success_rate(X) max_steps(M)
//   greedy_success_rate(X) (after .rl_evaluate); flags: done, terminated, truncated,
//   goal_reached, fell_in_hole; outcome(goal | hole | failure | timeout).

// The initial goal.
!learn.

// Enough episodes: keep the policy (if the configuration names a file) and stop. Stopping
// evaluates the greedy policy; the agent's result reports its success rate.
+!learn : episodes_done(N) & episodes_target(T) & N >= T
    <- .rl_save_policy;
       .rl_stop("episodes target reached").

// Otherwise play one more episode, then pursue !learn again as a new intention (!!learn):
// writing `!learn` here instead would stack one frame per episode, forever.
+!learn
    <- !episode;
       !!learn.

// How to act in the next episode: follow the learner's epsilon-greedy rule (epsilon decays at
// every .rl_end_episode) until nearly every recent episode succeeds, then exploit the greedy
// policy. Deciding per episode keeps the per-step loop below short; a condition inside the
// loop would decide per step, at some cost in speed.
+!episode : success_rate(S) & S >= 0.98
    <- !play(greedy).
+!episode
    <- !play(epsilon).

// One episode, one step per loop turn: choose, act, learn, until the environment says done.
+!play(Mode)
    <- .rl_reset;
       while (not done) {
           .rl_choose(Mode);
           .rl_step;
           .rl_learn;
       };
       .rl_end_episode.

// Reactions to outcomes fire as soon as .rl_step adds the belief. Remember the first episode
// in which the goal was reached (a mental note other plans may use).
+goal_reached : not first_goal_episode(_) & episode(E)
    <- +first_goal_episode(E).
