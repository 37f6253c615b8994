//! switchboard-stack
