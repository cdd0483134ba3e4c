//! surprisal-metrics
