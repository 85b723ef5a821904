// Tan (1993), no communication: hunters learn from what they themselves perceive (their view:
// own sensation, or with passive observation also the partner within visual depth). Nothing is
// told or shared; the environment agent still needs every mover's action each step.

{ include("include/tan_trials.asl") }

+!report <- true.
+!after_step <- true.
+!after_trial <- true.
