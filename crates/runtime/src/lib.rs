//! switchboard-runtime
