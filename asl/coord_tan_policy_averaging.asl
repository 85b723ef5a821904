// Tan (1993) case 2, policy averaging: every share_every(F) training steps each hunter sends its
// Q-table to the other; each replaces its table by the average of its own and the one received
// as soon as it has arrived.

{ include("include/tan_trials.asl") }

+!report <- true.
+!after_step : total_steps(S) & share_every(F) & S mod F == 0
    <- .share_q_table;
       !merge.
+!after_step
    <- !merge.
+!merge : q_tables_pending(P) & P > 0
    <- .merge_q_tables(average).
+!merge
    <- true.
+!after_trial <- true.
