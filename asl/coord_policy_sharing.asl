// Policy sharing (Tan 1993): learners learn alone, and every share_every episodes each one
// sends its Q-table to its peers and merges the tables its peers sent since its last merge.
//
// Actions: .share_q_table (to every peer), .merge_q_tables(Rule) with Rule = average (the
// element-wise mean) or visits (weighted by how often each agent updated each entry; the own
// value stays where nobody did). Tables arrive whenever the peers send them; the plan below
// merges what has arrived at its own sharing points. Beliefs: share_every(F), merge_rule(R)
// (from the experiment), q_tables_pending(N), q_tables_received(N), merges_done(N), peer_count(N).

!learn.

+!learn : episodes_done(N) & episodes_target(T) & N >= T
    <- .rl_stop("episodes target reached").

+!learn
    <- .rl_run_episode(epsilon);
       !share;
       !checkpoint;
       !!learn.

// Time to share: send the own table, then take in what the peers sent.
+!share : episodes_done(N) & share_every(F) & N mod F == 0 & merge_rule(R)
    <- .share_q_table;
       .merge_q_tables(R).
+!share : episodes_done(N) & share_every(F) & N mod F == 0
    <- .share_q_table;
       .merge_q_tables(visits).
+!share
    <- true.

+!checkpoint : episodes_done(N) & eval_every(K) & N mod K == 0 & eval_episodes(E)
    <- .evaluate_progress(E).
+!checkpoint
    <- true.
