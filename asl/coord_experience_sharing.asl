// Experience sharing (Tan 1993's "episode sharing"): after each episode a learner sends the
// episode's transitions to its peers, and learns from every transition its peers sent (one
// Q-update each, as if it had lived them).
//
// Actions: .share_transitions (the last finished episode, to every peer),
// .learn_shared_transitions (replay what arrived). Beliefs: transitions_pending(N),
// shared_transitions_learned(N); share_every(F) if the experiment sets it (default: every episode).

!learn.

+!learn : episodes_done(N) & episodes_target(T) & N >= T
    <- .rl_stop("episodes target reached").

+!learn
    <- .rl_run_episode(epsilon);
       !share;
       .learn_shared_transitions;
       !checkpoint;
       !!learn.

+!share : episodes_done(N) & share_every(F) & N mod F \== 0
    <- true.
+!share
    <- .share_transitions.

+!checkpoint : episodes_done(N) & eval_every(K) & N mod K == 0 & eval_episodes(E)
    <- .evaluate_progress(E).
+!checkpoint
    <- true.
