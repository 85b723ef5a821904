// Tan (1993) mutual scouting: each hunter tells the other, after every observation, where it is
// and what it sees; each takes the prey from the partner's report when it does not see it.

{ include("include/tan_trials.asl") }

+!report <- .tell_sensation.
+!after_step <- true.
+!after_trial <- true.
