// Independent learners (the baseline of the coordination experiments): each agent learns
// alone, exactly like learner_fast.asl, and never talks to its peers. Every eval_every
// episodes it evaluates its greedy policy (.evaluate_progress), which is how the experiment
// sees when it reached the threshold.
//
// Beliefs from the experiment: eval_every(K), eval_episodes(N); see coord_policy_sharing.asl
// for the actions that share.

!learn.

+!learn : episodes_done(N) & episodes_target(T) & N >= T
    <- .rl_stop("episodes target reached").

// One whole epsilon-greedy episode per intention; !!learn keeps the intention stack flat.
+!learn
    <- .rl_run_episode(epsilon);
       !checkpoint;
       !!learn.

+!checkpoint : episodes_done(N) & eval_every(K) & N mod K == 0 & eval_episodes(E)
    <- .evaluate_progress(E).
+!checkpoint
    <- true.
