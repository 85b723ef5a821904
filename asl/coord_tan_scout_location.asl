// Control for Tan (1993) case 1: the scout tells the hunter only where it is, every step, as
// often as in coord_tan_scout.asl but without the prey: information irrelevant to the hunt. The
// hunter's state is built exactly as with a full report, so only the content differs.

{ include("include/tan_trials.asl") }

+!report : role(scout) <- .tell_location.
+!report <- true.
+!after_step <- true.
+!after_trial <- true.
