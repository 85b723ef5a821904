// Independent hunters: the same pursuit world as coord_joint_hunters.asl, but each hunter
// learns from its own sensation only and never talks to its partner (the environment agent
// still needs both hunters' actions every step).

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
           .rl_choose(epsilon, A);
           .world_act(A);
           .world_observe;
           .rl_learn;
       };
       .rl_end_episode.
