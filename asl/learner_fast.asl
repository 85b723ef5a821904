// The fast learner: the same Q-learning as learner.asl, but each episode runs inside one
// action (.rl_run_episode) in Python, and the plans only decide between episodes. Use it when
// speed matters more than per-step control. Same actions and beliefs as learner.asl.

!learn.

+!learn : episodes_done(N) & episodes_target(T) & N >= T
    <- .rl_save_policy;
       .rl_stop("episodes target reached").

// One whole epsilon-greedy episode per intention; !!learn keeps the intention stack flat.
+!learn
    <- .rl_run_episode(epsilon);
       !!learn.
