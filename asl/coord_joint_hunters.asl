// Joint hunters: two hunters in one pursuit world (hosted by the environment agent), who
// capture the prey only when both stand next to it. Each step they tell each other what they
// see (the prey's offset: Tan 1993's "sensation sharing"), so each one's state includes where
// its partner is; the view (MosaicPursuit-v0 with partner_sensation) encodes both.
//
// Actions: .world_reset, .world_act(A), .tell_sensation, .world_observe (see
// agents/coordination/hunting.py), with the usual .rl_choose, .rl_learn, .rl_end_episode.
// .world_observe waits for the partner's sensation: a hunter that stops telling it leaves its
// partner failing with a clear message, not hanging.

!hunt.

+!hunt : episodes_done(N) & episodes_target(T) & N >= T
    <- .rl_stop("episodes target reached").

+!hunt
    <- !episode;
       !!hunt.

+!episode
    <- .world_reset;
       .tell_sensation;
       .world_observe;
       while (not done) {
           .rl_choose(epsilon, A);
           .world_act(A);
           .tell_sensation;
           .world_observe;
           .rl_learn;
       };
       .rl_end_episode.
