//! switchboard-bench
