// Tan (1993) trials, included by every asl/coord_tan_*.asl condition: training trials (Boltzmann
// exploration at temperature(T), one-step Q-learning after every step) until training_trials(K)
// trials are done, then test trials (the same Boltzmann choice, no learning) up to the agent's
// episodes target. A condition's own file says what is told and shared, and when:
//   !report              after every observation, before taking it in (what the partner hears)
//   !after_step          after every training step's learning (per-step sharing)
//   !after_trial         after every training trial (per-trial sharing)
// A scout (role(scout)) moves at random, never learns, and reports as its condition says.

!hunt.

+!hunt : episodes_done(N) & episodes_target(T) & N >= T
    <- .rl_stop("episodes target reached").

+!hunt : episodes_done(N) & training_trials(K) & N >= K
    <- !trial(test);
       !!hunt.

+!hunt
    <- !trial(train);
       !!hunt.

+!trial(Phase)
    <- .world_reset;
       !report;
       .world_observe;
       while (not done) {
           !act(Phase);
       };
       .rl_end_episode;
       !finish(Phase).

+!act(_) : role(scout)
    <- .rl_choose(explore, A);
       .world_act(A);
       !report;
       .world_observe.

+!act(train) : temperature(T)
    <- .choose_boltzmann(T, A);
       .world_act(A);
       !report;
       .world_observe;
       .rl_learn;
       !after_step.

+!act(test) : temperature(T)
    <- .choose_boltzmann(T, A);
       .world_act(A);
       !report;
       .world_observe.

+!finish(train) : role(hunter)
    <- !after_trial.
+!finish(_)
    <- true.
