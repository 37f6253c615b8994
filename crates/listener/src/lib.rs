//! switchboard-listener
