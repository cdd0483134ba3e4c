//! surprisal-models
