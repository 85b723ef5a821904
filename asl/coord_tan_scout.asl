// Tan (1993) case 1, sensation sharing: the scout tells the hunter, after every observation,
// where it is and what it sees (the prey's offset, or nothing); the hunter's state takes the
// prey from the report when it does not see the prey itself. The hunter tells nothing.

{ include("include/tan_trials.asl") }

+!report : role(scout) <- .tell_sensation.
+!report <- true.
+!after_step <- true.
+!after_trial <- true.
