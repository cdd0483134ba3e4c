//! surprisal-runner
