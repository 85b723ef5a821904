// Random hunters (the baseline): every action uniformly at random, no learning, no talking.

!hunt.

+!hunt : episodes_done(N) & episodes_target(T) & N >= T
    <- .rl_stop("episodes target reached").

+!hunt
    <- !episode;
       !!hunt.

+!episode
    <- .world_reset;
       .world_observe;
       while (not done) {
           .rl_choose(explore, A);
           .world_act(A);
           .world_observe;
       };
       .rl_end_episode.
