// Tan (1993) case 2, one shared policy, distributed: after every training step each hunter sends
// its transition to the other and learns from the other's, so both tables receive the same
// updates (the order within a step aside), as if both hunters updated one table.

{ include("include/tan_trials.asl") }

+!report <- true.
+!after_step
    <- .share_last_transition;
       .learn_shared_transitions.
+!after_trial
    <- .learn_shared_transitions.
