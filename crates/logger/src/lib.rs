//! switchboard-logger
