// Tan (1993) case 2, episode sharing: after every training trial each hunter sends the whole
// trial (every sensation, action, reward) to the other, who learns from it as if it were its
// own, once it has arrived (the other's trial ends at the same step: one world).

{ include("include/tan_trials.asl") }

+!report <- true.
+!after_step
    <- .learn_shared_transitions.
+!after_trial
    <- .share_transitions;
       .learn_shared_transitions.
